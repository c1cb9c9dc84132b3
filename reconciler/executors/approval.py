"""The built-in approval task (Keptn's approval-service, spec 3).

`pass`/`warning` properties say `automatic` or `manual` for the previous task's
result (`core.approval`). Automatic answers at once; manual sends `.started` and then
waits — the wait is durable because it is nothing but an open task in the ledger,
answered later by `reconciler approve|decline` or by an approval file committed on `main`.
"""

from __future__ import annotations

from reconciler.core.approval import SOURCE, decision, strategy
from reconciler.core.outcomes import STALLED_WAITING, Outcome, Stalled, Succeeded, started_event
from reconciler.executors.base import TaskContext, TaskExecutor
from reconciler.formats.events import KeptnEvent, task_type


class ApprovalExecutor(TaskExecutor):
    name = SOURCE

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        return event.type == task_type("approval", "triggered")

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        result, strat = strategy(event.data)
        if not started:
            message = f"Approval strategy for result '{result}': {strat}"
            ctx.emit(started_event(event, SOURCE, {"message": message}, now=ctx.now()))
        verdict = decision(event.data)
        if verdict is None:
            return Stalled(STALLED_WAITING, "a person decides (reconciler approve|decline, an approval file)")
        return Succeeded(result="pass" if verdict == "pass" else "fail")
