"""The one fold of the `reconciler.upstream.*` records (formats/upstreamrecords.py).

The running reconciler's snapshot store, a standby's API and the CLI all ask "which commit
of each branch did the reconciler accept?" of the same ledger; they answer it with this
fold, so none of them can read a branch the reconciler would not serve.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol, runtime_checkable

from reconciler.formats.events import KeptnEvent
from reconciler.formats.problems import Problem
from reconciler.formats.upstreamrecords import (
    ACCEPTED,
    BRANCH_DELETED,
    REJECTED,
    UPSTREAM_TYPES,
    Rejection,
    UpstreamRecords,
)


@runtime_checkable
class TypeSelectable(Protocol):
    """Recorded events that can be narrowed by type without decoding the rest (the ledger's view)."""

    def select(self, *, types: Collection[str] | None = None) -> list[KeptnEvent]: ...


def fold(records: UpstreamRecords, event: KeptnEvent) -> bool:
    """Fold one recorded event in; False when it is not an upstream record."""
    if event.type not in UPSTREAM_TYPES:
        return False
    data = event.data
    branch = str(data.get("branch") or "")
    commit = str(data.get("commit") or "")
    if not branch:
        return False
    if event.type == ACCEPTED and commit:
        records.accepted[branch] = commit
        records.seen[branch] = commit
        records.rejected.pop(branch, None)
        records.deleted.discard(branch)
    elif event.type == REJECTED and commit:
        records.seen[branch] = commit
        problems = tuple(Problem.model_validate(p) for p in data.get("problems") or [] if isinstance(p, dict))
        records.rejected[branch] = Rejection(commit, problems)
        records.deleted.discard(branch)
    elif event.type == BRANCH_DELETED:
        records.deleted.add(branch)
        records.seen.pop(branch, None)
        records.rejected.pop(branch, None)
    return True


def fold_all(events: Iterable[KeptnEvent], records: UpstreamRecords | None = None) -> UpstreamRecords:
    """The records of a ledger; a ledger view that selects by type decodes only them."""
    out = records if records is not None else UpstreamRecords()
    if isinstance(events, TypeSelectable):
        events = events.select(types=UPSTREAM_TYPES)
    for event in events:
        fold(out, event)
    return out


def accepted_pins(events: Iterable[KeptnEvent]) -> dict[str, str]:
    """Branch -> the commit the running reconciler serves, from the ledger's records."""
    return fold_all(events).accepted
