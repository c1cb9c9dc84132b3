"""Pending manual approvals, each with the evaluation that led to it and how to answer it.

The list is `statusview.pending_approvals` (what `reconciler status` and `/v1/status`
list); the evaluation is the newest `evaluation.finished` of the same context
recorded before the approval was asked for (the qa gate a production approval
waits on). Answering goes through the API's approval route with the token, from
the page's script; the equivalent CLI commands are shown next to the buttons.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from reconciler.formats.events import KeptnEvent
from reconciler.runtime.statusview import PendingApproval
from reconciler.ui import fmt
from reconciler.ui.evaluations import FINISHED


@dataclass(frozen=True)
class ApprovalCard:
    approval: PendingApproval
    waiting: str
    evaluation: KeptnEvent | None
    score: str
    approve_command: str
    decline_command: str
    api_path: str


def _score(event: KeptnEvent | None) -> str:
    if event is None:
        return ""
    block = event.data.get("evaluation")
    return fmt.number(block.get("score")) if isinstance(block, dict) else ""


def _command(verb: str, approval: PendingApproval) -> str:
    parts = ["reconciler", verb, approval.context, "--stage", approval.stage]
    if approval.service:
        parts += ["--service", approval.service]
    parts += ["-m", "..."]
    return shlex.join(parts)


def build(
    pending: Sequence[PendingApproval],
    context_events: Callable[[str], Sequence[KeptnEvent]],
    now: datetime,
) -> list[ApprovalCard]:
    cards = []
    for approval in pending:
        evaluation = None
        asked = fmt.parse(approval.waiting_since)
        for event in context_events(approval.context):
            at = fmt.parse(event.time)
            if event.type == FINISHED and (asked is None or (at is not None and at <= asked)):
                evaluation = event
        cards.append(
            ApprovalCard(
                approval=approval,
                waiting=fmt.ago(approval.waiting_since, now),
                evaluation=evaluation,
                score=_score(evaluation),
                approve_command=_command("approve", approval),
                decline_command=_command("decline", approval),
                api_path=f"/v1/sequence/{quote(approval.project, safe='')}/{quote(approval.context, safe='')}/approval",
            )
        )
    return cards
