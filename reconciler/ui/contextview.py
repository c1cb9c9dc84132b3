"""One context (a Keptn `shkeptncontext`): its chain of sequences across stages and every event.

The chain is `statusview.sequences` over `replay` of the context's own events: the
fold the CLI runs over the whole ledger, run over the events that can touch this
context (every event the fold reads for a sequence carries its context), so an old
context the ingress state has forgotten still shows in full. Each task comes with
the full message of its `.finished` (for a failed job: the error and its log tail,
redacted before it was recorded) and each event with the ledger commit that holds
it, when the caller can tell (`commit_of`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from reconciler.base.redact import redact
from reconciler.core.engine_state import Execution, TaskRun, replay
from reconciler.formats.events import KeptnEvent
from reconciler.runtime.statusview import SequenceStatus, TaskStatus, sequence_status
from reconciler.ui import fmt
from reconciler.ui.board import image_of

LOG_TAIL_LINES = 40
LOG_MARK = "\nLogs:\n"


@dataclass(frozen=True)
class TaskLine:
    status: TaskStatus
    outcome: str
    started_at: str
    duration: str
    log_tail: str
    """The end of a failed task's message: the job's error and log tail, as the ledger has them."""
    evaluation_id: str = ""
    """An evaluation task's `evaluation.finished` (its table on the evaluations page)."""
    score: str = ""


@dataclass(frozen=True)
class SequenceBlock:
    status: SequenceStatus
    outcome: str
    label: str
    image: str
    labels: list[tuple[str, str]]
    """Keptn labels of the sequence's trigger (free text: shown escaped)."""
    commit: str
    shipyard_commit: str
    duration: str
    tasks: list[TaskLine]


@dataclass(frozen=True)
class EventLine:
    event: KeptnEvent
    commit: str | None
    json: str


@dataclass(frozen=True)
class ContextView:
    context: str
    project: str
    services: list[str]
    sequences: list[SequenceBlock]
    events: list[EventLine]
    active: bool


def log_tail(run: TaskRun) -> str:
    """A failed task's own words: the last lines of its last `.finished` message."""
    if run.result != "fail" or not run.finished:
        return ""
    message = str(run.finished[-1].data.get("message") or "")
    if not message:
        return ""
    lines = message.rstrip().splitlines()
    return redact("\n".join(lines[-LOG_TAIL_LINES:]))


def _labels(ex: Execution) -> list[tuple[str, str]]:
    found = ex.trigger.data.get("labels")
    if not isinstance(found, dict):
        return []
    return sorted((str(k), str(v)) for k, v in found.items())


def _block(ex: Execution, now: datetime) -> SequenceBlock:
    status = sequence_status(ex, now)
    tasks = []
    for run, task in zip(ex.tasks, status.tasks, strict=True):
        outcome = fmt.outcome_of(task.state, task.result)
        evaluation = run.finished[-1] if run.name == "evaluation" and run.finished else None
        block = evaluation.data.get("evaluation") if evaluation is not None else None
        tasks.append(
            TaskLine(
                status=task,
                outcome=outcome,
                started_at=run.started[0].time if run.started else "",
                duration=fmt.duration(task.duration_seconds),
                log_tail=log_tail(run),
                evaluation_id=evaluation.id if evaluation is not None else "",
                score=fmt.number(block.get("score")) if isinstance(block, dict) else "",
            )
        )
    outcome = fmt.outcome_of(status.state, status.result)
    return SequenceBlock(
        status=status,
        outcome=outcome,
        label=fmt.label(outcome),
        image=image_of(ex),
        labels=_labels(ex),
        commit=ex.commit,
        shipyard_commit=ex.shipyard_commit,
        duration=fmt.duration(status.duration_seconds),
        tasks=tasks,
    )


def build(
    context: str,
    events: Sequence[KeptnEvent],
    now: datetime,
    *,
    commit_of: Callable[[KeptnEvent], str | None] = lambda e: None,
) -> ContextView:
    """`events`: the context's events, in ledger order."""
    state = replay(events)
    executions = [state.executions[t] for t in state.order]
    blocks = [_block(ex, now) for ex in executions]
    lines = [
        EventLine(
            event=e,
            commit=commit_of(e),
            json=fmt.without_secrets(
                json.dumps(
                    e.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True, ensure_ascii=False
                )
            ),
        )
        for e in events
    ]
    services = sorted({ex.service for ex in executions if ex.service})
    project = next((ex.project for ex in executions if ex.project), "")
    return ContextView(
        context=context,
        project=project,
        services=services,
        sequences=blocks,
        events=lines,
        active=any(ex.active for ex in executions),
    )
