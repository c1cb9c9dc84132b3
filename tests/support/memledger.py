"""A list-backed stand-in for the git ledger with the same contract (idempotent by id),
for testing the controller's decisions without git in the way. The real ledger has its
own tests against real repositories."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from reconciler.formats.events import KeptnEvent


class MemoryLedger:
    def __init__(self, events: Sequence[KeptnEvent] = ()) -> None:
        self._events: list[KeptnEvent] = list(events)
        self._ids = {e.id for e in self._events}
        self._cond = threading.Condition()

    def append(self, event: KeptnEvent) -> bool:
        with self._cond:
            if event.id in self._ids:
                return False
            self._ids.add(event.id)
            self._events.append(event)
            self._cond.notify_all()
            return True

    def extend(self, events: Iterable[KeptnEvent]) -> list[bool]:
        """All at once, as the git ledger moves its ref once for a batch."""
        with self._cond:
            return [self.append(event) for event in events]

    def events(self) -> Sequence[KeptnEvent]:
        with self._cond:
            return list(self._events)

    def refresh(self) -> list[KeptnEvent]:
        return []

    def wait_for_change(self, timeout: float) -> bool:
        with self._cond:
            n = len(self._events)
            self._cond.wait(timeout)
            return len(self._events) != n

    def types(self) -> list[str]:
        return [e.type for e in self.events()]
