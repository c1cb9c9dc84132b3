"""Config snapshots: which commit of each branch the reconciler serves, and why.

A commit people push is a proposal. The upstream is validated as a whole with each
changed branch at its new tip and every other branch at the commit being served;
a branch whose new commit has errors (or breaks a link from another branch) is
rejected — its problems go to the ledger and the log — and the last good commit of
that branch keeps serving. Deleted branches keep serving their last good commit
(kept alive in the mirror) until the shipyard stops naming them.

The store is a fold over the ledger, like the engine: `decide(changes)` returns
the `reconciler.upstream.*` events (and commit-to-deploy triggers) a poll implies
without changing anything; the caller appends them, then `observe(events)` folds
them in. `restore(ledger.events())` at start rebuilds the same state, and
`baseline()` tells the poller which tips are already recorded — so a crash at any
point between fetch and append leads to the same events on the next poll, with the
same ids. Within a poll's events, the record that marks a branch's commit as
handled (accepted, rejected) comes last for that branch, so even a caller that
appends them one by one and dies halfway gets the rest on the next poll.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pygit2

from reconciler.base.logs import get_logger
from reconciler.core import deploytrigger
from reconciler.core.observations import UpstreamChanges
from reconciler.core.validation import (
    PinnedFiles,
    UpstreamConfig,
    UpstreamFiles,
    ValidationResult,
    validate_served,
)
from reconciler.formats.events import KeptnEvent, derived_id, format_time
from reconciler.formats.problems import ConfigError, Problem
from reconciler.formats.upstreamrecords import (
    ACCEPTED,
    BRANCH_DELETED,
    FORCE_PUSHED,
    REJECTED,
    SOURCE,
    Rejection,
    UpstreamRecords,
)
from reconciler.upstream import records
from reconciler.upstream.files import GitFiles
from reconciler.upstream.poll import branch_change

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
        self._results: dict[frozenset[tuple[str, str]], ValidationResult] = {}
        self._last: ValidationResult | None = None
        self._snapshot = ConfigSnapshot(main_branch=main_branch, project=project)

    # ------------------------------------------------------------------ reading

    def current(self) -> ConfigSnapshot:
        return self._snapshot

    def baseline(self) -> dict[str, str]:
        return self._state.baseline()

    # ------------------------------------------------------------------ validation

    def _validate(self, pins: Mapping[str, str]) -> ValidationResult:
        key = frozenset(pins.items())
        hit = self._results.get(key)
        if hit is None:
            hit = validate_served(
                PinnedFiles(self.files, pins), self.main_branch, self._last, self.local_commands
            )
            self._last = hit
            if len(self._results) > 16:
                self._results.clear()
            self._results[key] = hit
        return hit

    def _project(self, result: ValidationResult | None) -> str:
        if result is not None:
            if result.config.project:
                return result.config.project
            if not self.default_project and result.config.shipyard is not None:
                return result.config.shipyard.project or ""
        return self.default_project

    # ------------------------------------------------------------------ deciding

    def decide(self, changes: UpstreamChanges) -> list[KeptnEvent]:
        """Events this poll implies, given the recorded state. Changes nothing."""
        state = self._state
        tips = dict(changes.tips)
        events: list[KeptnEvent] = []
        served = dict(state.accepted)

        # branches the current or proposed config cares about
        proposal = dict(tips)
        for branch, commit in served.items():
            proposal.setdefault(branch, commit)  # deleted upstream: keep the last good commit
        proposed = {b for b, c in proposal.items() if served.get(b) != c}

        pins = dict(proposal)
        blame: dict[str, list[Problem]] = {}
        # problems the served config already has (e.g. a stricter validator since) blame no one
        known = {str(p) for p in self._validate(served).errors} if served else set()
        result = self._validate(pins)
        for _ in range(len(pins) + 1):
            relevant = set(result.config.revisions) | {self.main_branch}
            by_branch: dict[str, list[Problem]] = {}
            for p in result.errors:
                by_branch.setdefault(p.branch or self.main_branch, []).append(p)
            bad = {b for b in by_branch if b in proposed and b in pins}
            orphans = [p for b, ps in by_branch.items() if b not in bad for p in ps if str(p) not in known]
            if orphans:  # an unchanged branch broke: the change is to blame, all of it
                bad |= {b for b in proposed if b in pins and b in relevant}
            if not bad:
                break
            for b in bad:
                blame.setdefault(b, []).extend(by_branch.get(b, []) + orphans)
                if b in served:
                    pins[b] = served[b]
                else:
                    pins.pop(b)
            proposed -= bad
            result = self._validate(pins)

        relevant = set(result.config.revisions) | {self.main_branch} | set(blame) | set(served)
        project = self._project(result if result.config.shipyard is not None else None)
        context = derived_id("upstream-poll", *sorted(f"{b}@{c}" for b, c in tips.items() if b in relevant))

        def record(type_: str, branch: str, commit: str, extra: dict[str, Any], *id_parts: str) -> None:
            stage = "" if branch == self.main_branch else branch
            events.append(
                KeptnEvent(
                    id=derived_id("upstream", type_, branch, commit, *id_parts),
                    source=SOURCE,
                    type=type_,
                    time=format_time(changes.polled_at),
                    shkeptncontext=context,
                    gitcommitid=commit or None,
                    data={"project": project, "stage": stage, "branch": branch, "commit": commit, **extra},
                )
            )

        order = self._order(result, relevant)
        for change in sorted(changes.branches, key=lambda c: order.get(c.branch, len(order))):
            if change.branch not in relevant:
                continue
            if change.deleted and change.branch not in state.deleted:
                record(
                    BRANCH_DELETED,
                    change.branch,
                    change.old or "",
                    {
                        "message": f"branch {change.branch!r} was deleted upstream; still serving "
                        f"{(served.get(change.branch) or 'nothing')[:12]}",
                        "serving": served.get(change.branch),
                    },
                )
            elif change.forced and change.old and change.new:
                record(
                    FORCE_PUSHED,
                    change.branch,
                    change.new,
                    {
                        "previous": change.old,
                        "message": f"history of {change.branch!r} was rewritten "
                        f"({change.old[:12]} is no longer an ancestor of {change.new[:12]}); the old commits stay readable",
                    },
                    change.old,
                )

        for branch in sorted(relevant, key=lambda b: order.get(b, len(order))):
            tip = tips.get(branch)
            if tip is None:
                continue
            seen = state.seen.get(branch)
            if branch in blame:
                problems = list({str(p): p for p in blame[branch]}.values())
                rej = state.rejected.get(branch)
                if rej is not None and rej.commit == tip and seen == tip:
                    continue
                shown = [p.model_dump(mode="json", exclude_none=True) for p in problems[:MAX_PROBLEMS]]
                record(
                    REJECTED,
                    branch,
                    tip,
                    {
                        "serving": served.get(branch),
                        "problems": shown,
                        "problemCount": len(problems),
                        "message": f"commit {tip[:12]} on {branch!r} rejected: {len(problems)} problem(s); "
                        + (
                            f"still serving {served[branch][:12]}"
                            if branch in served
                            else "nothing served yet"
                        )
                        + ". First: "
                        + (str(problems[0]) if problems else "(none)"),
                    },
                    seen or "",
                )
                log.error(
                    "upstream.rejected",
                    branch=branch,
                    commit=tip[:12],
                    problems=[str(p) for p in problems[:10]],
                    problem_count=len(problems),
                )
            elif pins.get(branch) == tip and (served.get(branch) != tip or seen != tip):
                moved = changes.get(branch)
                previous = served.get(branch)
                services = sorted(moved.services) if moved is not None else []
                if self.deploy_on_commit and branch != self.main_branch and previous:
                    # before the acceptance: it marks the commit as handled, so appending these
                    # one by one and crashing in between still leads to the trigger on restart
                    events.extend(self._deliveries(result, project, branch, previous, tip, changes.polled_at))
                record(
                    ACCEPTED,
                    branch,
                    tip,
                    {
                        "previous": previous,
                        "forced": bool(moved and moved.forced),
                        "services": services,
                        "message": f"serving {tip[:12]} on {branch!r}"
                        + (f" (was {previous[:12]})" if previous else ""),
                    },
                    seen or "",
                )
        return events

    def _order(self, result: ValidationResult, relevant: Iterable[str]) -> dict[str, int]:
        names = [self.main_branch]
        if result.config.shipyard is not None:
            names += result.config.shipyard.stage_names
        names += sorted(set(relevant) - set(names))
        return {n: i for i, n in enumerate(dict.fromkeys(names))}

    def _deliveries(
        self, result: ValidationResult, project: str, stage: str, previous: str, tip: str, now: datetime
    ) -> list[KeptnEvent]:
        """Delivery triggers for values files changed between the served and the accepted commit."""
        shipyard = result.config.shipyard
        stage_def = shipyard.stage(stage) if shipyard is not None else None
        if stage_def is None or stage_def.sequence(deploytrigger.DELIVERY) is None:
            return []
        repo = self.files.repo if isinstance(self.files, GitFiles) else None
        if repo is None:
            return []
        try:
            change = branch_change(repo, stage, previous, tip)
        except (pygit2.GitError, KeyError, ValueError) as exc:
            log.warning("upstream.deploy_diff_failed", stage=stage, error=str(exc))
            return []
        events, problems = deploytrigger.delivery_triggers(
            change.commits,
            project=project,
            stage=stage,
            read=lambda c, p: self.files.read(stage, p, c),
            changed=change.paths,
            tip=tip if change.commits_truncated else None,
            now=now,
        )
        for p in problems:
            log.error("upstream.deploy_values_invalid", problem=str(p))
        return events

    # ------------------------------------------------------------------ folding

    def observe(self, events: Iterable[KeptnEvent]) -> None:
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
        """decide -> record(events) (the ledger append) -> observe; for callers without an engine."""
        events = self.decide(changes)
        if events:
            record(events)
            self.observe(events)
        return events

    def _rebuild(self) -> None:
        state = self._state
        config: UpstreamConfig | None = None
        warnings: tuple[Problem, ...] = ()
        result: ValidationResult | None = None
        if state.accepted:
            try:
                result = self._validate(dict(state.accepted))
            except (ConfigError, pygit2.GitError, KeyError) as exc:  # history unreadable: keep what we had
                log.error("upstream.snapshot_unreadable", error=str(exc))
                return
            config = result.config
            warnings = tuple(result.warnings)
            if result.errors:  # accepted under an older validator: keep serving, say so
                log.warning("upstream.served_with_problems", problems=[str(p) for p in result.errors[:10]])
        self._snapshot = ConfigSnapshot(
            main_branch=self.main_branch,
            project=self._project(result),
            accepted=dict(state.accepted),
            seen=dict(state.seen),
            rejected=dict(state.rejected),
            deleted=frozenset(state.deleted),
            config=config,
            warnings=warnings,
        )
