"""An in-memory TaskContext for testing executors without the app: events go to a list,
files come from any UpstreamFiles (a git repository or a directory)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from reconciler.base.clock import utcnow
from reconciler.core.validation import UpstreamFiles
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings


class MemoryContext:
    def __init__(
        self, files: UpstreamFiles | None = None, settings: Settings | None = None, clock: Any = None
    ) -> None:
        self.files = files
        self.settings = settings or Settings()
        self.recorded: list[KeptnEvent] = []
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._clock = clock

    def emit(self, event: KeptnEvent) -> None:
        with self._lock:
            if event.id in self._ids:
                return
            self._ids.add(event.id)
            self.recorded.append(event)

    def read_file(self, stage: str, path: str, commit: str | None = None) -> bytes | None:
        return self.files.read(stage, path, commit) if self.files else None

    def list_files(self, stage: str, prefix: str, commit: str | None = None) -> list[str]:
        return self.files.list(stage, prefix, commit) if self.files else []

    def now(self) -> datetime:
        return self._clock() if self._clock else utcnow()

    def events(self, *, type_: str | None = None, context: str | None = None) -> Sequence[KeptnEvent]:
        with self._lock:
            return [
                e
                for e in self.recorded
                if (type_ is None or e.type == type_) and (context is None or e.shkeptncontext == context)
            ]

    def types(self) -> list[str]:
        return [e.type for e in self.recorded]


@pytest.fixture
def memory_context() -> type[MemoryContext]:
    return MemoryContext
