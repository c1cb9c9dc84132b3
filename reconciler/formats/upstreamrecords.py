"""The reconciler's own records of what it made of the upstream (`reconciler.upstream.*`).

Each poll's verdicts are events in the ledger like any other: a branch's commit accepted
(`accepted`) or rejected with its problems (`rejected`), history rewritten
(`force-pushed`), a branch deleted (`branch-deleted`). Folded, they say which commit of
each branch is served, which was judged last, and why a branch is not moving
(`UpstreamRecords`; the fold is `upstream/records.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.formats.problems import Problem

SOURCE = "reconciler-upstream"
ACCEPTED = "reconciler.upstream.accepted"
REJECTED = "reconciler.upstream.rejected"
FORCE_PUSHED = "reconciler.upstream.force-pushed"
BRANCH_DELETED = "reconciler.upstream.branch-deleted"
UPSTREAM_TYPES = frozenset({ACCEPTED, REJECTED, FORCE_PUSHED, BRANCH_DELETED})


@dataclass(frozen=True)
class Rejection:
    commit: str
    problems: tuple[Problem, ...]


@dataclass
class UpstreamRecords:
    """The folded records: what is served and what was judged, per branch."""

    accepted: dict[str, str] = field(default_factory=dict)
    """Branch -> the commit being served (a deleted branch keeps serving its last good one)."""
    seen: dict[str, str] = field(default_factory=dict)
    """Branch -> the last tip judged (accepted or rejected)."""
    rejected: dict[str, Rejection] = field(default_factory=dict)
    """Branches whose newest commit was rejected, with the problems."""
    deleted: set[str] = field(default_factory=set)

    def baseline(self) -> dict[str, str]:
        """Branch -> last recorded tip: where the next poll's diff starts."""
        return {b: s for b, s in self.seen.items() if b not in self.deleted}

    def served(self) -> Mapping[str, str]:
        return dict(self.accepted)
