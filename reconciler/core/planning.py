"""Planning: from the engine state, the events that should exist now and do not yet.

`plan(state, config, now, policy)` is level-triggered reconciliation: it admits a
queued sequence, dispatches the next task, fires a deadline, finishes a sequence and
chains the next ones, and says when to look again. Every emitted id is derived from
the event that caused it, so a decision re-made after a crash dedups in the ledger
instead of running twice. Pure: no I/O, no clock (`now` is an argument).

Behaviour follows keptn-semantics.md section 2; deliberate differences are listed in
docs/keptn-differences.md and marked "Difference:" below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from reconciler.core.engine_state import (
    CONTROLLER,
    REASON_ABORTED,
    REASON_LOOP_LIMIT,
    REASON_RUN_DEADLINE,
    REASON_START_DEADLINE,
    REASON_START_FAILED,
    TIMEOUT_REASONS,
    EngineState,
    Execution,
    TaskRun,
    is_paused,
    reason_of,
)
from reconciler.core.merge import merge
from reconciler.core.triggers import matching_triggers
from reconciler.formats.events import (
    KeptnEvent,
    common_fields,
    derived_id,
    format_time,
    sequence_type,
    task_type,
)
from reconciler.formats.gotime import DurationError, parse_go_duration
from reconciler.formats.shipyard import Sequence, Shipyard, Task


class ConfigView(Protocol):
    """What the engine needs to know about the upstream: `core.configsnapshot.ConfigSnapshot`,
    in memory (plan reads no git)."""

    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        """The accepted shipyard (at a `main` commit when given)."""
        ...

    def main_commit(self) -> str | None: ...

    def stage_head(self, stage: str) -> str | None:
        """Accepted head commit of a stage branch (what a new sequence pins)."""
        ...

    @property
    def project(self) -> str:
        """The project this upstream serves (empty: not known, any is started)."""
        ...


@dataclass(frozen=True)
class Policy:
    """Engine settings that are not in the shipyard."""

    start_deadline: timedelta = timedelta(minutes=10)
    run_deadline: timedelta = timedelta(hours=2)
    max_iterations: int = 10


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    events: list[KeptnEvent] = field(default_factory=list)
    wake_at: datetime | None = None

    def wake(self, at: datetime) -> None:
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at


def _controller_event(
    type_: str, ctx: str, data: dict[str, Any], now: datetime, *, id_: str, **ext: Any
) -> KeptnEvent:
    return KeptnEvent(
        id=id_,
        source=CONTROLLER,
        type=type_,
        time=format_time(now),
        shkeptncontext=ctx,
        data=data,
        **{k: v for k, v in ext.items() if v is not None},
    )


def _with_reason(data: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**data, "reconciler": {"reason": reason}}


def sequence_definition(config: ConfigView, ex: Execution) -> Sequence | None:
    shipyard = config.shipyard(ex.shipyard_commit or None)
    if shipyard is None and ex.shipyard_commit:
        shipyard = config.shipyard(None)
    if shipyard is None:
        return None
    stage = shipyard.stage(ex.stage)
    return stage.sequence(ex.sequence) if stage else None


def start_problem(config: ConfigView, ex: Execution, policy: Policy) -> str | None:
    """Why a sequence trigger cannot start (spec 2.2 steps 1-3), or None."""
    if not ex.project or not ex.stage or not ex.service:
        missing = [
            n for n, v in (("project", ex.project), ("stage", ex.stage), ("service", ex.service)) if not v
        ]
        return f"Unable to start sequence {ex.sequence}: data.{missing[0]} is missing"
    project = config.project
    if project and ex.project != project:
        return f"Unable to start sequence {ex.sequence}: unknown project {ex.project} (this upstream is {project})"
    shipyard = config.shipyard(None)
    if shipyard is None:
        return "Unable to retrieve Shipyard file: no valid shipyard.yaml accepted from the upstream"
    stage = shipyard.stage(ex.stage)
    if stage is None:
        return f"Unable to start sequence {ex.sequence}: no stage with name {ex.stage}"
    seq = stage.sequence(ex.sequence)
    if seq is None:
        return f"Unable to start sequence {ex.sequence}: no task sequence with name {ex.sequence} found in stage {ex.stage}"
    if not seq.tasks:
        return (
            f"Unable to start sequence {ex.sequence}: task sequence {ex.sequence} does not contain any tasks"
        )
    return None


def build_payload(ex: Execution, task: Task | None) -> dict[str, Any]:
    """The `.triggered` payload for `task` (or the chained trigger's when None), spec 2.4."""
    payload: Any = {k: v for k, v in ex.trigger.data.items()}
    payload = merge({}, payload)
    payload["project"], payload["stage"], payload["service"] = ex.project, ex.stage, ex.service
    done = ex.done
    for run in done:
        data = run.data
        payload = merge(payload, data)
        for key in _replaced_keys(data):  # a block the executor owns whole (e.g. get-action's `action`)
            payload[key] = merge(None, data[key])
    if done:
        payload["result"] = done[-1].result
        payload["status"] = done[-1].status
    if task is not None and task.properties:
        payload[task.name] = merge(payload.get(task.name), task.properties)
    if payload.get("message") is not None:
        payload["message"] = ""
    payload.pop("reconciler", None)
    return dict(payload)


def _replaced_keys(data: dict[str, Any]) -> list[str]:
    """Keys an executor asks to replace rather than merge (`data.reconciler.replace`).

    Keptn's merge keeps keys of an older object that a newer one lacks, so round 2
    of a remediation would run its new action with round 1's stale `value`.
    """
    meta = data.get("reconciler")
    keys = meta.get("replace") if isinstance(meta, dict) else None
    if not isinstance(keys, list):
        return []
    return [k for k in keys if isinstance(k, str) and k in data and k != "reconciler"]


def _deadline(value: str | None, default: timedelta) -> timedelta:
    if value:
        try:
            return parse_go_duration(value)
        except DurationError:
            return default
    return default


def _delay(task: Task) -> timedelta:
    if not task.triggered_after:
        return timedelta(0)
    try:
        return max(parse_go_duration(task.triggered_after), timedelta(0))
    except DurationError:
        return timedelta(0)  # Keptn: an unparsable delay is logged and the task is sent at once


@dataclass(frozen=True)
class Queued:
    """A task handed to an executor that has not begun it: waiting for one of its workers."""

    executor: str
    ahead: int
    """Tasks handed to the same executor before it and not done yet (running or queued)."""
    workers: int


def plan(
    state: EngineState,
    config: ConfigView,
    now: datetime,
    policy: Policy | None = None,
    queued: Mapping[str, Queued] | None = None,
) -> Plan:
    """Events that should exist now and do not, and when to look again.

    `queued` (by triggered id) says which open tasks wait for an executor's worker, so a
    start deadline that fires on one says so instead of "no executor answered"."""
    policy = policy or Policy()
    queued = queued or {}
    out = Plan()
    _plan_aborts(state, out, now)
    if out.events:
        return out
    running: dict[tuple[str, str, str], str] = {}
    for ex in state.active():
        if ex.started_event is not None:
            running.setdefault(ex.key, ex.context)
    waiting_seen: set[tuple[str, str, str]] = set()
    for ex in list(state.active()):
        if ex.started_event is None:
            _plan_admission(state, config, ex, now, policy, running, waiting_seen, out)
        else:
            _plan_progress(state, config, ex, now, policy, out, queued)
    return out


def _plan_aborts(state: EngineState, out: Plan, now: datetime) -> None:
    """Every active execution an abort was recorded for ends as aborted (and nothing else
    happens in this round)."""
    for ex in state.active():
        if ex.abort is None:
            continue
        data = common_fields(ex.trigger.data)
        data.update(status="aborted", result="fail", message=ex.abort.message)
        out.events.append(
            _controller_event(
                sequence_type(ex.stage, ex.sequence, "finished"),
                ex.context,
                _with_reason(data, REASON_ABORTED),
                now,
                id_=derived_id(ex.trigger.id, "finished"),
                triggeredid=ex.trigger.id,
            )
        )


def _plan_admission(
    state: EngineState,
    config: ConfigView,
    ex: Execution,
    now: datetime,
    policy: Policy,
    running: dict[tuple[str, str, str], str],
    waiting_seen: set[tuple[str, str, str]],
    out: Plan,
) -> None:
    problem = start_problem(config, ex, policy)
    if problem is None:
        problem = _iteration_problem(state, ex, policy)
        reason = REASON_LOOP_LIMIT if problem else ""
    else:
        reason = REASON_START_FAILED
    if problem is not None:
        data = common_fields(ex.trigger.data)
        data.update(status="errored", result="fail", message=problem)
        out.events.append(
            _controller_event(
                sequence_type(ex.stage or "unknown", ex.sequence, "finished"),
                ex.context,
                _with_reason(data, reason),
                now,
                id_=derived_id(ex.trigger.id, "finished"),
                triggeredid=ex.trigger.id,
            )
        )
        return
    # Difference: FIFO per (project, stage, service); any unfinished execution of another
    # context blocks, including one waiting for approval (Keptn let new runs overtake those).
    if ex.key in waiting_seen or is_paused(state, ex):
        waiting_seen.add(ex.key)
        return
    owner = running.get(ex.key)
    if owner is not None and owner != ex.context:
        waiting_seen.add(ex.key)
        return
    waiting_seen.add(ex.key)
    running[ex.key] = ex.context
    shipyard_commit = config.main_commit() or ""
    commit = ex.trigger.gitcommitid or config.stage_head(ex.stage) or ""
    data = common_fields(ex.trigger.data)
    data.pop("result", None)
    data.pop("message", None)
    data["status"] = "succeeded"
    out.events.append(
        _controller_event(
            sequence_type(ex.stage, ex.sequence, "started"),
            ex.context,
            data,
            now,
            id_=derived_id(ex.trigger.id, "started"),
            triggeredid=ex.trigger.id,
            gitcommitid=commit or None,
            shipyardcommit=shipyard_commit or None,
        )
    )


def _iteration_problem(state: EngineState, ex: Execution, policy: Policy) -> str | None:
    """Cap self-triggering loops (e.g. remediation re-triggering on a failed evaluation)."""
    earlier = [
        e
        for e in state.by_context(ex.context)
        if e.stage == ex.stage and e.sequence == ex.sequence and e.started_event is not None and e is not ex
    ]
    runs = len(earlier) + state.forgotten_runs.get((ex.context, ex.stage, ex.sequence), 0)
    if runs >= policy.max_iterations:
        return (
            f"Not started: sequence {ex.stage}.{ex.sequence} already ran {runs} times in context "
            f"{ex.context} (limit {policy.max_iterations}, setting remediation_max_iterations)"
        )
    return None


def _plan_progress(
    state: EngineState,
    config: ConfigView,
    ex: Execution,
    now: datetime,
    policy: Policy,
    out: Plan,
    queued: Mapping[str, Queued],
) -> None:
    cur = ex.current
    seq = sequence_definition(config, ex)
    if cur is not None:
        task_def = seq.tasks[cur.index] if seq and cur.index < len(seq.tasks) else None
        _plan_deadlines(ex, cur, task_def, now, policy, out, queued.get(cur.triggered.id))
        return
    if is_paused(state, ex):
        return
    done = ex.done
    last = done[-1] if done else None
    if seq is None:
        _finish(ex, last, now, out, message="shipyard no longer defines this sequence", status="errored")
        return
    stop = last is not None and (last.result == "fail" or last.status == "errored")
    if stop or len(done) >= len(seq.tasks):
        _finish(ex, last, now, out)
        if last is not None and last.result not in ("", None) and _reason_of_run(last) not in TIMEOUT_REASONS:
            _chain(state, config, ex, last, now, out)
        return
    task = seq.tasks[len(done)]
    due = (last.completed_at if last and last.completed_at else _started_at(ex)) + _delay(task)
    if due > now:
        out.wake(due)
        return
    payload = build_payload(ex, task)
    out.events.append(
        _controller_event(
            task_type(task.name, "triggered"),
            ex.context,
            payload,
            now,
            id_=derived_id(ex.trigger.id, "task", str(len(done))),
            gitcommitid=ex.commit or None,
            sequencetriggeredid=ex.trigger.id,
        )
    )


def _started_at(ex: Execution) -> datetime:
    return ex.started_event.timestamp if ex.started_event else ex.received_at


def _reason_of_run(run: TaskRun) -> str:
    for ev in run.finished:
        if ev.source == CONTROLLER:
            return reason_of(ev)
    return ""


def _plan_deadlines(
    ex: Execution,
    cur: TaskRun,
    task_def: Task | None,
    now: datetime,
    policy: Policy,
    out: Plan,
    queued: Queued | None = None,
) -> None:
    start_limit = _deadline(task_def.start_deadline if task_def else None, policy.start_deadline)
    run_limit = _deadline(task_def.run_deadline if task_def else None, policy.run_deadline)
    if not cur.started and not cur.finished:
        due = cur.triggered_at + start_limit
        reason = REASON_START_DEADLINE
        why = f"no executor answered within {_fmt(start_limit)}"
        if queued is not None:
            why = (
                f"it was queued behind {queued.ahead} task{'s' * (queued.ahead != 1)} for {queued.executor} "
                f"({queued.workers} at a time) and did not start within {_fmt(start_limit)}; it will not run"
            )
        message = (
            f"sequence timed out while waiting for task {cur.triggered.type} to receive a correlating "
            f".started or .finished event: {why}"
        )
    elif cur.started and task_def is not None and cur.name == "approval" and not task_def.run_deadline:
        return  # a manual approval waits for a person; it has no run deadline unless the shipyard sets one
    else:
        first = min(e.timestamp for e in (cur.started or cur.finished))
        due = first + run_limit
        silent = sorted({e.source for e in cur.started} - {e.source for e in cur.finished})
        reason = REASON_RUN_DEADLINE
        message = (
            f"task {cur.name} did not finish within {_fmt(run_limit)} of starting; "
            f"still running: {', '.join(silent) or 'unknown executor'}"
        )
    if due > now:
        out.wake(due)
        return
    data = {
        "project": ex.project,
        "stage": ex.stage,
        "service": ex.service,
        "status": "errored",
        "result": "fail",
        "message": message,
    }
    out.events.append(
        _controller_event(
            task_type(cur.name, "finished"),
            ex.context,
            _with_reason(data, reason),
            now,
            id_=derived_id(cur.triggered.id, CONTROLLER, "finished"),
            triggeredid=cur.triggered.id,
            gitcommitid=ex.commit or None,
        )
    )


def _fmt(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _finish(
    ex: Execution,
    last: TaskRun | None,
    now: datetime,
    out: Plan,
    *,
    message: str | None = None,
    status: str = "",
) -> None:
    """`<stage>.<seq>.finished` with the last task's result (spec 2.6)."""
    if last is not None and last.finished:
        data = common_fields(last.finished[-1].data)
    else:
        data = common_fields(ex.trigger.data)
    data["project"], data["stage"], data["service"] = ex.project, ex.stage, ex.service
    data["result"] = last.result if last else "fail"
    data["status"] = status or (last.status if last else "errored")
    if message is not None:
        data["message"] = message
    reason = _reason_of_run(last) if last else ""
    if reason:
        data = _with_reason(data, reason)
    out.events.append(
        _controller_event(
            sequence_type(ex.stage, ex.sequence, "finished"),
            ex.context,
            data,
            now,
            id_=derived_id(ex.trigger.id, "finished"),
            triggeredid=ex.trigger.id,
        )
    )


def _chain(
    state: EngineState, config: ConfigView, ex: Execution, last: TaskRun, now: datetime, out: Plan
) -> None:
    shipyard = config.shipyard(ex.shipyard_commit or None) or config.shipyard(None)
    if shipyard is None:
        return
    base = build_payload(ex, None)
    for stage, seq in matching_triggers(shipyard, ex.stage, ex.sequence, last.result, last.name):
        data = dict(base)
        data["stage"] = stage
        out.events.append(
            _controller_event(
                sequence_type(stage, seq, "triggered"),
                ex.context,
                data,
                now,
                id_=derived_id(ex.trigger.id, "chain", stage, seq),
            )
        )
