"""What every task executor is: the contract between the controller and the work.

The controller hands each open `<task>.triggered` event to the executors that claim it
(`claims`, cheap and side-effect free) and runs each claimed task on that executor's
own workers: `run` = `attempt`, then the answer the outcome calls for is recorded.

`attempt(event, ctx, started=...)` does the work. Before it launches anything it records
`.started` through `ctx.emit` (write-ahead: appended to the ledger before anything else
sees it; refused with `TaskAlreadyFinished` when the engine ended the task meanwhile, so
nothing launches); intermediate events of the conversation go the same way. It returns a
typed `core.outcomes.Outcome` (`Succeeded`, `Failed`, `Retry`, `Stalled`) and never
writes the `.finished` itself: `run` turns the outcome into it (`answer_events`) and
records it. An exception is an outcome too: the controller records
`Failed("ExecutorCrashed", ...)`.

After a restart the controller calls `run` again with `started=True` for work that was
started but not finished; executors adopt what they already launched (Kubernetes Job
names and local job directories are derived from the triggered id) instead of launching
it again. Response ids derive from the triggered id and the executor's name, so
answering twice (after a crash, or from two replicas) records once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from reconciler.core.outcomes import Outcome, answer_events
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
        the guard the engine holds while it records deadlines; otherwise `TaskAlreadyFinished`
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

    def run(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        """Attempt the task and record its answer; blocking (see `TaskExecutor.run`)."""
        ...


class TaskExecutor:
    """Base of the executors: subclasses implement `claims` and `attempt`."""

    name: str

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        raise NotImplementedError

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        """Do the work: record `.started` (unless `started`) before launching anything, then
        return how it ended."""
        raise NotImplementedError

    def run(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        outcome = self.attempt(event, ctx, started=started)
        record_answer(ctx, event, self.name, outcome)
        return outcome


def record_answer(
    ctx: TaskContext, triggered: KeptnEvent, source: str, outcome: Outcome, *, with_started: bool = False
) -> None:
    """Collect: the events `outcome` calls for, recorded through `ctx` (write-ahead)."""
    for event in answer_events(triggered, source, outcome, now=ctx.now(), with_started=with_started):
        ctx.emit(event)
