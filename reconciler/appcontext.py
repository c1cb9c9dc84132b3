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
    task (a deadline), so the two cannot interleave. The loop takes it for nothing else: a step never
    waits for a `.started` (and a `.started` waits for a step only in `between_steps`, bounded)."""
    between_steps: Callable[[], None] = lambda: None
    """Returns when the control loop is between steps (`Controller.wait_between_steps`, at most
    0.1 s): an executor's write waits there, so the loop's refresh, folds and records never queue
    behind executors for the ledger's lock (a transition's latency is the loop's; an executor's
    answer is outside it and waits one step at most)."""
    _append_turn: threading.Lock = field(default_factory=threading.Lock)
    """One executor thread at a time writes (and checks a `.started`); the others queue here.
    Executors' appends are serial anyway (the ledger writes under its own lock), but a lock is not
    fair: behind 50 workers starting at once the control loop waited for most of them at each
    step. Order: append turn, start_lock, the ledger; never emit while holding start_lock."""
    _type_index: dict[str, list[KeptnEvent]] = field(default_factory=dict)
    _indexed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, event: KeptnEvent) -> None:
        etype = event.etype
        with self._append_turn:
            self.between_steps()
            if etype is not None and etype.is_task and etype.kind == "started" and event.triggeredid:
                with self.start_lock:
                    if self.task_finished(event):
                        raise TaskAlreadyFinished(
                            f"task {etype.task} ({event.triggeredid}) already has a .finished event: not starting it"
                        )
                    self.ledger.append(event)
            else:
                self.ledger.append(event)
        self.on_emit()

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
