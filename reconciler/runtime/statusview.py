"""What `reconciler status`, `get sequences` and the HTTP API show: sequences as status records.

Pure functions from the engine state (rebuilt from the ledger) to plain records a
person or a machine can read, Flux-style: every sequence and task has a state, a
result and a reason, and durations. The CLI renders them as a table or JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from reconciler.core.engine_state import Digest, EngineState, Execution, TaskRun
from reconciler.formats.events import KeptnEvent
from reconciler.formats.gotime import parse_timestamp


class TaskStatus(BaseModel):
    name: str
    state: str  # triggered | started | finished
    result: str = ""
    status: str = ""
    executors: list[str] = []
    triggered_at: str = ""
    finished_at: str = ""
    duration_seconds: float | None = None
    message: str = ""


class SequenceStatus(BaseModel):
    context: str
    project: str
    stage: str
    service: str
    sequence: str
    state: str  # waiting | started | waitingForApproval | paused | finished | timedOut | aborted
    result: str = ""
    status: str = ""
    message: str = ""
    reason: str = ""
    commit: str = ""
    triggered_at: str = ""
    finished_at: str = ""
    duration_seconds: float | None = None
    tasks: list[TaskStatus] = []


class PendingApproval(BaseModel):
    context: str
    project: str
    stage: str
    service: str
    sequence: str
    triggered_id: str
    previous_result: str
    waiting_since: str


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def task_status(run: TaskRun, now: datetime) -> TaskStatus:
    if run.completed:
        state = "finished"
    elif run.started:
        state = "started"
    else:
        state = "triggered"
    last = run.finished[-1] if run.finished else None
    end = run.completed_at if run.completed else now
    return TaskStatus(
        name=run.name,
        state=state,
        result=run.result,
        status=run.status,
        executors=run.executors,
        triggered_at=run.triggered.time,
        finished_at=last.time if (last and run.completed) else "",
        duration_seconds=_seconds(run.triggered_at, end),
        message=str(last.data.get("message") or "")[:500] if last else "",
    )


def sequence_status(ex: Execution, now: datetime) -> SequenceStatus:
    if ex.digest is not None:
        return _from_digest(ex.digest, now)
    fin = ex.finished_event
    meta = fin.data.get("reconciler") if fin else None
    end = parse_timestamp(fin.time) if fin else now
    return SequenceStatus(
        context=ex.context,
        project=ex.project,
        stage=ex.stage,
        service=ex.service,
        sequence=ex.sequence,
        state=ex.display_state,
        result=ex.result,
        status=ex.status,
        message=str(fin.data.get("message") or "")[:500] if fin else "",
        reason=str(meta.get("reason") or "") if isinstance(meta, dict) else "",
        commit=ex.commit,
        triggered_at=ex.trigger.time,
        finished_at=fin.time if fin else "",
        duration_seconds=_seconds(ex.received_at, end),
        tasks=[task_status(t, now) for t in ex.tasks],
    )


def _from_digest(digest: Digest, now: datetime) -> SequenceStatus:
    record = SequenceStatus.model_validate_json(digest.record)
    for index, since in digest.open_since:  # as `task_status` has it: an open task's time runs on
        record.tasks[index].duration_seconds = _seconds(since, now)
    return record


def image_of(ex: Execution) -> str:
    """`configurationChange.values.image` of the sequence's trigger (Keptn's delivery payload)."""
    if ex.digest is not None:
        return ex.digest.image
    change = ex.trigger.data.get("configurationChange")
    values = change.get("values") if isinstance(change, dict) else None
    image = values.get("image") if isinstance(values, dict) else None
    return image if isinstance(image, str) else ""


def deployed_at(ex: Execution) -> str | None:
    """When the sequence put its image in place: its first deployment task (a name with
    "deploy", as `deployment` and `je-deployment`) finishing pass or warning; without
    such a task, the sequence finishing pass or warning. None: not (yet) deployed."""
    if ex.digest is not None:
        return ex.digest.deployed_at
    deploys = [t for t in ex.tasks if "deploy" in t.name]
    if deploys:
        for run in deploys:
            if run.completed and run.result in ("pass", "warning") and run.finished:
                return run.finished[-1].time
        return None
    fin = ex.finished_event
    if fin is not None and fin.result in ("pass", "warning"):
        return fin.time
    return None


def _husk(event: KeptnEvent, keep: tuple[str, ...] = ()) -> KeptnEvent:
    """The envelope of `event` and the `data` fields named in `keep`, nothing else."""
    copy = event.model_copy(update={"data": {k: event.data[k] for k in keep if k in event.data}})
    object.__setattr__(copy, "__pydantic_extra__", {})
    return copy


def retire(ex: Execution) -> bool:
    """Let a finished execution go of its events, keeping what the status views read of it
    (`Digest`): every view answers of it exactly what it answered before. False when it is
    active (it still changes) or retired already.

    The ingress's `LedgerState` does this as each execution finishes: a finished delivery
    held a dozen events (~2 KB each, slimmed), and the state keeps a thousand of them.
    """
    if ex.active or ex.digest is not None:
        return False
    epoch = ex.received_at
    record = sequence_status(ex, epoch)
    ex.digest = Digest(
        record=record.model_dump_json().encode(),
        open_since=tuple((t.index, t.triggered_at) for t in ex.tasks if not t.completed),
        image=image_of(ex),
        deployed_at=deployed_at(ex),
    )
    ex.tasks = []
    ex.trigger = _husk(ex.trigger)
    if ex.started_event is not None:
        ex.started_event = _husk(ex.started_event)
    if ex.finished_event is not None:  # what `Execution.result` and `.status` read
        ex.finished_event = _husk(ex.finished_event, ("result", "status"))
    return True


def outcome_of(state: str, result: str) -> str:
    """One word for where a sequence (or task) stands: its result once finished (pass,
    warning, fail), else its state (waiting, started, waitingForApproval, paused), or
    timedOut / aborted. Takes a record's `state` and `result`."""
    if state == "finished":
        return result or "finished"
    return state


def outcome(ex: Execution) -> str:
    return outcome_of(ex.display_state, ex.result)


def matching(
    state: EngineState,
    *,
    project: str | None = None,
    stage: str | None = None,
    service: str | None = None,
    context: str | None = None,
    sequence: str | None = None,
    outcomes: frozenset[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Execution]:
    """The executions `sequences` shows, oldest first: one filter for the CLI, the API and the UI.

    `since`/`until` bound when a sequence was triggered; `outcomes` holds `outcome` words.
    """
    out = []
    for tid in state.order:
        ex = state.executions[tid]
        if project and ex.project != project:
            continue
        if stage and ex.stage != stage:
            continue
        if service and ex.service != service:
            continue
        if context and ex.context != context:
            continue
        if sequence and ex.sequence != sequence:
            continue
        if outcomes is not None and outcome(ex) not in outcomes:
            continue
        if since is not None and ex.received_at < since:
            continue
        if until is not None and ex.received_at > until:
            continue
        out.append(ex)
    return out


def sequences(
    state: EngineState,
    now: datetime,
    *,
    project: str | None = None,
    stage: str | None = None,
    service: str | None = None,
    context: str | None = None,
    limit: int | None = None,
) -> list[SequenceStatus]:
    found = matching(state, project=project, stage=stage, service=service, context=context)
    if limit is not None:
        found = found[-limit:]
    return [sequence_status(ex, now) for ex in found]


def pending_approvals(state: EngineState) -> list[PendingApproval]:
    out = []
    for ex, run in state.open_tasks():
        if run.name != "approval" or run.finished:
            continue  # answered (by a person or a file), completing on the next cycle
        out.append(
            PendingApproval(
                context=ex.context,
                project=ex.project,
                stage=ex.stage,
                service=ex.service,
                sequence=ex.sequence,
                triggered_id=run.triggered.id,
                previous_result=str(run.triggered.data.get("result") or ""),
                waiting_since=run.triggered.time,
            )
        )
    return out


def queue_lengths(state: EngineState) -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for ex in state.active():
        if ex.started_event is None:
            out[ex.key] = out.get(ex.key, 0) + 1
    return out


_MARK = {"pass": "✓", "warning": "!", "fail": "✗"}


def render_table(rows: list[SequenceStatus], *, tasks: bool = True) -> str:
    """A compact human view: one line per sequence, indented lines per task."""
    if not rows:
        return "no sequences"
    lines = []
    header = (
        f"{'CONTEXT':10} {'STAGE':12} {'SERVICE':16} {'SEQUENCE':14} {'STATE':18} {'RESULT':8} {'AGE':>8}"
    )
    lines.append(header)
    for row in rows:
        res = f"{_MARK.get(row.result, '')} {row.result}".strip()
        lines.append(
            f"{row.context[:8]:10} {row.stage:12} {row.service:16} {row.sequence:14} {row.state:18} {res:8} "
            f"{_fmt_duration(row.duration_seconds):>8}"
        )
        if tasks:
            for t in row.tasks:
                tres = f"{_MARK.get(t.result, '')} {t.result}".strip() if t.state == "finished" else "…"
                who = ",".join(t.executors) or "-"
                lines.append(
                    f"{'':10}   └ {t.name:20} {t.state:10} {tres:10} {_fmt_duration(t.duration_seconds):>8}  {who}"
                )
        if row.state in ("timedOut", "aborted") or (row.result == "fail" and row.message):
            lines.append(f"{'':10}     {row.reason or row.state}: {row.message[:160]}")
    return "\n".join(lines)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def as_json(rows: list[SequenceStatus]) -> list[dict[str, Any]]:
    return [r.model_dump() for r in rows]
