"""What an executor's answers look like: `.started` and `.finished` for a task's `.triggered`.

Pure constructors: response ids derive from the triggered id and the executor's name,
so answering twice (after a crash, or from two replicas) records once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reconciler.formats.events import KeptnEvent, common_fields, derived_id, format_time, task_type


def task_of(event: KeptnEvent) -> str:
    etype = event.etype
    if etype is None or etype.task is None:
        raise ValueError(f"{event.type} is not a task event")
    return etype.task


def answer(
    triggered: KeptnEvent,
    source: str,
    kind: str,
    payload: dict[str, Any],
    *,
    now: datetime,
    id_: str | None = None,
) -> KeptnEvent:
    """`<task>.<kind>` answering `triggered` (same context, commit and task), id derived from
    the triggered id, the source and the kind unless given."""
    return KeptnEvent(
        id=id_ or derived_id(triggered.id, source, kind),
        source=source,
        type=task_type(task_of(triggered), kind),
        time=format_time(now),
        shkeptncontext=triggered.shkeptncontext,
        triggeredid=triggered.id,
        gitcommitid=triggered.gitcommitid,
        data=payload,
    )


def started_event(
    triggered: KeptnEvent, source: str, data: dict[str, Any] | None = None, *, now: datetime
) -> KeptnEvent:
    """`.started` carrying the triggered event's common fields (go-utils SDK convention, spec 1.4)."""
    payload = common_fields(triggered.data)
    payload["status"] = "succeeded"
    payload.pop("result", None)
    payload.pop("message", None)
    if data:
        payload.update(data)
    return answer(triggered, source, "started", payload, now=now)


def finished_event(
    triggered: KeptnEvent,
    source: str,
    *,
    result: str,
    status: str = "succeeded",
    message: str = "",
    data: dict[str, Any] | None = None,
    with_labels: bool = True,
    now: datetime,
) -> KeptnEvent:
    """`.finished` for a triggered event; `data` adds task payload (e.g. `evaluation`, `test`)."""
    payload: dict[str, Any] = {
        "project": triggered.project,
        "stage": triggered.stage,
        "service": triggered.service,
    }
    if with_labels and triggered.data.get("labels"):
        payload["labels"] = triggered.data["labels"]
    if data:
        payload.update(data)
    payload["status"] = status
    payload["result"] = result
    payload["message"] = message
    return answer(triggered, source, "finished", payload, now=now)


def iso_seconds(ts: datetime) -> str:
    """RFC 3339 with seconds precision, as job-executor-service writes test.start/end."""
    return format_time(ts)[:19] + "Z"
