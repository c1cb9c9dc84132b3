"""The built-in approval task (Keptn's approval-service, spec 3).

`pass`/`warning` properties say `automatic` or `manual` for the previous task's
result. Automatic answers at once; manual sends `.started` and then waits — the
wait is durable because it is nothing but an open task in the ledger, answered
later by `reconciler approve|decline` or by an approval file committed on `main`.
"""

from __future__ import annotations

from typing import Any

from reconciler.executors.base import TaskContext, finished_event, started_event
from reconciler.formats.events import KeptnEvent, derived_id, task_type

SOURCE = "approval-service"


def strategy(data: dict[str, Any]) -> tuple[str, str]:
    """(input result, strategy) for an approval.triggered payload (spec 3 steps 1-2)."""
    result = str(data.get("result") or "")
    if not result:
        evaluation = data.get("evaluation")
        if isinstance(evaluation, dict):
            result = str(evaluation.get("result") or "")
    props = data.get("approval") if isinstance(data.get("approval"), dict) else {}
    assert isinstance(props, dict)
    if result in ("pass", "warning"):
        return result, str(props.get(result) or "manual")
    if result == "fail":
        return result, "automatic"
    return result, "manual"


def decision(data: dict[str, Any]) -> str | None:
    """`pass`/`fail` when the approval answers itself, None when a person must decide."""
    result, strat = strategy(data)
    if result in ("pass", "warning") and strat == "automatic":
        return "pass"
    if result == "fail":
        return "fail"
    return None


class ApprovalExecutor:
    name = SOURCE

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        return event.type == task_type("approval", "triggered")

    def run(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> None:
        result, strat = strategy(event.data)
        if not started:
            ctx.emit(
                started_event(event, SOURCE, {"message": f"Approval strategy for result '{result}': {strat}"})
            )
        verdict = decision(event.data)
        if verdict is not None:
            ctx.emit(finished_event(event, SOURCE, result=verdict, status="succeeded", message=""))


def manual_answer(
    triggered: KeptnEvent,
    *,
    approve: bool,
    approver: str,
    message: str = "",
    source: str = "reconciler-cli",
    via: str = "cli",
) -> KeptnEvent:
    """The `approval.finished` a person sends (spec 3, manual approval)."""
    data: dict[str, Any] = {
        "project": triggered.project,
        "stage": triggered.stage,
        "service": triggered.service,
        "status": "succeeded",
        "result": "pass" if approve else "fail",
        "message": message,
        "approval": {"approver": approver, "decision": "approved" if approve else "declined", "via": via},
    }
    if triggered.data.get("labels"):
        data["labels"] = triggered.data["labels"]
    return KeptnEvent(
        id=derived_id(triggered.id, "manual-approval"),
        source=source,
        type=task_type("approval", "finished"),
        shkeptncontext=triggered.shkeptncontext,
        triggeredid=triggered.id,
        gitcommitid=triggered.gitcommitid,
        data=data,
    )
