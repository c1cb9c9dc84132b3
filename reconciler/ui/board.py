"""The overview's memory: each service's newest sequence per stage, and the image deployed there.

The overview reads the ingress's `LedgerState`, which forgets all but the newest
finished executions as it folds (memory stays flat at 100,000 events). A service
that has not delivered for a while would then show nothing. So the board looks at
the state before each compaction (`LedgerState.before_compact`) and on every page
load, and keeps, per (project, stage, service), the newest execution's status as
`statusview.sequence_status` made it (the record `get sequences` prints) and the
newest image a deployment task put there. Finished executions never change, so their
record is kept; an active one is looked up in the state on each render.

Executions are ranked by when the board first saw them while walking `state.order`
(arrival order, newest last; new executions only ever appear at its end), so
"newer" needs neither timestamps nor ledger positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from reconciler.core.engine_state import EngineState
from reconciler.runtime.statusview import SequenceStatus, deployed_at, image_of, sequence_status

__all__ = ["Board", "Cell", "Deployed", "deployed_at", "image_of"]

Key = tuple[str, str, str]


@dataclass
class Cell:
    rank: int
    trigger_id: str
    finished: SequenceStatus | None
    """The record once the execution has finished (it never changes again); None while active."""


@dataclass(frozen=True)
class Deployed:
    rank: int
    image: str
    context: str
    at: str
    """When the deployment task finished."""


class Board:
    """Per (project, stage, service): the newest execution and the newest deployed image.

    Not thread-safe by itself: call it inside `LedgerState.read` (or its hook), which
    holds the state's lock.
    """

    def __init__(self) -> None:
        self.cells: dict[Key, Cell] = {}
        self.deployed: dict[Key, Deployed] = {}
        self._ranks: dict[str, int] = {}
        self._next = 0

    def observe(self, state: EngineState, now: datetime, *, keep: int | None = None) -> None:
        """Note what `state` holds. Before a compaction that keeps the newest `keep` finished
        executions, only those about to be forgotten get their record made now; the others
        are made when a page first needs them (`newest`)."""
        doomed: set[str] | None = None
        if keep is not None:
            finished = [t for t in state.order if not state.executions[t].active]
            doomed = set(finished[: max(0, len(finished) - keep)])
        ranks: dict[str, int] = {}
        for tid in state.order:
            rank = self._ranks.get(tid)
            if rank is None:
                self._next += 1
                rank = self._next
            ranks[tid] = rank
            ex = state.executions[tid]
            key = ex.key
            cell = self.cells.get(key)
            if cell is None or cell.rank < rank:
                cell = self.cells[key] = Cell(rank, tid, None)
            if (
                cell.rank == rank
                and cell.finished is None
                and not ex.active
                and (doomed is None or tid in doomed)
            ):
                cell.finished = sequence_status(ex, now)
            known = self.deployed.get(key)
            if known is None or known.rank < rank:
                image = image_of(ex)
                at = deployed_at(ex) if image else None
                if at is not None:
                    self.deployed[key] = Deployed(rank, image, ex.context, at)
        self._ranks = ranks

    def newest(self, state: EngineState, now: datetime) -> dict[Key, SequenceStatus]:
        """Each key's newest sequence as `sequence_status` shows it now (`observe` first)."""
        out: dict[Key, SequenceStatus] = {}
        for key, cell in self.cells.items():
            if cell.finished is not None:
                out[key] = cell.finished
                continue
            ex = state.executions.get(cell.trigger_id)
            if ex is not None:
                out[key] = status = sequence_status(ex, now)
                if not ex.active:
                    cell.finished = status
        return out
