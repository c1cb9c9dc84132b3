"""The approval task's decisions (Keptn's approval-service, spec 3): which strategy applies to
the previous task's result, whether it answers itself, and the answer a person sends.

Pure: the executor, the simulation and every way a person approves (CLI, API, approval
files) use the same rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reconciler.core.outcomes import answer
from reconciler.formats.events import KeptnEvent, derived_id

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


def manual_answer(
    triggered: KeptnEvent,
    *,
    approve: bool,
    approver: str,
    message: str = "",
    source: str = "reconciler-cli",
    via: str = "cli",
    now: datetime,
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
    return answer(
        triggered, source, "finished", data, now=now, id_=derived_id(triggered.id, "manual-approval")
    )
