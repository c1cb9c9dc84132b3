"""The engine state as plain data: the payload of its checkpoint (`ledger.enginecheckpoint`).

`EngineState` is dataclasses holding `KeptnEvent`s and cross-links (`by_task` points at
the same `Execution` objects `executions` holds); this is the same state as one pydantic
model, so it can be saved as JSON and read back without pickle (loading a file must
never run code), and `from_payload(to_payload(s)) == s` for every state `apply` builds.
Pure: the file, its header and the check against the ledger live in the ledger layer.

Bump `PAYLOAD_VERSION` whenever `EngineState` or this model changes meaning: a reader of
another version ignores the file and folds the ledger instead, so an old checkpoint can
never feed a new engine a state it did not build.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from reconciler.core.engine_state import AbortRequest, EngineState, Execution, TaskRun
from reconciler.formats.events import KeptnEvent

PAYLOAD_VERSION = 1


class SavedTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    triggered: KeptnEvent
    started: list[KeptnEvent]
    finished: list[KeptnEvent]
    result: str
    status: str
    completed_at: datetime | None


class SavedExecution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trigger: KeptnEvent
    project: str
    stage: str
    service: str
    sequence: str
    context: str
    received_at: datetime
    state: str
    started_event: KeptnEvent | None
    commit: str
    shipyard_commit: str
    tasks: list[SavedTask]
    finished_event: KeptnEvent | None
    paused: bool
    abort: tuple[str, str] | None
    """(control event id, message) of an abort recorded while it was active."""


class EngineStatePayload(BaseModel):
    """`EngineState` field by field; `by_task` as (task triggered id, execution trigger id)."""

    model_config = ConfigDict(extra="forbid")

    executions: list[SavedExecution]
    """In the state's own order (arrival, as `executions` and `order` keep it)."""
    order: list[str]
    live: list[str]
    contexts: dict[str, list[str]]
    by_task: list[tuple[str, str]]
    paused: list[tuple[str, str]]
    event_count: int
    forgotten_runs: list[tuple[str, str, str, int]]
    parts: dict[str, Any] = {}
    """What other parts derived from the same fold, saved with it so they continue too (the
    metrics' counters, by name; opaque here: each part validates its own)."""


def _task(run: TaskRun) -> SavedTask:
    return SavedTask.model_construct(
        index=run.index,
        name=run.name,
        triggered=run.triggered,
        started=list(run.started),
        finished=list(run.finished),
        result=run.result,
        status=run.status,
        completed_at=run.completed_at,
    )


def _execution(ex: Execution) -> SavedExecution:
    return SavedExecution.model_construct(
        trigger=ex.trigger,
        project=ex.project,
        stage=ex.stage,
        service=ex.service,
        sequence=ex.sequence,
        context=ex.context,
        received_at=ex.received_at,
        state=ex.state,
        started_event=ex.started_event,
        commit=ex.commit,
        shipyard_commit=ex.shipyard_commit,
        tasks=[_task(t) for t in ex.tasks],
        finished_event=ex.finished_event,
        paused=ex.paused,
        abort=(ex.abort.control_id, ex.abort.message) if ex.abort is not None else None,
    )


def to_payload(state: EngineState) -> EngineStatePayload:
    """A copy of `state` that later folds cannot change (events are immutable and shared).

    Cheap enough to take under the control loop's lock (no validation, no JSON: objects
    and lists only); encoding it is the writer's work, off the loop.
    """
    return EngineStatePayload.model_construct(
        executions=[_execution(ex) for ex in state.executions.values()],
        order=list(state.order),
        live=list(state.live),
        contexts={c: list(ids) for c, ids in state.contexts.items()},
        by_task=[(task_id, ex.trigger.id) for task_id, ex in state.by_task.items()],
        paused=sorted(state.paused),
        event_count=state.event_count,
        forgotten_runs=[(c, s, q, n) for (c, s, q), n in state.forgotten_runs.items()],
    )


def from_payload(saved: EngineStatePayload) -> EngineState:
    """The state a payload holds; ValueError when its parts do not fit together."""
    state = EngineState()
    for item in saved.executions:
        ex = Execution(
            trigger=item.trigger,
            project=item.project,
            stage=item.stage,
            service=item.service,
            sequence=item.sequence,
            context=item.context,
            received_at=item.received_at,
            state=item.state,
            started_event=item.started_event,
            commit=item.commit,
            shipyard_commit=item.shipyard_commit,
            tasks=[
                TaskRun(
                    index=t.index,
                    name=t.name,
                    triggered=t.triggered,
                    started=list(t.started),
                    finished=list(t.finished),
                    result=t.result,
                    status=t.status,
                    completed_at=t.completed_at,
                )
                for t in item.tasks
            ],
            finished_event=item.finished_event,
            paused=item.paused,
            abort=AbortRequest(*item.abort) if item.abort is not None else None,
        )
        if item.trigger.id in state.executions:
            raise ValueError(f"execution {item.trigger.id[:64]!r} twice")
        state.executions[item.trigger.id] = ex
    known: Callable[[str], bool] = state.executions.__contains__
    if list(state.executions) != saved.order:
        raise ValueError("the order of executions does not match their list")
    missing = [t for t in (*saved.live, *(t for _, t in saved.by_task)) if not known(t)]
    if missing:
        raise ValueError(f"refers to execution {missing[0][:64]!r}, which it does not hold")
    state.order = list(saved.order)
    state.live = dict.fromkeys(saved.live)
    state.contexts = {c: list(ids) for c, ids in saved.contexts.items()}
    state.by_task = {task_id: state.executions[t] for task_id, t in saved.by_task}
    state.paused = {(c, s) for c, s in saved.paused}
    state.event_count = saved.event_count
    state.forgotten_runs = {(c, s, q): n for c, s, q, n in saved.forgotten_runs}
    return state
