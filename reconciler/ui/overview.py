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

from reconciler.runtime.statusview import SequenceStatus
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


ATTENTION = frozenset({"fail", "timedOut", "aborted", "waitingForApproval", "paused"})
"""Outcomes a person should look at: the overview can show only services with one of them."""
PAGE_SIZE = 100
"""Services per page: 1,000 rows are a page nobody reads and a megabyte to refresh live."""


@dataclass(frozen=True)
class Overview:
    stages: list[str]
    rows: list[ServiceRow]
    total: int
    """Services matching the filter (on all pages)."""
    services: int
    """Services known at all."""
    attention: int
    """Services with a stage whose newest sequence needs a person (ATTENTION)."""
    page: int
    pages: int


def _outcome(last: SequenceStatus | None) -> str:
    return fmt.outcome_of(last.state, last.result) if last else ""


def build(
    project: str,
    stages: list[str],
    services: Iterable[str],
    newest: Mapping[Key, SequenceStatus],
    deployed: Mapping[Key, Deployed],
    now: datetime,
    *,
    contains: str = "",
    only_attention: bool = False,
    page: int = 1,
    page_size: int | None = None,
) -> Overview:
    """Stages (shipyard order, then stages only the ledger knows) and one page of rows sorted by service."""
    known = list(stages)
    names = set(services)
    for proj, stage, service in list(newest) + list(deployed):
        if project and proj != project:
            continue
        names.add(service)
        if stage not in known:
            known.append(stage)
    ordered = sorted(n for n in names if n)
    needs = {
        service
        for service in ordered
        if any(_outcome(newest.get((project, stage, service))) in ATTENTION for stage in known)
    }
    chosen = [n for n in ordered if contains.lower() in n.lower()] if contains else ordered
    if only_attention:
        chosen = [n for n in chosen if n in needs]
    page_size = page_size or PAGE_SIZE
    pages = max(1, (len(chosen) + page_size - 1) // page_size)
    page = min(max(1, page), pages)
    rows = []
    for service in chosen[(page - 1) * page_size : page * page_size]:
        cells = []
        for stage in known:
            key = (project, stage, service)
            last = newest.get(key)
            outcome = _outcome(last)
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
    return Overview(
        stages=known,
        rows=rows,
        total=len(chosen),
        services=len(ordered),
        attention=len(needs),
        page=page,
        pages=pages,
    )
