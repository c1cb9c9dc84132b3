"""The executors' view of the running reconciler: the ledger to write to, the upstream to read from.

Implements `reconciler.executors.base.TaskContext` over the real parts. Reads go to
the local mirror at the pinned commit; writes go to the ledger (write-ahead) and
wake the control loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.base.clock import utcnow
from reconciler.base.logs import get_logger
from reconciler.core.validation import UpstreamFiles
from reconciler.executors.base import TaskAlreadyFinished
from reconciler.formats.events import KeptnEvent, task_type
from reconciler.ledger.catalog import EventsView
from reconciler.ledger.gitledger import subject_scope
from reconciler.settings import Settings

log = get_logger("reconciler.ledger")


@dataclass
class _Emit:
    """An event waiting to be recorded by whichever executor thread writes next (`AppContext.emit`)."""

    event: KeptnEvent
    start: bool
    """A task's `.started`: recorded only while the task has no `.finished`."""
    done: bool = False
    """Taken by a writer, which has finished with it (`written` or `error` says how)."""
    written: bool = False
    error: BaseException | None = None


def _checks_start(event: KeptnEvent) -> bool:
    etype = event.etype
    return bool(etype is not None and etype.is_task and etype.kind == "started" and event.triggeredid)


@dataclass
class AppContext:
    settings: Settings
    ledger: Any  # reconciler.ledger.gitledger.Ledger (or anything with append/events)
    files: UpstreamFiles
    on_emit: Callable[[], None] = lambda: None
    clock: Callable[[], datetime] = utcnow
    accepted: Callable[[], Mapping[str, str]] = dict
    """Branch -> the commit the reconciler serves: a read without a pinned commit (the project
    level of job/config.yaml and prometheus/sli.yaml on main) reads there, never at an
    unvalidated tip."""
    start_lock: Any = field(default_factory=threading.RLock)
    """Held while a `.started` is checked and recorded; the app shares the control loop's start guard
    (`Controller.start_lock`), under which the loop folds what arrived and records a round that ends a
    task (a deadline), so the two cannot interleave. The loop takes it for nothing else: a `.started`
    never waits for a step, nor a step for a `.started`."""
    between_steps: Callable[[], None] = lambda: None
    """Waits until the control loop is between steps (`Controller.wait_between_steps`): a writer
    calls it before taking the waiting events, which gives the loop the ledger first."""
    _append_turn: threading.Lock = field(default_factory=threading.Lock)
    """Whose turn it is to write the pending events (`_pending`) for every executor waiting."""
    _pending: list[_Emit] = field(default_factory=list)
    _pending_lock: threading.Lock = field(default_factory=threading.Lock)
    _type_index: dict[str, list[KeptnEvent]] = field(default_factory=dict)
    _indexed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, event: KeptnEvent) -> None:
        """Record `event` (its own commit) and return once it is; a task's `.started` only while the
        task has no `.finished` (`TaskAlreadyFinished` otherwise).

        Group commit: executors' events wait in `_pending` while one of them writes; the next
        writer takes all that are waiting and records them in one `extend` (one commit each, the
        ref moved once, all or none landing), checking the `.started` among them under
        `start_lock` first. With 50 jobs in flight an append's fixed cost (its pack, the ref's
        move) was most of the executors' CPU and held the ledger's lock against the control loop
        100 times a round; one writer at a time also keeps up to 50 threads from contending for
        that lock (a lock is not fair: the loop was one of 50 at each release)."""
        item = _Emit(event, _checks_start(event))
        with self._pending_lock:
            self._pending.append(item)
        with self._append_turn:
            if not item.done:  # a writer before us had not taken it: take every waiting event
                self.between_steps()
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._record(batch)
        if item.error is not None:
            raise item.error
        self.on_emit()

    def _record(self, batch: list[_Emit]) -> None:
        try:
            if any(item.start for item in batch):
                with self.start_lock:
                    refused = [item for item in batch if item.start and self.task_finished(item.event)]
                    for item in refused:
                        etype = item.event.etype
                        task = etype.task if etype is not None else item.event.type
                        item.error = TaskAlreadyFinished(
                            f"task {task} ({item.event.triggeredid}) already has a .finished event: not starting it"
                        )
                    self._write([item for item in batch if item.error is None])
            else:
                self._write(batch)
        except BaseException as exc:  # e.g. the check's refresh failed: nothing was written
            for item in batch:
                if item.error is None and not item.written:
                    item.error = exc
        finally:
            for item in batch:
                item.done = True

    def _write(self, batch: list[_Emit]) -> None:
        """One extend for the batch; if it fails, each event alone, so one event the ledger refuses
        (or a write that failed for another reason) fails only its own emitter."""
        if not batch:
            return
        extend = getattr(self.ledger, "extend", None)
        if extend is not None and len(batch) > 1:
            try:
                extend([item.event for item in batch])
            except Exception:
                log.warning("ledger_batch_failed", events=len(batch), action="recording them one by one")
            else:
                for item in batch:
                    item.written = True
                return
        for item in batch:
            try:
                self.ledger.append(item.event)
                item.written = True
            except Exception as exc:
                item.error = exc

    def task_finished(self, event: KeptnEvent) -> bool:
        """Whether the task `event` belongs to (by triggeredid) has a `.finished` in the ledger."""
        etype = event.etype
        if etype is None or etype.task is None:
            return False
        refresh = getattr(self.ledger, "refresh", None)
        if refresh is not None:
            refresh()
        target = event.triggeredid if etype.kind != "triggered" else event.id
        finished = self.events(type_=task_type(etype.task, "finished"), context=event.shkeptncontext)
        return any(e.triggeredid == target for e in finished)

    def read_file(self, stage: str, path: str, commit: str | None = None) -> bytes | None:
        return self.files.read(stage, path, commit or self.accepted().get(stage))

    def list_files(self, stage: str, prefix: str, commit: str | None = None) -> list[str]:
        return self.files.list(stage, prefix, commit or self.accepted().get(stage))

    def now(self) -> datetime:
        return self.clock()

    def events(self, *, type_: str | None = None, context: str | None = None) -> Sequence[KeptnEvent]:
        all_events = self.ledger.events()
        if isinstance(all_events, EventsView):  # the ledger's own indexes: only matches are decoded
            return all_events.select(types=None if type_ is None else (type_,), context=context)
        if type_ is None:
            return [e for e in all_events if context is None or e.shkeptncontext == context]
        with self._lock:
            for event in all_events[self._indexed :]:
                self._type_index.setdefault(event.type, []).append(event)
            self._indexed = len(all_events)
            found = list(self._type_index.get(type_, []))
        return [e for e in found if context is None or e.shkeptncontext == context]

    def events_of_service(
        self, type_: str, *, project: str, stage: str, service: str
    ) -> Sequence[KeptnEvent]:
        """Events of one type that may belong to project/stage/service (a superset: check the
        decoded fields); decodes only those on a git ledger, where history lookups of a
        large ledger would otherwise decode every event of the type."""
        all_events = self.ledger.events()
        if isinstance(all_events, EventsView):
            return all_events.select(types=(type_,), scope=subject_scope(project, stage, service))
        return self.events(type_=type_)
