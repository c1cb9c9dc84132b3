"""Config snapshots: which commit of each branch the reconciler serves, and why.

A commit people push is a proposal. The upstream is validated as a whole with each
changed branch at its new tip and every other branch at the commit being served;
a branch whose new commit has errors (or breaks a link from another branch) is
rejected — its problems go to the ledger and the log — and the last good commit of
that branch keeps serving. Deleted branches keep serving their last good commit
(kept alive in the mirror) until the shipyard stops naming them.

The store is the shell around `core.admission.admit_upstream` and a fold over the
ledger, like the engine: `decide(changes)` observes what commit-to-deploy needs (the
served ranges and values files, read from git), asks the pure admission which
`reconciler.upstream.*` events (and commit-to-deploy triggers) the poll implies, and
logs the verdicts, without changing anything; the caller appends the events, then
`fold(events)` folds them in (`upstream/records.py`). `restore(ledger.events())` at start
rebuilds the same state, and `baseline()` tells the poller which tips are already
recorded — so a crash at any point between fetch and append leads to the same events on
the next poll, with the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pygit2

from reconciler.base.logs import get_logger
from reconciler.core.admission import admit_upstream, project_of
from reconciler.core.observations import UpstreamChanges
from reconciler.core.validation import UpstreamConfig, UpstreamFiles, ValidationResult, Validator
from reconciler.formats.events import KeptnEvent
from reconciler.formats.problems import ConfigError, Problem
from reconciler.formats.upstreamrecords import (
    Rejection,
    UpstreamRecords,
)
from reconciler.upstream import records
from reconciler.upstream.files import GitFiles
from reconciler.upstream.poll import with_served_ranges

log = get_logger("reconciler.upstream")

MAX_PROBLEMS = 50
"""Problems recorded per rejection; the count says how many more there were."""


@dataclass(frozen=True)
class ConfigSnapshot:
    """The configuration being served: validated, pinned to one commit per branch."""

    main_branch: str
    project: str
    accepted: Mapping[str, str] = field(default_factory=dict)
    """Branch -> the commit new sequences read (their `gitcommitid`)."""
    seen: Mapping[str, str] = field(default_factory=dict)
    """Branch -> the last tip judged (accepted or rejected)."""
    rejected: Mapping[str, Rejection] = field(default_factory=dict)
    """Branches whose newest commit was rejected, with the problems."""
    deleted: frozenset[str] = frozenset()
    config: UpstreamConfig | None = None
    warnings: tuple[Problem, ...] = ()

    def commit(self, branch: str) -> str | None:
        return self.accepted.get(branch)

    @property
    def ready(self) -> bool:
        """Whether a valid shipyard is being served (nothing can run before)."""
        return self.config is not None and self.config.shipyard is not None


class SnapshotStore:
    """Holds the served snapshot; decides what each poll means; rebuilt from the ledger."""

    def __init__(
        self,
        files: UpstreamFiles,
        *,
        main_branch: str = "main",
        project: str = "",
        deploy_on_commit: bool = True,
        local_commands: Sequence[str] | None = None,
    ) -> None:
        self.files = files
        self.local_commands = None if local_commands is None else list(local_commands)
        self.main_branch = main_branch
        self.default_project = project
        self.deploy_on_commit = deploy_on_commit
        self._state = UpstreamRecords()
        self.validator = Validator(files, main_branch, local_commands)
        self._snapshot = ConfigSnapshot(main_branch=main_branch, project=project)

    # ------------------------------------------------------------------ reading

    def current(self) -> ConfigSnapshot:
        return self._snapshot

    def baseline(self) -> dict[str, str]:
        return self._state.baseline()

    # ------------------------------------------------------------------ deciding

    def observe(self, changes: UpstreamChanges) -> UpstreamChanges:
        """The poll's changes with the served ranges and values files commit-to-deploy reads."""
        repo = self.files.repo if isinstance(self.files, GitFiles) else None
        if repo is None or not self.deploy_on_commit:
            return changes
        return with_served_ranges(
            repo, changes, self._state.accepted, self.files.read, main_branch=self.main_branch
        )

    def decide(self, changes: UpstreamChanges) -> list[KeptnEvent]:
        """Events this poll implies, given the recorded state (observe, then the pure admission).
        Changes nothing."""
        admission = admit_upstream(
            self.observe(changes),
            self._state,
            self.validator,
            main_branch=self.main_branch,
            default_project=self.default_project,
            deploy_on_commit=self.deploy_on_commit,
        )
        for branch, commit, problems in admission.rejected:
            log.error(
                "upstream.rejected",
                branch=branch,
                commit=commit[:12],
                problems=[str(p) for p in problems[:10]],
                problem_count=len(problems),
            )
        for problem in admission.deploy_problems:
            log.error("upstream.deploy_values_invalid", problem=str(problem))
        return list(admission.events)

    # ------------------------------------------------------------------ folding

    def fold(self, events: Iterable[KeptnEvent]) -> None:
        """Fold recorded events into the served snapshot (call after the ledger took them)."""
        changed = False
        for event in events:
            changed |= records.fold(self._state, event)
        if changed:
            self._rebuild()

    def restore(self, events: Iterable[KeptnEvent]) -> None:
        """Rebuild from the ledger (at start, before the first poll).

        Only `reconciler.upstream.*` records count; a ledger view that can select them
        by type (the git ledger's) decodes just those, not every event.
        """
        self._state = records.fold_all(events)
        self._rebuild()

    def apply(self, changes: UpstreamChanges, record: Any) -> list[KeptnEvent]:
        """decide -> record(events) (the ledger append) -> fold them; for callers without an engine."""
        events = self.decide(changes)
        if events:
            record(events)
            self.fold(events)
        return events

    def _rebuild(self) -> None:
        state = self._state
        config: UpstreamConfig | None = None
        warnings: tuple[Problem, ...] = ()
        result: ValidationResult | None = None
        if state.accepted:
            try:
                result = self.validator.validate(dict(state.accepted))
            except (ConfigError, pygit2.GitError, KeyError) as exc:  # history unreadable: keep what we had
                log.error("upstream.snapshot_unreadable", error=str(exc))
                return
            config = result.config
            warnings = tuple(result.warnings)
            if result.errors:  # accepted under an older validator: keep serving, say so
                log.warning("upstream.served_with_problems", problems=[str(p) for p in result.errors[:10]])
        self._snapshot = ConfigSnapshot(
            main_branch=self.main_branch,
            project=project_of(result, self.default_project),
            accepted=dict(state.accepted),
            seen=dict(state.seen),
            rejected=dict(state.rejected),
            deleted=frozenset(state.deleted),
            config=config,
            warnings=warnings,
        )
