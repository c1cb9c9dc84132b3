"""The project overview: one row per service, one column per stage in the shipyard's order.

Each cell says what runs there (the image the newest deployment put in place) and
how the newest sequence of that service in that stage went, with a link to it.
The records are `statusview`'s (via the `Board`), so a cell says what `reconciler
get sequences --stage S --service X` says last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from reconciler.statusview import SequenceStatus
from reconciler.ui import fmt
from reconciler.ui.board import Deployed, Key


@dataclass(frozen=True)
class StageCell:
    stage: str
    last: SequenceStatus | None
    deployed: Deployed | None
    outcome: str
    label: str
    ago: str
    at: str


@dataclass(frozen=True)
class ServiceRow:
    service: str
    cells: list[StageCell]


def build(
    project: str,
    stages: list[str],
    services: Iterable[str],
    newest: Mapping[Key, SequenceStatus],
    deployed: Mapping[Key, Deployed],
    now: datetime,
) -> tuple[list[str], list[ServiceRow]]:
    """Stages (shipyard order, then stages only the ledger knows) and rows sorted by service."""
    known = list(stages)
    names = set(services)
    for proj, stage, service in list(newest) + list(deployed):
        if project and proj != project:
            continue
        names.add(service)
        if stage not in known:
            known.append(stage)
    rows = []
    for service in sorted(n for n in names if n):
        cells = []
        for stage in known:
            key = (project, stage, service)
            last = newest.get(key)
            outcome = fmt.outcome_of(last.state, last.result) if last else ""
            at = (last.finished_at or last.triggered_at) if last else ""
            cells.append(
                StageCell(
                    stage=stage,
                    last=last,
                    deployed=deployed.get(key),
                    outcome=outcome,
                    label=fmt.label(outcome) if outcome else "",
                    ago=fmt.ago(at, now),
                    at=at,
                )
            )
        rows.append(ServiceRow(service, cells))
    return known, rows
