"""Whether fetched history is one this engine could have written or accepted, event by event.

A ledger branch from the upstream (recovery into an empty data directory, or an upstream
copy ahead of ours) is adopted only when its commits carry our signature (`signing`)
and every event in them passes these checks. The signature says who wrote a commit;
these say the events make sense where they stand, so a history whose key leaked, or a
naive forgery, is refused with a located reason ("approval.finished answers an approval
that was already answered") instead of being replayed and acted on.

Each rule is an invariant of the code that writes events (the engine's ids are derived
from their cause, admission refuses engine-only kinds from outside, an answer needs an
open task), so a history this reconciler wrote passes whatever its clock did, except the
one clock rule, which allows CLOCK_SLACK:

- event ids are unique;
- a task's `.triggered` and a sequence's `.started`/`.finished` are written by the engine
  only: source `shipyard-controller` and the id `derived_id` gives for their cause
  (lighthouse's `get-sli.triggered`: its source and an id derived from an earlier
  `evaluation.triggered` of its context);
- a task's `.started`/`.finished`/`.status.changed` answers an earlier `.triggered` of the
  same task in the same context; a built-in executor's answer has its derived id;
- an `approval.finished` from anyone but the engine answers an approval still pending
  (none answered it before); no `approval.finished` is dated before the approval's
  `.triggered` or `.started` (less CLOCK_SLACK).

Not checked (nothing in the ledger says it): who may approve. Pure; may import
`reconciler.formats`, `reconciler.core`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.core.engine_state import CONTROLLER
from reconciler.formats.events import KeptnEvent, derived_id

CLOCK_SLACK = timedelta(minutes=5)
"""How much earlier than what it answers an approval may be stamped (clock corrections)."""
APPROVAL_SERVICE = "approval-service"
LIGHTHOUSE = "lighthouse-service"
BUILT_IN_EXECUTORS = frozenset(
    {APPROVAL_SERVICE, LIGHTHOUSE, "job-executor-service", "remediation-service", CONTROLLER}
)
"""Sources whose answers the engine writes itself, always with `derived_id(triggered, source, kind)`."""
MAX_TASK_INDEX_GAP = 2
"""A sequence's k-th task is `derived_id(sequence, "task", k)`; k is tried up to this past the count seen."""


@dataclass(frozen=True, slots=True)
class _Fact:
    type: str
    task: str | None
    kind: str
    context: str
    time: datetime | None


def _time(event: KeptnEvent) -> datetime | None:
    try:
        return event.timestamp
    except ValueError:
        return None


class HistoryCheck:
    """Feed events oldest first with `check`; the first problem is returned, not raised.

    `prior(context)` yields the events of a context already in the ledger (empty when
    recovering into an empty one), asked once per context the new events touch.
    """

    def __init__(self, prior: Callable[[str], Iterable[KeptnEvent]] = lambda _context: ()) -> None:
        self._prior = prior
        self._facts: dict[str, _Fact] = {}
        self._contexts: set[str] = set()
        self._approval_finished: set[str] = set()
        self._started_at: dict[str, datetime] = {}
        self._evaluations: dict[str, list[str]] = {}
        self._tasks_of: dict[str, int] = {}

    def check(self, event: KeptnEvent) -> str | None:
        self._load_context(event.shkeptncontext)
        if event.id in self._facts:
            return f"event id {event.id[:64]!r} is recorded twice"
        problem = self._problem(event)
        if problem is None:
            self._learn(event)
        return problem

    # ------------------------------------------------------------------ facts

    def _load_context(self, context: str) -> None:
        if context in self._contexts:
            return
        self._contexts.add(context)
        for event in self._prior(context):
            if event.id not in self._facts:
                self._learn(event)

    def _learn(self, event: KeptnEvent) -> None:
        etype = event.etype
        task = etype.task if etype is not None else None
        kind = etype.kind if etype is not None else ""
        when = _time(event)
        self._facts[event.id] = _Fact(event.type, task, kind, event.shkeptncontext, when)
        if task is None:
            return
        if kind == "triggered":
            if task == "evaluation":
                self._evaluations.setdefault(event.shkeptncontext, []).append(event.id)
            parent = _sequence_of(event)
            if parent:
                self._tasks_of[parent] = self._tasks_of.get(parent, 0) + 1
        elif event.triggeredid:
            if kind == "started" and when is not None:
                first = self._started_at.get(event.triggeredid)
                self._started_at[event.triggeredid] = when if first is None else min(first, when)
            if kind == "finished" and task == "approval":
                self._approval_finished.add(event.triggeredid)

    # ------------------------------------------------------------------ rules

    def _problem(self, event: KeptnEvent) -> str | None:
        etype = event.etype
        if etype is None:
            return None  # reconciler.* records and other non-Keptn types: the engine's own bookkeeping
        if etype.is_sequence and etype.kind in ("started", "finished"):
            return self._engine_sequence_event(event, etype.kind)
        if etype.task is None:
            return None
        if etype.kind == "triggered":
            return self._engine_task_trigger(event, etype.task)
        if etype.kind in ("started", "finished") or (etype.kind == "changed" and etype.task == "status"):
            return self._answer(event, etype.task, etype.kind)
        return None

    def _engine_sequence_event(self, event: KeptnEvent, kind: str) -> str | None:
        if event.source != CONTROLLER:
            return f"{event.type} is written by the engine only, but its source is {event.source[:120]!r}"
        cause = event.triggeredid or ""
        fact = self._facts.get(cause)
        if fact is None or not (fact.task is None and fact.kind == "triggered"):
            return f"{event.type} names no earlier sequence .triggered (triggeredid {cause[:64]!r})"
        if event.id != derived_id(cause, kind):
            return f"{event.type} has id {event.id[:64]!r}, not the one the engine derives from its trigger"
        return None

    def _engine_task_trigger(self, event: KeptnEvent, task: str) -> str | None:
        if event.source == LIGHTHOUSE and task == "get-sli":
            wanted = {
                derived_id(e, LIGHTHOUSE, "get-sli.triggered")
                for e in self._evaluations.get(event.shkeptncontext, [])
            }
            if event.id not in wanted:
                return f"{event.type} answers no earlier evaluation.triggered of context {event.shkeptncontext[:64]!r}"
            return None
        if event.source != CONTROLLER:
            return f"{event.type} is written by the engine only, but its source is {event.source[:120]!r}"
        parent = _sequence_of(event)
        fact = self._facts.get(parent)
        if fact is None or not (fact.task is None and fact.kind == "triggered"):
            return f"{event.type} names no earlier sequence .triggered (sequencetriggeredid {parent[:64]!r})"
        seen = self._tasks_of.get(parent, 0)
        for k in (seen, *range(seen + MAX_TASK_INDEX_GAP + 1)):
            if event.id == derived_id(parent, "task", str(k)):
                return None
        return f"{event.type} has id {event.id[:64]!r}, not the one the engine derives for a task of its sequence"

    def _answer(self, event: KeptnEvent, task: str, kind: str) -> str | None:
        cause = event.triggeredid or ""
        fact = self._facts.get(cause)
        if fact is None or fact.kind != "triggered" or fact.task is None:
            return f"{event.type} answers no earlier task .triggered (triggeredid {cause[:64]!r})"
        if kind != "changed" and fact.task != task:
            return f"{event.type} answers a {fact.type}, not a {task} task"
        if fact.context != event.shkeptncontext:
            return (
                f"{event.type} is in context {event.shkeptncontext[:64]!r}, its task in {fact.context[:64]!r}"
            )
        built_in = event.source in BUILT_IN_EXECUTORS and kind in ("started", "finished")
        if built_in and event.id != derived_id(cause, event.source, kind):
            return (
                f"{event.type} from {event.source} has id {event.id[:64]!r}, not the one that executor "
                "derives from the task it answers"
            )
        if task == "approval" and kind == "finished":
            return self._approval_answer(event, cause, fact)
        return None

    def _approval_answer(self, event: KeptnEvent, cause: str, triggered: _Fact) -> str | None:
        if cause in self._approval_finished and event.source not in BUILT_IN_EXECUTORS:
            # a person's answer needs a pending approval (admission); the engine's own may race a timeout
            return f"{event.type} answers approval {cause[:64]!r}, which was already answered"
        when = _time(event)
        if when is None:
            return f"{event.type} has an unreadable time {event.time[:40]!r}"
        started = self._started_at.get(cause)
        for what, at in (("approval.started", started), ("approval.triggered", triggered.time)):
            if at is not None and when < at - CLOCK_SLACK:
                return f"{event.type} is dated {event.time[:40]}, before the {what} it answers"
        return None


def _sequence_of(event: KeptnEvent) -> str:
    extra = event.model_extra or {}
    value = extra.get("sequencetriggeredid")
    return value if isinstance(value, str) else ""
