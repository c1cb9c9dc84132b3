"""Recording what comes in: stamp, admit, append to the ledger, say which context it joined.

The imperative shell around `admission` and `commands`, shared by every ingress:
the CLI (appending to `<data_dir>/ledger.git` directly — the ledger's
compare-and-swap makes a second writer safe while `reconciler run` is running), the
HTTP API, the inbox directory and the Alertmanager receiver. Each call is a short
pipeline: build or parse -> stamp -> admit -> append -> wake the controller.

Lookups that need the engine's view (open tasks, pending approvals, running
remediations) use `LedgerState`: the engine state folded incrementally from the
same ledger, so the answer is as fresh as the last append, whoever wrote it. It
folds slimmed copies of the events (`slim`): the envelope and the small fields of
`data` the lookups and status views read, never a large payload — the ledger has
the whole event, and answers that copy data from a task (approvals) read it there.
An execution that finishes lets go of its events at once (`statusview.retire`): the
KEEP_FINISHED finished executions the listings answer from are each a status record
and a few trimmed envelopes, not a dozen events.

Idempotency: an incoming CloudEvent that carries its own `id` is recorded under an
id derived from its `source` and `id` (CloudEvents: events with the same source and
id are the same event), so a client retrying a POST records it once and gets the
first one's context and id back. Keptn's API discarded the client's id and recorded
a copy per request (docs/keptn-differences.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from reconciler.base.clock import Clock, utcnow
from reconciler.base.ids import Ids, random_id
from reconciler.base.logs import get_logger
from reconciler.core.admission import API_SOURCE, Rejected, UpstreamView, admit, stamp
from reconciler.core.approval import manual_answer
from reconciler.core.commands import control_event
from reconciler.core.engine_state import EngineState, Execution, TaskRun, apply
from reconciler.formats.events import (
    KeptnEvent,
    derived_id,
    event_from_obj,
    load_event_json,
)
from reconciler.runtime.statusview import retire

log = get_logger("reconciler.ingress")

T = TypeVar("T")


class EventLog(Protocol):
    def append(self, event: KeptnEvent) -> bool: ...

    def events(self) -> Sequence[KeptnEvent]: ...

    def refresh(self) -> list[KeptnEvent]: ...


KEEP_FINISHED = 1000
"""Finished sequence executions kept for lookups: the API's largest page of sequences."""
COMPACT_EVERY = 5000
"""Events folded between compactions (a first read of a long ledger folds it in chunks)."""
SLIM_VALUE_BYTES = 1024
"""Largest `data` value (or extension) a slimmed event keeps; larger ones are dropped."""
SLIM_MESSAGE_CHARS = 500
"""`data.message` is cut to this (what the status views show of it)."""


def _fits(value: Any, budget: int) -> int:
    """`budget` minus the rough encoded size of `value`; negative as soon as it is exceeded."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item) + 2
        elif isinstance(item, Mapping):
            for key, child in item.items():
                budget -= len(str(key)) + 4
                stack.append(child)
        elif isinstance(item, list | tuple):
            budget -= 2
            stack.extend(item)
        else:
            budget -= 8
        if budget < 0:
            return budget
    return budget


def slim(event: KeptnEvent) -> KeptnEvent:
    """The event as the ingress keeps it in memory: the envelope, and the `data` values and
    extensions of at most SLIM_VALUE_BYTES each (project, stage, service, result, status,
    labels, the reconciler's own metadata), `message` cut to what the views show.

    A client may send up to `api_max_event_bytes` per event, and a task's `.triggered` copies
    its sequence trigger's data, so whole events in the ingress's state multiplied into
    gigabytes; the ledger keeps them whole either way.
    """
    data: dict[str, Any] = {}
    for key, value in event.data.items():
        if key == "message" and isinstance(value, str):
            data[key] = value[:SLIM_MESSAGE_CHARS]
        elif _fits(value, SLIM_VALUE_BYTES) >= 0:
            data[key] = value
    extra = event.__pydantic_extra__ or {}
    small_extra = {k: v for k, v in extra.items() if _fits(v, SLIM_VALUE_BYTES) >= 0}
    if (
        len(data) == len(event.data)
        and len(small_extra) == len(extra)
        and data.get("message") == event.data.get("message")
    ):
        return event
    copy = event.model_copy(update={"data": data})
    object.__setattr__(copy, "__pydantic_extra__", small_extra)
    return copy


class LedgerState:
    """The engine state of a ledger, folded incrementally; safe to share between threads.

    Old finished executions are forgotten as the fold goes (`EngineState.compact`), so
    a long ledger costs the newest KEEP_FINISHED of them plus the active ones; each event
    is folded `slim`, so none of them costs more than a few kilobytes; and an execution
    that finishes is retired to its `Digest` (its events trimmed away), so what the
    finished ones cost does not grow with their tasks.
    """

    def __init__(
        self, ledger: EventLog, *, keep_finished: int = KEEP_FINISHED, compact_every: int | None = None
    ) -> None:
        self.ledger = ledger
        self.keep_finished = keep_finished
        self.compact_every = COMPACT_EVERY if compact_every is None else compact_every
        self._state = EngineState()
        self._cursor = 0
        self._folded = 0
        self._lock = threading.Lock()
        self.before_compact: list[Callable[[EngineState], None]] = []
        """Called (under the lock) with the state just before it forgets old finished executions:
        the web view keeps each service's newest sequence per stage from them."""

    def read(self, fn: Callable[[EngineState], T]) -> T:
        """Call `fn` on the up-to-date state (under a lock: do not keep references to it)."""
        with self._lock:
            self.ledger.refresh()
            events = self.ledger.events()
            while self._cursor < len(events):
                event = slim(events[self._cursor])
                apply(self._state, event)
                if event.triggeredid is not None and event.type.endswith(".finished"):
                    ex = self._state.executions.get(event.triggeredid)
                    if ex is not None:
                        retire(ex)  # a no-op unless this finished the sequence
                self._cursor += 1
                self._folded += 1
                if self._folded >= self.compact_every:
                    for hook in self.before_compact:
                        hook(self._state)
                    self._state.compact(self.keep_finished)
                    self._folded = 0
            return fn(self._state)

    def open_task(self, triggered_id: str) -> KeptnEvent | None:
        def find(state: EngineState) -> KeptnEvent | None:
            ex = state.by_task.get(triggered_id)
            cur = ex.current if ex is not None else None
            return cur.triggered if cur is not None and cur.triggered.id == triggered_id else None

        return self.read(find)

    def full(self, event: KeptnEvent) -> KeptnEvent:
        """The whole recorded event behind a slimmed one (from the ledger)."""
        found = recorded_event(self.ledger, event.id)
        return found if found is not None else event


def recorded_event(ledger: EventLog, event_id: str) -> KeptnEvent | None:
    """The recorded event with this id: the ledger's `get` when it has one (the git ledger
    answers from its index), else a scan (test doubles)."""
    get = getattr(ledger, "get", None)
    if callable(get):
        found = get(event_id)
        return found if isinstance(found, KeptnEvent) else None
    for event in ledger.events():
        if event.id == event_id:
            return event
    return None


def client_key(obj: Any) -> str | None:
    """The idempotency key of an incoming CloudEvent: its `source` and `id`, when it has an id."""
    if not isinstance(obj, dict):
        return None
    given = obj.get("id")
    if not isinstance(given, str) or not given:
        return None
    source = obj.get("source") if isinstance(obj.get("source"), str) and obj.get("source") else API_SOURCE
    return derived_id("ingress", "client-id", json.dumps([source, given]))


@dataclass(frozen=True)
class Receipt:
    """What an ingress tells its caller: the context, the event id, and whether it was new."""

    context: str
    event_id: str
    type: str
    recorded: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "keptnContext": self.context,
            "id": self.event_id,
            "type": self.type,
            "recorded": self.recorded,
        }


class NothingToDo(Rejected):
    """A well-formed command that finds nothing to act on (no pending approval, nothing running)."""


def _open_approvals(
    state: EngineState, context: str, stage: str, service: str
) -> list[tuple[Execution, TaskRun]]:
    return [
        (ex, run)
        for ex, run in state.open_tasks()
        if run.name == "approval"
        and not run.finished  # answered already (the task completes once approval-service's .started is in)
        and ex.context == context
        and (not stage or ex.stage == stage)
        and (not service or ex.service == service)
    ]


def _describe_approvals(state: EngineState) -> str:
    pending = [
        f"{ex.context} --stage {ex.stage} ({ex.service})"
        for ex, run in state.open_tasks()
        if run.name == "approval" and not run.finished
    ]
    return "pending approvals: " + ("; ".join(pending) if pending else "none")


@dataclass
class Ingress:
    """Everything that records events from outside; one per process, shared by all ingresses."""

    ledger: EventLog
    view: UpstreamView
    project: str = ""
    clock: Clock = utcnow
    ids: Ids = random_id
    """New ids and contexts for what arrives without a key (the CLI and tests pass their own)."""
    on_record: Callable[[], None] = lambda: None
    """Called after each new event (the app passes `controller.kick`)."""
    state: LedgerState = field(init=False)

    def __post_init__(self) -> None:
        self.state = LedgerState(self.ledger)

    # -- the pipeline --------------------------------------------------------------------------

    def record(self, event: KeptnEvent, *, origin: str) -> Receipt:
        """Admit and append an event built by us (ids already final)."""
        admit(event, view=self.view, project=self.project, open_task=self.state.open_task)
        return self._append(event, origin)

    def _append(self, event: KeptnEvent, origin: str) -> Receipt:
        new = self.ledger.append(event)
        if new:
            self.on_record()
        log.info(
            "event_recorded" if new else "event_already_recorded",
            origin=origin,
            event_type=event.type,
            context=event.shkeptncontext,
            project=event.project,
            stage=event.stage,
            service=event.service,
        )
        return Receipt(event.shkeptncontext, event.id, event.type, new)

    def submit(self, event: KeptnEvent, *, origin: str, seed: str | None = None) -> Receipt:
        """An event from outside: Keptn API's stamping (spec 1.1), admission, append.

        `seed` makes the new id and context deterministic (the inbox passes the file's
        digest, so a file recorded before a crash is not recorded twice after it).
        """
        if seed is None:
            new_id, new_context = self.ids(), self.ids()
        else:
            new_id, new_context = derived_id("ingress", seed, "id"), derived_id("ingress", seed, "context")
            earlier = recorded_event(self.ledger, new_id)
            if earlier is not None:
                # A retry of what is recorded: answer as the first time, whether or not it would
                # still be admitted now (the task it answered has finished since, say).
                log.info("event_already_recorded", origin=origin, event_type=earlier.type, id=new_id)
                return Receipt(earlier.shkeptncontext, earlier.id, earlier.type, False)
        stamped = stamp(
            event, now=self.clock(), new_id=new_id, new_context=new_context, open_task=self.state.open_task
        )
        return self.record(stamped, origin=origin)

    def submit_json(self, raw: bytes | str, *, origin: str, seed: bool = False) -> Receipt:
        """Parse, then `submit`. A missing `source` becomes Keptn API's default, as Keptn's API did.

        The recorded id and context derive from the event's own `source` and `id` when it has
        an id (the idempotency key), else from the bytes when `seed` (the inbox), else are new.
        """
        obj = load_event_json(raw, origin=origin)
        event = event_from_obj(obj, origin=origin, default_source=API_SOURCE)
        key = client_key(obj)
        if key is None and seed:
            key = hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode()).hexdigest()
        return self.submit(event, origin=origin, seed=key)

    # -- commands -------------------------------------------------------------------------------

    def control(
        self, context: str, state: str, *, stage: str = "", message: str = "", source: str
    ) -> Receipt:
        """abort / pause / resume: refused when it would change nothing, saying why."""
        problem = self.state.read(lambda st: _control_problem(st, context, state, stage))
        if problem:
            raise NothingToDo(problem)
        event = control_event(
            context=context,
            state=state,
            stage=stage,
            message=message,
            source=source,
            event_id=self.ids(),
            now=self.clock(),
        )
        return self._append(event, source)

    def answer_approval(
        self,
        context: str,
        *,
        stage: str,
        approve: bool,
        approver: str,
        message: str = "",
        service: str = "",
        source: str = "reconciler-cli",
        via: str = "cli",
    ) -> list[Receipt]:
        """Answer every pending approval of (context, stage[, service]); error when there is none."""

        def find(st: EngineState) -> tuple[list[KeptnEvent], str]:
            runs = _open_approvals(st, context, stage, service)
            return [run.triggered for _, run in runs], _describe_approvals(st)

        triggered, pending = self.state.read(find)
        if not triggered:
            where = (
                f"context {context}"
                + (f" stage {stage}" if stage else "")
                + (f" service {service}" if service else "")
            )
            raise NothingToDo(f"no pending approval for {where}; {pending}")
        receipts = []
        for ev in map(self.state.full, triggered):  # the answer copies the task's labels: whole ones
            answer = manual_answer(
                ev,
                approve=approve,
                approver=approver,
                message=message,
                source=source,
                via=via,
                now=self.clock(),
            )
            receipts.append(self.record(answer, origin=via))
        return receipts


def _control_problem(state: EngineState, context: str, action: str, stage: str) -> str | None:
    executions = state.by_context(context)
    if not executions:
        return f"no sequence has context {context}"
    if stage:
        executions = [ex for ex in executions if ex.stage == stage]
        if not executions:
            stages = sorted({ex.stage for ex in state.by_context(context)})
            return f"context {context} has no sequence in stage {stage} (stages: {', '.join(stages)})"
    active = [ex for ex in executions if ex.active]
    if not active:
        return f"nothing to {action}: every sequence of context {context}{' in ' + stage if stage else ''} has finished"
    paused = (context, stage) in state.paused or (context, "") in state.paused
    if action == "pause" and paused:
        return f"context {context}{' stage ' + stage if stage else ''} is already paused"
    if action == "resume" and not paused:
        return f"context {context}{' stage ' + stage if stage else ''} is not paused"
    return None
