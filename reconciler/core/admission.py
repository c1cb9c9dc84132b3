"""Which events the outside world may record, and how they are stamped on the way in.

Pure: the caller supplies the accepted upstream configuration (`UpstreamView`), the
project, and the open tasks of the ledger-replayed engine state. Every ingress (CLI,
HTTP API, inbox, Alertmanager) runs the same `admit`, so an event that one of them
refuses no other one records. A refusal is a `Rejected` with one line a person can
act on; nothing is recorded for it.

What is accepted (spec 1.6, extended): a sequence trigger
`sh.keptn.event.<stage>.<sequence>.triggered` for a stage and sequence of the
accepted shipyard and a service of that stage; an executor's answer to an open
task (`<task>.started`, `<task>.finished`, `<task>.status.changed`); and
`sh.keptn.event.evaluation.invalidated`. Task `.triggered`, sequence
`.started`/`.finished` and the reconciler's own `reconciler.*` records are written
by the engine only.

May import: stdlib, `reconciler.formats`, `reconciler.core`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlparse

from reconciler.formats.events import (
    KEPTN_PREFIX,
    EventType,
    IncomingEvent,
    KeptnEvent,
    context_from_string,
    format_time,
)
from reconciler.formats.shipyard import Shipyard

API_SOURCE = "https://github.com/keptn/keptn/api"
"""Keptn API's source for events whose own source is not a URL (spec 1.1)."""

RESULTS = ("pass", "warning", "fail")
STATUSES = ("succeeded", "errored", "aborted", "unknown")


class Rejected(ValueError):
    """An event we will not record; `str()` is the one-line reason."""


class UpstreamView(Protocol):
    """What admission needs to know about the accepted upstream configuration."""

    def shipyard(self, commit: str | None = None) -> Shipyard | None: ...

    def services(self, stage: str) -> frozenset[str] | None:
        """Services (directories with files) on the stage's branch; None when that cannot be said."""
        ...


@dataclass(frozen=True)
class Admitted:
    """An accepted event and what it is, for logs and responses."""

    event: KeptnEvent
    kind: str  # "sequence" | "answer" | "invalidation"


def _names(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def _require(data: Mapping[str, Any], *fields: str) -> None:
    for name in fields:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise Rejected(f"data.{name} is missing or empty; expected the {name} name as a non-empty string")


def _check_labels(data: Mapping[str, Any]) -> None:
    labels = data.get("labels")
    if labels is None:
        return
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise Rejected("data.labels must be an object mapping strings to strings")


def _check_project(data: Mapping[str, Any], project: str) -> None:
    if project and data.get("project") != project:
        raise Rejected(f"unknown project {data.get('project')!r}: this reconciler serves project {project!r}")


def admit(
    event: KeptnEvent,
    *,
    view: UpstreamView,
    project: str,
    open_task: Callable[[str], KeptnEvent | None] = lambda _id: None,
) -> Admitted:
    """Accept `event` or raise `Rejected` saying why. `open_task(id)` finds an open task's `.triggered`."""
    if not event.type.startswith(KEPTN_PREFIX):
        if event.type.startswith("reconciler."):
            raise Rejected(
                f"type {event.type!r} is written by the reconciler itself, not accepted from outside"
            )
        raise Rejected(f"type {event.type!r} is not a Keptn event type (expected sh.keptn.event.…)")
    etype = EventType.parse(event.type)
    if etype is None:  # KeptnEvent validation already refuses these; kept for direct callers
        raise Rejected(f"type {event.type!r} is not a valid Keptn event type")
    data = event.data
    _check_labels(data)
    if etype.is_sequence and etype.sequence == "status" and etype.kind == "changed":
        return _admit_answer(event, etype.stage or "", "status.changed", data, project, open_task)
    if etype.is_sequence:
        if etype.kind != "triggered":
            raise Rejected(
                f"{event.type} is written by the engine; from outside a sequence can only be "
                "triggered (sh.keptn.event.<stage>.<sequence>.triggered)"
            )
        return _admit_trigger(event, etype, data, view, project)
    task = etype.task or ""
    if etype.kind == "triggered":
        raise Rejected(
            f"{event.type} is dispatched by the engine only; to run task {task!r}, trigger a sequence "
            f"that contains it (sh.keptn.event.<stage>.<sequence>.triggered)"
        )
    if etype.kind in ("started", "finished"):
        return _admit_answer(event, task, etype.kind, data, project, open_task)
    if etype.kind == "invalidated" and task == "evaluation":
        _require(data, "project", "stage", "service")
        _check_project(data, project)
        if not event.triggeredid:
            raise Rejected("triggeredid is missing; expected the id of the evaluation to invalidate")
        return Admitted(event, "invalidation")
    raise Rejected(
        f"{event.type}: {etype.kind!r} is not an event kind accepted here; expected "
        "sh.keptn.event.<stage>.<sequence>.triggered, sh.keptn.event.<task>.started|finished|status.changed "
        "or sh.keptn.event.evaluation.invalidated"
    )


def _admit_trigger(
    event: KeptnEvent, etype: EventType, data: Mapping[str, Any], view: UpstreamView, project: str
) -> Admitted:
    stage_in_type, sequence = etype.stage or "", etype.sequence or ""
    _require(data, "project", "stage", "service")
    if data["stage"] != stage_in_type:
        raise Rejected(
            f"data.stage {data['stage']!r} does not match the stage {stage_in_type!r} in type {event.type}"
        )
    _check_project(data, project)
    shipyard = view.shipyard(None)
    if shipyard is None:
        raise Rejected("no accepted shipyard.yaml yet: the upstream's main branch has no valid shipyard")
    stage = shipyard.stage(stage_in_type)
    if stage is None:
        raise Rejected(
            f"no stage {stage_in_type!r} in shipyard.yaml (stages: {_names(shipyard.stage_names)})"
        )
    seq = stage.sequence(sequence)
    if seq is None:
        known = [s.name for s in stage.sequences]
        if "evaluation" not in known:
            known.append("evaluation")
        raise Rejected(
            f"no sequence {sequence!r} in stage {stage_in_type!r} of shipyard.yaml (sequences: {_names(known)})"
        )
    if not seq.tasks:
        raise Rejected(f"sequence {sequence!r} in stage {stage_in_type!r} has no tasks")
    services = view.services(stage_in_type)
    service = str(data["service"])
    if services is not None and service not in services:
        raise Rejected(
            f"no service {service!r} on branch {stage_in_type!r} (services: {_names(sorted(services))})"
        )
    return Admitted(event, "sequence")


def _admit_answer(
    event: KeptnEvent,
    task: str,
    kind: str,
    data: Mapping[str, Any],
    project: str,
    open_task: Callable[[str], KeptnEvent | None],
) -> Admitted:
    if not event.triggeredid:
        raise Rejected(
            f"{event.type}: triggeredid is missing; expected the id of the {task}.triggered it answers"
        )
    _require(data, "project", "stage", "service")
    _check_project(data, project)
    if kind == "finished":
        if data.get("result") not in RESULTS:
            raise Rejected(f"data.result {data.get('result')!r} is not one of {', '.join(RESULTS)}")
        if data.get("status") not in STATUSES:
            raise Rejected(f"data.status {data.get('status')!r} is not one of {', '.join(STATUSES)}")
    triggered = open_task(event.triggeredid)
    if triggered is None:
        raise Rejected(
            f"{event.type}: no open task has triggeredid {event.triggeredid!r} "
            "(it finished already, timed out, or never existed)"
        )
    etype = triggered.etype
    if etype is None or etype.task != task:
        raise Rejected(
            f"{event.type}: triggeredid {event.triggeredid!r} is a {triggered.type}, not a {task} task"
        )
    if event.shkeptncontext != triggered.shkeptncontext:
        raise Rejected(
            f"shkeptncontext {event.shkeptncontext!r} is not the context {triggered.shkeptncontext!r} "
            f"of task {event.triggeredid}"
        )
    return Admitted(event, "answer")


def stamp(
    event: KeptnEvent,
    *,
    now: datetime,
    new_id: str,
    new_context: str,
    open_task: Callable[[str], KeptnEvent | None] = lambda _id: None,
) -> KeptnEvent:
    """Keptn API's rewriting of an incoming event (spec 1.1), made deterministic by the caller's ids.

    id := `new_id`; time := now;
    source kept when Go would parse it as a URL reference, else Keptn's API source;
    shkeptncontext kept when it is a UUID, derived from the string otherwise, `new_context`
    when empty. Difference: an answer to an open task without a context gets that task's.
    """
    context = event.shkeptncontext
    if not context and event.triggeredid:
        triggered = open_task(event.triggeredid)
        if triggered is not None:
            context = triggered.shkeptncontext
    context = context_from_string(context) if context else new_context
    update = {
        "datacontenttype": "application/json",
        "source": event.source if _is_url(event.source) else API_SOURCE,
        "shkeptncontext": context,
    }
    if isinstance(event, IncomingEvent):  # from JSON: becomes a whole event only now
        return event.stamped(id_=new_id, time=format_time(now), **update)
    return event.model_copy(update={"id": new_id, "time": format_time(now), **update})


def _is_url(value: str) -> bool:
    """Whether Go's url.Parse would take it: it accepts relative references, so plain names
    such as `job-executor-service` stay; only blanks, whitespace and control characters fail."""
    if not value or any(ch.isspace() or not ch.isprintable() for ch in value):
        return False
    try:
        urlparse(value)
    except ValueError:
        return False
    return True
