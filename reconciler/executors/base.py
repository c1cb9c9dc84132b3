"""What every task executor is, and the helpers they use to answer.

The app hands each open `<task>.triggered` event to the executors that claim it.
An executor answers with `.started` and `.finished` events through `ctx.emit`,
which appends them to the ledger before anything else sees them. Response ids are
derived from the triggered id and the executor's name, so answering twice (after a
crash, or from two replicas) records once. After a restart the app calls `run`
again with `started=True` for work that was started but not finished; executors
adopt what they already launched (Kubernetes Job names and local job directories
are derived from the triggered id) instead of launching it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings


class TaskAlreadyFinished(Exception):
    """The task has a `.finished` in the ledger (e.g. the engine timed it out while it waited for a
    worker): it must not start. Raised by `TaskContext.emit` for its `.started`; the control loop
    drops the run without answering again."""


class TaskContext(Protocol):
    """What an executor may use; implemented by the app (and by test harnesses)."""

    settings: Settings

    def emit(self, event: KeptnEvent) -> None:
        """Append to the ledger (idempotent by id); returns once recorded.

        A task's `.started` is recorded only while the task has no `.finished`, checked under
        the lock the engine holds while it decides deadlines; otherwise `TaskAlreadyFinished`
        is raised and nothing is recorded: an executor emits `.started` before it launches
        anything, so a task the engine gave up on never runs."""
        ...

    def read_file(self, stage: str, path: str, commit: str | None = None) -> bytes | None:
        """A file of the stage branch, at `commit` (the pinned gitcommitid) when given."""
        ...

    def list_files(self, stage: str, prefix: str, commit: str | None = None) -> list[str]: ...

    def now(self) -> datetime: ...

    def events(self, *, type_: str | None = None, context: str | None = None) -> Sequence[KeptnEvent]:
        """Recorded events, oldest first (a read-only view of the ledger)."""
        ...


class Executor(Protocol):
    """A component answering `<task>.triggered` events."""

    name: str
    """Used as the CloudEvent `source` of its answers."""

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        """Whether this executor will answer the event (cheap, no side effects)."""
        ...

    def run(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> None:
        """Answer the event: `.started` (unless `started`) then, when done, `.finished`. Blocking."""
        ...
