"""The engine's state, folded from the ledger: executions, their tasks, pauses and aborts.

`apply(state, event)` folds one recorded event into `EngineState`. Replaying the
ledger is nothing but `apply` over every event, so state after a restart is exactly
state before it. Pure: no I/O, no clock. What should happen next is `planning.plan`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from reconciler.core.merge import merge
from reconciler.formats.events import EventType, KeptnEvent
from reconciler.formats.gotime import parse_timestamp

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

FORGOTTEN_KEEP = 10_000
"""(context, stage, sequence) counts of forgotten runs kept for the iteration cap, newest
forgotten first: a loop that keeps re-triggering keeps its count fresh, and a context that
stopped long ago (every delivery is a new context) does not cost memory forever."""


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


@dataclass(frozen=True)
class AbortRequest:
    control_id: str
    message: str


@dataclass(frozen=True, slots=True)
class Digest:
    """What a finished execution still answers once a folder has let go of its events.

    The ingress's `LedgerState` keeps a thousand finished executions for the listings; whole,
    each holds a dozen events. A finished execution never changes again, so it keeps this
    instead (`runtime.statusview.retire` makes it): its status record, and what the web
    view's overview reads of it. The ledger keeps the events themselves.
    """

    record: bytes
    """`statusview.sequence_status` of it, as JSON (opaque here: the status views read it)."""
    open_since: tuple[tuple[int, datetime], ...] = ()
    """(task index, triggered at) of tasks it finished without completing: their duration runs on."""
    image: str = ""
    deployed_at: str | None = None


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
    abort: AbortRequest | None = None
    """An abort recorded while this execution was active; `plan` finishes it as aborted."""
    digest: Digest | None = None
    """Set once finished by a folder that keeps it small (`tasks` then empty, events trimmed)."""

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
    event_count: int = 0
    forgotten_runs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(context, stage, sequence) -> started executions dropped by `compact` (the iteration cap
    counts them); in the order they were last counted, at most FORGOTTEN_KEEP of them."""

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
        oldest = finished[: len(finished) - keep_finished]
        drop = set(oldest)
        self.order = [t for t in self.order if t not in drop]
        for t in oldest:  # in order: which counts FORGOTTEN_KEEP keeps must not vary by run
            ex = self.executions.pop(t)
            if ex.started_event is not None:
                key = (ex.context, ex.stage, ex.sequence)
                self.forgotten_runs[key] = self.forgotten_runs.pop(key, 0) + 1  # now the newest
            ids = self.contexts.get(ex.context, [])
            if t in ids:
                ids.remove(t)
            if not ids:
                self.contexts.pop(ex.context, None)
        excess = len(self.forgotten_runs) - FORGOTTEN_KEEP
        if excess > 0:
            for key in list(islice(self.forgotten_runs, excess)):
                del self.forgotten_runs[key]
        return len(drop)


def is_paused(state: EngineState, ex: Execution) -> bool:
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
    reason = reason_of(event)
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
        # a fact about the executions active when it was recorded, not a command kept for later:
        # replayed after a restart, it cannot reach a sequence the context started since
        request = AbortRequest(event.id, str(data.get("message") or "") or "sequence aborted")
        for ex in state.by_context(context):
            if ex.active and ex.abort is None and (not stage or ex.stage == stage):
                ex.abort = request


def reason_of(event: KeptnEvent) -> str:
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


def replay(events: Iterable[KeptnEvent]) -> EngineState:
    state = EngineState()
    for event in events:
        apply(state, event)
    return state


def event_time(event: KeptnEvent) -> datetime:
    return parse_timestamp(event.time)
