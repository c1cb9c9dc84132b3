"""The shipyard controller as a pure function: state from the ledger, events in, events out.

Two functions make the engine, both free of I/O and of the clock:

- `apply(state, event)` folds one recorded event into `EngineState`. Replaying the
  ledger is nothing but `apply` over every event, so state after a restart is
  exactly state before it.
- `plan(state, config, now, policy)` is level-triggered reconciliation: from the
  state alone it computes the events that should exist now and do not yet (admit a
  queued sequence, dispatch the next task, fire a deadline, finish a sequence,
  chain the next ones) and when to look again. Every emitted id is derived from
  the event that caused it, so a decision re-made after a crash dedups in the
  ledger instead of running twice.

`decide(state, config, event, now, policy)` combines them for callers that think in
"incoming event -> outgoing events" (the issue's contract, `reconciler simulate`).
Behaviour follows keptn-semantics.md section 2; deliberate differences are listed in
docs/keptn-differences.md and marked "Difference:" below.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from reconciler.core.merge import merge
from reconciler.formats.events import (
    EventType,
    KeptnEvent,
    common_fields,
    derived_id,
    format_time,
    sequence_type,
    task_type,
)
from reconciler.formats.gotime import DurationError, parse_go_duration, parse_timestamp
from reconciler.formats.shipyard import Sequence, Shipyard, Task

CONTROLLER = "shipyard-controller"
CONTROL_TYPE = "reconciler.sequence.control"

# Flux-style reasons, carried in data.reconciler.reason of engine-written events.
REASON_START_DEADLINE = "StartDeadlineExceeded"
REASON_RUN_DEADLINE = "RunDeadlineExceeded"
REASON_NO_EXECUTOR = "NoExecutor"
REASON_ABORTED = "Aborted"
REASON_START_FAILED = "StartFailed"
REASON_LOOP_LIMIT = "IterationLimitReached"
TIMEOUT_REASONS = frozenset({REASON_START_DEADLINE, REASON_RUN_DEADLINE})


class ConfigView(Protocol):
    """What the engine needs to know about the upstream (implemented by the snapshot store)."""

    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        """The accepted shipyard (at a `main` commit when given)."""
        ...

    def main_commit(self) -> str | None: ...

    def stage_head(self, stage: str) -> str | None:
        """Accepted head commit of a stage branch (what a new sequence pins)."""
        ...


@dataclass(frozen=True)
class Policy:
    """Engine settings that are not in the shipyard."""

    start_deadline: timedelta = timedelta(minutes=10)
    run_deadline: timedelta = timedelta(hours=2)
    max_iterations: int = 10
    project: str = ""


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class TaskRun:
    """One dispatched task: its `.triggered` and every matching answer."""

    index: int
    name: str
    triggered: KeptnEvent
    started: list[KeptnEvent] = field(default_factory=list)
    finished: list[KeptnEvent] = field(default_factory=list)
    result: str = ""
    status: str = ""
    completed_at: datetime | None = None

    @property
    def triggered_at(self) -> datetime:
        return self.triggered.timestamp

    @property
    def completed(self) -> bool:
        return self.completed_at is not None

    @property
    def data(self) -> dict[str, Any]:
        """Merge of all `.finished` data in arrival order (spec 2.5)."""
        out: dict[str, Any] = {}
        for ev in self.finished:
            out = merge(out, ev.data)
        return out

    @property
    def executors(self) -> list[str]:
        return sorted({e.source for e in self.started} | {e.source for e in self.finished})


@dataclass
class Execution:
    """One run of one sequence in one stage for one service (Keptn's sequence execution)."""

    trigger: KeptnEvent
    project: str
    stage: str
    service: str
    sequence: str
    context: str
    received_at: datetime
    state: str = "triggered"  # triggered | started | waitingForApproval | finished | timedOut | aborted
    started_event: KeptnEvent | None = None
    commit: str = ""
    shipyard_commit: str = ""
    tasks: list[TaskRun] = field(default_factory=list)
    finished_event: KeptnEvent | None = None
    paused: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.project, self.stage, self.service)

    @property
    def current(self) -> TaskRun | None:
        if self.tasks and not self.tasks[-1].completed:
            return self.tasks[-1]
        return None

    @property
    def done(self) -> list[TaskRun]:
        return [t for t in self.tasks if t.completed]

    @property
    def active(self) -> bool:
        return self.finished_event is None

    @property
    def result(self) -> str:
        return self.finished_event.result if self.finished_event else ""

    @property
    def status(self) -> str:
        return self.finished_event.status if self.finished_event else ""

    @property
    def display_state(self) -> str:
        if self.paused and self.active:
            return "paused"
        if self.state == "triggered":
            return "waiting"
        return self.state


@dataclass
class EngineState:
    """Everything the engine knows, rebuilt by folding the ledger with `apply`."""

    executions: dict[str, Execution] = field(default_factory=dict)  # by trigger id
    order: list[str] = field(default_factory=list)  # trigger ids in arrival order
    live: dict[str, None] = field(default_factory=dict)  # active trigger ids, arrival order
    contexts: dict[str, list[str]] = field(default_factory=dict)  # context -> trigger ids
    by_task: dict[str, Execution] = field(default_factory=dict)  # open task triggered id -> execution
    paused: set[tuple[str, str]] = field(default_factory=set)  # (context, stage or "")
    aborts: list[KeptnEvent] = field(default_factory=list)  # pending abort controls
    event_count: int = 0
    forgotten_runs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(context, stage, sequence) -> started executions dropped by `compact` (the iteration cap counts them)."""

    def active(self) -> Iterator[Execution]:
        for tid in list(self.live):
            yield self.executions[tid]

    def by_context(self, context: str) -> list[Execution]:
        return [self.executions[t] for t in self.contexts.get(context, []) if t in self.executions]

    def open_tasks(self) -> list[tuple[Execution, TaskRun]]:
        """Dispatched tasks not yet complete: what executors should be working on."""
        out = []
        for ex in self.active():
            cur = ex.current
            if cur is not None:
                out.append((ex, cur))
        return out

    def compact(self, keep_finished: int = 2000) -> int:
        """Forget the oldest finished executions (status history only), keeping memory flat;
        returns how many. A finished execution never changes again and planning looks only at
        active ones, except the iteration cap, which keeps counting the forgotten ones."""
        finished = [t for t in self.order if not self.executions[t].active]
        if len(finished) <= keep_finished:
            return 0
        drop = set(finished[: len(finished) - keep_finished])
        self.order = [t for t in self.order if t not in drop]
        for t in drop:
            ex = self.executions.pop(t)
            if ex.started_event is not None:
                key = (ex.context, ex.stage, ex.sequence)
                self.forgotten_runs[key] = self.forgotten_runs.get(key, 0) + 1
            ids = self.contexts.get(ex.context, [])
            if t in ids:
                ids.remove(t)
            if not ids:
                self.contexts.pop(ex.context, None)
        return len(drop)


def _is_paused(state: EngineState, ex: Execution) -> bool:
    return ex.paused or (ex.context, "") in state.paused or (ex.context, ex.stage) in state.paused


def apply(state: EngineState, event: KeptnEvent) -> EngineState:
    """Fold one recorded event into the state. Unrelated events are ignored."""
    state.event_count += 1
    if event.type == CONTROL_TYPE:
        _apply_control(state, event)
        return state
    etype = event.etype
    if etype is None:
        return state
    if etype.is_sequence:
        if etype.kind == "triggered":
            _apply_sequence_triggered(state, event, etype)
        elif etype.kind == "started" and event.triggeredid in state.executions:
            _apply_sequence_started(state, state.executions[event.triggeredid], event)
        elif etype.kind == "finished" and event.triggeredid in state.executions:
            _apply_sequence_finished(state, state.executions[event.triggeredid], event)
        return state
    if etype.kind == "triggered" and event.source == CONTROLLER:
        _apply_task_triggered(state, event, etype)
    elif etype.kind in ("started", "finished") and event.triggeredid in state.by_task:
        _apply_task_answer(state, state.by_task[event.triggeredid], event, etype)
    return state


def _apply_sequence_triggered(state: EngineState, event: KeptnEvent, etype: EventType) -> None:
    if event.id in state.executions:
        return
    data = event.data
    ex = Execution(
        trigger=event,
        project=str(data.get("project") or ""),
        stage=str(data.get("stage") or etype.stage or ""),
        service=str(data.get("service") or ""),
        sequence=etype.sequence or "",
        context=event.shkeptncontext,
        received_at=event.timestamp,
        commit=event.gitcommitid or "",
    )
    state.executions[event.id] = ex
    state.order.append(event.id)
    state.live[event.id] = None
    state.contexts.setdefault(ex.context, []).append(event.id)


def _apply_sequence_started(state: EngineState, ex: Execution, event: KeptnEvent) -> None:
    if ex.started_event is not None:
        return
    ex.started_event = event
    ex.state = "started"
    ex.commit = event.gitcommitid or ex.commit
    ex.shipyard_commit = str(getattr(event, "shipyardcommit", "") or "")


def _apply_sequence_finished(state: EngineState, ex: Execution, event: KeptnEvent) -> None:
    if ex.finished_event is not None:
        return
    ex.finished_event = event
    state.live.pop(ex.trigger.id, None)
    reason = _reason(event)
    if event.status == "aborted":
        ex.state = "aborted"
    elif reason in TIMEOUT_REASONS:
        ex.state = "timedOut"
    else:
        ex.state = "finished"
    cur = ex.current
    if cur is not None:
        state.by_task.pop(cur.triggered.id, None)


def _apply_task_triggered(state: EngineState, event: KeptnEvent, etype: EventType) -> None:
    seq_id = getattr(event, "sequencetriggeredid", None)
    ex = state.executions.get(str(seq_id)) if seq_id else None
    if ex is None or not ex.active or event.id in state.by_task:
        return
    index = len(ex.tasks)
    ex.tasks.append(TaskRun(index=index, name=etype.task or "", triggered=event))
    state.by_task[event.id] = ex
    ex.state = "waitingForApproval" if etype.task == "approval" else "started"


def _apply_task_answer(state: EngineState, ex: Execution, event: KeptnEvent, etype: EventType) -> None:
    cur = ex.current
    if cur is None or cur.triggered.id != event.triggeredid or event.shkeptncontext != ex.context:
        return
    if etype.task != cur.name:
        return
    if etype.kind == "started":
        cur.started.append(event)
    else:
        cur.finished.append(event)
    engine_verdict = etype.kind == "finished" and event.source == CONTROLLER
    if not engine_verdict and (not cur.finished or len(cur.finished) != len(cur.started)):
        return
    cur.result, cur.status = aggregate(cur.finished)
    cur.completed_at = event.timestamp
    state.by_task.pop(cur.triggered.id, None)
    if ex.state == "waitingForApproval":
        ex.state = "started"


def _apply_control(state: EngineState, event: KeptnEvent) -> None:
    data = event.data
    context = str(data.get("context") or event.shkeptncontext)
    stage = str(data.get("stage") or "")
    action = str(data.get("state") or "")
    if action == "pause":
        state.paused.add((context, stage))
    elif action == "resume":
        state.paused.discard((context, stage))
        if not stage:
            state.paused = {p for p in state.paused if p[0] != context}
    elif action == "abort":
        state.aborts.append(event)


def _reason(event: KeptnEvent) -> str:
    meta = event.data.get("reconciler")
    return str(meta.get("reason") or "") if isinstance(meta, dict) else ""


def aggregate(finished: Iterable[KeptnEvent]) -> tuple[str, str]:
    """Worst result wins inside a task; missing result is fail; odd status forces fail (spec 2.5)."""
    results = [e.result for e in finished]
    statuses = [e.status for e in finished]
    if any(r not in ("pass", "warning") for r in results):
        result = "fail"
    elif "warning" in results:
        result = "warning"
    else:
        result = "pass"
    if "errored" in statuses:
        status = "errored"
    elif "aborted" in statuses:
        status = "aborted"
    elif statuses and all(s == "succeeded" for s in statuses):
        status = "succeeded"
    else:
        status, result = "unknown", "fail"
    return result, status


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
    if policy.project and ex.project != policy.project:
        return f"Unable to start sequence {ex.sequence}: unknown project {ex.project} (this upstream is {policy.project})"
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
    while state.aborts:
        control = state.aborts[0]
        context = str(control.data.get("context") or control.shkeptncontext)
        stage = str(control.data.get("stage") or "")
        message = str(control.data.get("message") or "") or "sequence aborted"
        for ex in state.by_context(context):
            if ex.active and (not stage or ex.stage == stage):
                data = common_fields(ex.trigger.data)
                data.update(status="aborted", result="fail", message=message)
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
        state.aborts.pop(0)
        if out.events:
            return


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
    if ex.key in waiting_seen or _is_paused(state, ex):
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
    if _is_paused(state, ex):
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
            return _reason(ev)
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


def matching_triggers(
    shipyard: Shipyard, stage: str, sequence: str, result: str, last_task: str
) -> list[tuple[str, str]]:
    """Sequences whose `triggeredOn` fires for a finished `<stage>.<sequence>` (spec 2.7)."""
    event = f"{stage}.{sequence}.finished"
    fired: list[tuple[str, str]] = []
    for st in shipyard.spec.stages:
        for seq in st.sequences:
            for trig in seq.triggered_on or []:
                if trig.event != event:
                    continue
                match = trig.selector.match if trig.selector else None
                if match is None:
                    ok = result in ("pass", "warning")
                else:
                    ok = match.get("result") == result or match.get(f"{last_task}.result") == result
                if ok:
                    fired.append((st.name, seq.name))
                    break
    return fired


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


def decide(
    state: EngineState,
    config: ConfigView,
    event: KeptnEvent | None,
    now: datetime,
    policy: Policy | None = None,
    *,
    max_rounds: int = 1000,
) -> Plan:
    """Apply `event` (if any), then plan to a fixed point, applying each decision as it is made.

    Returns every emitted event in order and the next wake-up time. The caller records
    `event` and the returned events in the ledger (in that order).
    """
    if event is not None:
        apply(state, event)
    total = Plan()
    for _ in range(max_rounds):
        step = plan(state, config, now, policy)
        for ev in step.events:
            apply(state, ev)
        total.events.extend(step.events)
        if step.wake_at is not None:
            total.wake(step.wake_at)
        if not step.events:
            break
    return total


def replay(events: Iterable[KeptnEvent]) -> EngineState:
    state = EngineState()
    for event in events:
        apply(state, event)
    return state


def event_time(event: KeptnEvent) -> datetime:
    return parse_timestamp(event.time)
