"""What an executor returns, and the answer events the controller records for it.

The executor contract (`executors.base.Executor`): an executor's `attempt` records its
`.started` write-ahead, before it launches anything (and any intermediate events of its
conversation, e.g. `get-sli.*`), through the context it is given; then it *returns* how the
task ended, as one of four typed outcomes, each with a reason:

- `Succeeded(result, message, data)`: the work was done; `result` is the task's verdict
  (an evaluation that scored `fail` succeeded in evaluating). `.finished` with status
  `succeeded`.
- `Failed(reason, message, log_tail, data)`: the work could not be done. `.finished` with
  status `errored`, result `fail`, the message followed by `Logs:` and the tail, and
  `data.reconciler.reason` = `reason` (e.g. `DeadlineExceeded`, `ImageForbidden`).
- `Retry(after, reason)`: nothing to record yet; run the task again after `after`
  (a receiver answering 429, the ledger refusing an append). The task stays open.
- `Stalled(reason)`: nothing to record now, and nothing to retry in this process: the
  answer comes from elsewhere (a manual approval waits for a person) or exists already.

`answer_events` turns an outcome into the `.finished` (pure: ids derive from the triggered
id and the executor's name, so answering twice records once; the time is an argument).
Messages arrive redacted: redaction is the shell's (`base.redact`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from reconciler.formats.events import KeptnEvent, common_fields, derived_id, format_time, task_type

MAX_MESSAGE_CHARS = 96 * 1024
"""Bound of a `.finished` message (several tasks' log tails); the ledger caps events at 512 KiB."""


@dataclass(frozen=True)
class PartHealth:
    """How a part the work depended on is doing (Prometheus, the Kubernetes API), as data:
    adapters return it, the controller puts it on the process's problems board."""

    part: str
    problem: str | None = None
    """What is wrong, or None: the part works (again)."""
    retrying: bool = True
    """Whether the reconciler tries again by itself."""


@dataclass(frozen=True)
class Succeeded:
    result: Literal["pass", "warning", "fail"] = "pass"
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Task payload merged into `.finished` data (e.g. `evaluation`, `test`, `action`)."""
    labels: bool = True
    """Copy the triggered event's labels (job-executor-service's success answers do not)."""
    health: tuple[PartHealth, ...] = ()


@dataclass(frozen=True)
class Failed:
    reason: str
    """Why, as one CamelCase word a machine can key on (`data.reconciler.reason`)."""
    message: str
    log_tail: str = ""
    """The failed work's output, appended after `Logs:` (a person needs it to act)."""
    data: Mapping[str, Any] = field(default_factory=dict)
    labels: bool = True
    health: tuple[PartHealth, ...] = ()


@dataclass(frozen=True)
class Retry:
    after: timedelta
    reason: str
    message: str = ""
    health: tuple[PartHealth, ...] = ()


@dataclass(frozen=True)
class Stalled:
    reason: str
    message: str = ""
    health: tuple[PartHealth, ...] = ()
    """E.g. a webhook whose receiver answers `.finished` itself reports that its request went through."""


Outcome = Succeeded | Failed | Retry | Stalled
STALLED_WAITING = "WaitingForApproval"
STALLED_ANSWERED = "AlreadyAnswered"
FAILED_CRASHED = "ExecutorCrashed"


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


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """The end of a long message (the newest output matters most)."""
    if len(message) <= limit:
        return message
    return "[... earlier output not shown ...]\n" + message[-limit:]


def answer_events(
    triggered: KeptnEvent, source: str, outcome: Outcome, *, now: datetime, with_started: bool = False
) -> tuple[KeptnEvent, ...]:
    """The events that record `outcome`: its `.finished` (none for Retry or Stalled), after a
    `.started` when `with_started` (an executor that crashed before recording its own)."""
    if isinstance(outcome, Retry | Stalled):
        return ()
    data = dict(outcome.data)
    if isinstance(outcome, Succeeded):
        result, status, message = outcome.result, "succeeded", outcome.message
    else:
        result, status = "fail", "errored"
        message = outcome.message + (f"\n\nLogs:\n{outcome.log_tail}" if outcome.log_tail else "")
        meta = data.get("reconciler")
        data["reconciler"] = {**(meta if isinstance(meta, dict) else {}), "reason": outcome.reason}
    finished = finished_event(
        triggered,
        source,
        result=result,
        status=status,
        message=bounded(message),
        data=data,
        with_labels=outcome.labels,
        now=now,
    )
    if not with_started:
        return (finished,)
    return (started_event(triggered, source, now=now), finished)


def iso_seconds(ts: datetime) -> str:
    """RFC 3339 with seconds precision, as job-executor-service writes test.start/end."""
    return format_time(ts)[:19] + "Z"
