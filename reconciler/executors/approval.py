"""The built-in approval task (Keptn's approval-service, spec 3).

`pass`/`warning` properties say `automatic` or `manual` for the previous task's
result (`core.approval`). Automatic answers at once; manual sends `.started` and then
waits — the wait is durable because it is nothing but an open task in the ledger,
answered later by `reconciler approve|decline` or by an approval file committed on `main`.
"""

from __future__ import annotations

from reconciler.core.approval import SOURCE, decision, strategy
from reconciler.core.outcomes import finished_event, started_event
from reconciler.executors.base import TaskContext
from reconciler.formats.events import KeptnEvent, task_type


class ApprovalExecutor:
    name = SOURCE

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        return event.type == task_type("approval", "triggered")

    def run(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> None:
        result, strat = strategy(event.data)
        if not started:
            ctx.emit(
                started_event(
                    event,
                    SOURCE,
                    {"message": f"Approval strategy for result '{result}': {strat}"},
                    now=ctx.now(),
                )
            )
        verdict = decision(event.data)
        if verdict is not None:
            ctx.emit(
                finished_event(event, SOURCE, result=verdict, status="succeeded", message="", now=ctx.now())
            )
