"""What the outside world was seen to do, as data: the facts the observe step produces and
admission reads. An upstream poll yields `UpstreamChanges` (every branch tip, and how each
moved branch changed, with its new commits); nothing here reads git or decides anything.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class CommitInfo(BaseModel):
    """One new upstream commit: who, what it touched, and its trailers (e.g. Reconciler-Origin)."""

    sha: str
    parents: list[str] = Field(default_factory=list)
    author_name: str = ""
    author_email: str = ""
    time: datetime
    summary: str = ""
    trailers: dict[str, str] = Field(default_factory=dict)
    paths: list[str] = Field(default_factory=list)


class BranchChange(BaseModel):
    """How one branch moved since the last recorded poll."""

    branch: str
    old: str | None = None
    new: str | None = None
    forced: bool = False
    """The old tip is not an ancestor of the new one (history was rewritten)."""
    paths: list[str] = Field(default_factory=list)
    """Every path whose content differs between the old and the new tip."""
    services: list[str] = Field(default_factory=list)
    """Top-level directories with a changed path (services, on a stage branch)."""
    commits: list[CommitInfo] = Field(default_factory=list)
    """New commits, oldest first, each with the paths it changed against its first parent."""
    commits_truncated: bool = False

    @property
    def created(self) -> bool:
        return self.old is None and self.new is not None

    @property
    def deleted(self) -> bool:
        return self.new is None


class UpstreamChanges(BaseModel):
    """What one poll found: every branch tip after the fetch, and the branches that moved."""

    polled_at: datetime
    tips: dict[str, str]
    branches: list[BranchChange] = Field(default_factory=list)
    since_served: dict[str, BranchChange] = Field(default_factory=dict)
    """Moved stage branch -> how it changed since the commit being served (which differs from
    the last one judged when that was rejected): the range commit-to-deploy looks at."""
    values: dict[str, bytes | None] = Field(default_factory=dict)
    """`<commit>:<service>/values.yaml` -> the file at that commit, for the commits of
    `since_served` that touched it (and each tip): what commit-to-deploy reads."""

    def get(self, branch: str) -> BranchChange | None:
        for change in self.branches:
            if change.branch == branch:
                return change
        return None
