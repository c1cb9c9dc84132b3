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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pygit2

from reconciler.base.logs import get_logger
from reconciler.core.admission import admit_upstream, project_of
from reconciler.core.configsnapshot import ConfigSnapshot
from reconciler.core.observations import UpstreamChanges
from reconciler.core.validation import UpstreamConfig, UpstreamFiles, ValidationResult, Validator
from reconciler.formats.events import KeptnEvent
from reconciler.formats.metadata import load_project_metadata
from reconciler.formats.problems import ConfigError, Problem
from reconciler.formats.shipyard import Shipyard, load_shipyard
from reconciler.formats.upstreamrecords import (
    UpstreamRecords,
)
from reconciler.upstream import records
from reconciler.upstream.files import GitFiles
from reconciler.upstream.poll import with_served_ranges

log = get_logger("reconciler.upstream")

SHIPYARD = "shipyard.yaml"
METADATA = "metadata.yaml"

MAX_PROBLEMS = 50
"""Problems recorded per rejection; the count says how many more there were."""


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
        self._shipyards: dict[str, Shipyard | None] = {}
        """Shipyards read at main commits running sequences are pinned to (a commit never changes)."""

    # ------------------------------------------------------------------ reading

    def current(self) -> ConfigSnapshot:
        return self._snapshot

    def snapshot_for(self, shipyard_commits: Iterable[str]) -> ConfigSnapshot:
        """The current snapshot, knowing the shipyards at these main commits too (what plan
        needs for the sequences running; read from git once per commit, here in the shell)."""
        current = self._snapshot
        wanted = {c for c in shipyard_commits if c and c != current.main_commit()}
        for commit in wanted - set(self._shipyards):
            if len(self._shipyards) > 64:
                self._shipyards.clear()
            self._shipyards[commit] = read_shipyard(self.files, self.main_branch, commit)[0]
        return current.with_shipyards({c: self._shipyards.get(c) for c in wanted})

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


def read_shipyard(files: UpstreamFiles, main_branch: str, commit: str | None) -> tuple[Shipyard | None, str]:
    """The shipyard on main at `commit` (the tip when None), or None and why."""
    raw = files.read(main_branch, SHIPYARD, commit)
    if raw is None:
        return None, f"{main_branch}:{SHIPYARD} does not exist"
    try:
        return load_shipyard(raw, f"{main_branch}:{SHIPYARD}"), ""
    except ConfigError as exc:
        return None, str(exc).splitlines()[0]


def snapshot_of(
    files: UpstreamFiles, main_branch: str = "main", pins: Mapping[str, str] | None = None
) -> ConfigSnapshot:
    """A snapshot read without validation, for the CLI and a standby: the shipyard, project and
    services at the commits the running reconciler accepted (`pins`, from the ledger's records;
    branches not pinned at their tip), so they refuse what the reconciler would refuse."""
    tips = files.branches()
    pinned = dict(pins or {})
    accepted = {**tips, **pinned}
    main = accepted.get(main_branch)
    shipyard, error = read_shipyard(files, main_branch, pinned.get(main_branch))
    listed = {
        stage: frozenset(
            path.split("/", 1)[0] for path in files.list(stage, "", pinned.get(stage)) if "/" in path
        )
        for stage in (shipyard.stage_names if shipyard is not None else [])
        if stage in tips
    }
    return ConfigSnapshot(
        main_branch=main_branch,
        project=_project_name(files, main_branch, pinned.get(main_branch)),
        accepted=accepted,
        shipyards={main: shipyard} if main else {},
        listed=listed,
        shipyard_error=error,
    )


def _project_name(files: UpstreamFiles, main_branch: str, commit: str | None) -> str:
    """`projectName` of metadata.yaml on main; empty when absent or invalid."""
    raw = files.read(main_branch, METADATA, commit)
    if raw is None:
        return ""
    try:
        meta = load_project_metadata(raw, f"{main_branch}:{METADATA}")
    except ConfigError:
        return ""
    return meta.project_name or ""


class Current:
    """The latest snapshot of a source, asked anew on every use: the view the ways in admit
    against (each snapshot itself never changes)."""

    def __init__(self, latest: Callable[[], ConfigSnapshot]) -> None:
        self.latest = latest

    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        return self.latest().shipyard(commit)

    def services(self, stage: str) -> frozenset[str] | None:
        return self.latest().services(stage)

    @property
    def project(self) -> str:
        return self.latest().project

    def first_stage(self) -> str | None:
        return self.latest().first_stage()


class Followed:
    """`snapshot_of` at the commits the running reconciler accepts, following its ledger (a
    standby's view): new upstream records are folded as they appear, the snapshot re-read
    only when the pins move."""

    def __init__(self, files: UpstreamFiles, main_branch: str, ledger: Any) -> None:
        self.files = files
        self.main_branch = main_branch
        self.ledger = ledger
        self._records = UpstreamRecords()
        self._cursor = 0
        self._snapshot: ConfigSnapshot | None = None

    def snapshot(self) -> ConfigSnapshot:
        self.ledger.refresh()
        events = self.ledger.events()
        if self._cursor == 0:  # the whole ledger once, selecting the records by type
            self._records = records.fold_all(events)
        else:
            for event in events[self._cursor :]:
                records.fold(self._records, event)
        self._cursor = len(events)
        pins = dict(self._records.accepted)
        if self._snapshot is None or dict(self._snapshot.accepted) != {**self.files.branches(), **pins}:
            self._snapshot = snapshot_of(self.files, self.main_branch, pins)
        return self._snapshot
