"""The poll loop: fetch, compute what changed per branch and per service, hand it on.

What changed is computed from tree diffs between the last *recorded* tip of each
branch (the caller derives it from the ledger at start, see
`snapshot.baseline_from_events`) and the tip after the fetch — never by re-reading
every file, and never relative to the mirror's previous refs. That is what makes a
poll crash-safe: a process killed after the fetch but before its events reached the
ledger computes the very same changes on the next poll.

Scheduling is an APScheduler 3 background job re-armed after each poll: the normal
delay is `poll_interval` plus up to `poll_jitter` of it (replicas and projects do
not fetch in lockstep); while the upstream fails the delay doubles per failure, up
to `backoff_max`, and the first success returns to the normal interval. Upstream
health is kept as data (`UpstreamHealth`) for `reconciler status` and metrics.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

import pygit2
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from pydantic import BaseModel, Field
from pygit2.enums import SortMode

from reconciler.base.clock import utcnow
from reconciler.base.crashpoints import crash_point
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.deploytrigger import service_of_values
from reconciler.core.observations import BranchChange, CommitInfo, UpstreamChanges
from reconciler.formats.layout import service_of
from reconciler.formats.trailers import parse_trailers
from reconciler.upstream.mirror import Mirror, UpstreamError

log = get_logger("reconciler.upstream")

MAX_COMMITS = 200
"""Commits described per branch and poll; beyond this only the tip-to-tip diff is kept."""


class UpstreamHealth(BaseModel):
    """The upstream as `reconciler status` and /metrics show it. Never holds a secret."""

    url: str
    transport: str
    reachable: bool | None = None
    authenticated: bool | None = None
    branches: dict[str, str] = Field(default_factory=dict)
    """Last fetched sha per branch."""
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_success: datetime | None = None
    last_attempt: datetime | None = None
    consecutive_failures: int = 0
    next_attempt: datetime | None = None
    polls: int = 0
    watching: bool = False
    last_fetch_seconds: float | None = None
    """Wall time of the last successful fetch (network + indexing)."""
    last_diff_seconds: float | None = None
    """Wall time of computing the last poll's changes from tree diffs."""

    @property
    def state(self) -> str:
        if self.last_attempt is None:
            return "starting"
        if self.consecutive_failures:
            return "backing-off"
        return "ok"


def poll_delay(interval: float, jitter: float, failures: int, backoff_max: float, u: float) -> float:
    """Seconds until the next poll; `u` in [0, 1) is the random draw for jitter."""
    if failures <= 0:
        return interval * (1 + jitter * u)
    backoff = interval * 2.0 ** min(failures, 32)
    return min(backoff_max, backoff * (1 + jitter * u))


def _top_level(paths: Collection[str]) -> list[str]:
    """The services (by the one rule of `formats.layout`) a set of changed paths touches."""
    return sorted({s for s in (service_of(p) for p in paths) if s is not None})


_TREE_ENTRY = re.compile(rb"(\d+) ([^\0]*)\0(.{20})", re.DOTALL)
"""One entry of a raw git tree object: octal mode, name, 20-byte object id."""
_TREE_MODE = b"40000"


def _diff_paths(repo: pygit2.Repository, old: pygit2.Tree | None, new: pygit2.Tree | None) -> list[str]:
    """Every file path added, removed or changed (content or mode) between two trees.

    The paths libgit2's tree diff reports, without its cost: it visits every entry of every
    level, where equal ids say a whole subtree is unchanged. This compares the raw entries
    of each level as sets (C speed) and descends only where an id differs: one service's
    commit at 10,000 services reads one root and one subtree."""
    paths: list[str] = []
    _diff_into(repo, old.id if old is not None else None, new.id if new is not None else None, "", paths)
    return sorted(paths)


_ENTRIES_KEPT = 8
_entries_seen: OrderedDict[bytes, frozenset[tuple[bytes, bytes, bytes]]] = OrderedDict()
_entries_lock = threading.Lock()


def _raw_entries(repo: pygit2.Repository, tree: pygit2.Oid | None) -> frozenset[tuple[bytes, bytes, bytes]]:
    """A tree's raw entries; the last few are kept by id (content-addressed, so valid in any
    repository): a poll diffs the branch and then each new commit against its parent, which
    for one commit are the same two root trees."""
    if tree is None:
        return frozenset()
    with _entries_lock:
        known = _entries_seen.get(tree.raw)
    if known is not None:
        return known
    entries = frozenset(_TREE_ENTRY.findall(repo.odb.read(tree)[1]))
    with _entries_lock:
        _entries_seen[tree.raw] = entries
        while len(_entries_seen) > _ENTRIES_KEPT:
            _entries_seen.popitem(last=False)
    return entries


def _diff_into(
    repo: pygit2.Repository, old: pygit2.Oid | None, new: pygit2.Oid | None, base: str, out: list[str]
) -> None:
    before, after = _raw_entries(repo, old), _raw_entries(repo, new)
    gone = {name: (mode, oid) for mode, name, oid in before - after}
    came = {name: (mode, oid) for mode, name, oid in after - before}
    for name in gone.keys() | came.keys():
        a, b = gone.get(name), came.get(name)
        path = base + name.decode("utf-8", "replace")
        a_tree = a is not None and a[0] == _TREE_MODE
        b_tree = b is not None and b[0] == _TREE_MODE
        if a_tree or b_tree:
            _diff_into(
                repo,
                pygit2.Oid(raw=a[1]) if a is not None and a_tree else None,
                pygit2.Oid(raw=b[1]) if b is not None and b_tree else None,
                path + "/",
                out,
            )
        if (a is not None and not a_tree) or (b is not None and not b_tree):
            out.append(path)  # a file (or submodule) on one side at least


def _commit(repo: pygit2.Repository, sha: str | None) -> pygit2.Commit | None:
    if not sha:
        return None
    try:
        obj = repo.get(sha)
    except (ValueError, pygit2.GitError):
        return None
    return obj.peel(pygit2.Commit) if obj is not None and obj.type == pygit2.GIT_OBJECT_COMMIT else None


def _describe(repo: pygit2.Repository, commit: pygit2.Commit) -> CommitInfo:
    parent = commit.parents[0].tree if commit.parents else None
    author = commit.author
    message = commit.message
    return CommitInfo(
        sha=str(commit.id),
        parents=[str(p) for p in commit.parent_ids],
        author_name=author.name,
        author_email=author.email,
        time=datetime.fromtimestamp(commit.commit_time, tz=utcnow().tzinfo),
        summary=message.splitlines()[0] if message else "",
        trailers=parse_trailers(message),
        paths=_diff_paths(repo, parent, commit.tree),
    )


def branch_change(
    repo: pygit2.Repository, branch: str, old: str | None, new: str | None, *, max_commits: int = MAX_COMMITS
) -> BranchChange:
    """Describe one branch moving from `old` to `new` (either may be None), from the object graph."""
    old_c, new_c = _commit(repo, old), _commit(repo, new)
    paths = _diff_paths(repo, old_c.tree if old_c else None, new_c.tree if new_c else None)
    forced = bool(
        old_c is not None
        and new_c is not None
        and old_c.id != new_c.id
        and not repo.descendant_of(new_c.id, old_c.id)
    )
    commits: list[CommitInfo] = []
    truncated = False
    if new_c is not None:
        walker = repo.walk(new_c.id, SortMode.TOPOLOGICAL)
        if old_c is not None:
            walker.hide(old_c.id)
        for i, c in enumerate(walker):
            if i >= max_commits:
                truncated = True
                break
            commits.append(_describe(repo, c))
        commits.reverse()
    return BranchChange(
        branch=branch,
        old=old,
        new=new,
        forced=forced,
        paths=paths,
        services=_top_level(paths),
        commits=commits,
        commits_truncated=truncated,
    )


def diff_branches(
    repo: pygit2.Repository,
    baseline: Mapping[str, str],
    tips: Mapping[str, str],
    *,
    ignore: Collection[str] = (),
    max_commits: int = MAX_COMMITS,
    now: datetime | None = None,
) -> UpstreamChanges:
    """Every branch whose tip differs from the baseline (created, moved, rewritten or deleted)."""
    changes = []
    for branch in sorted(set(baseline) | set(tips)):
        if branch in ignore or baseline.get(branch) == tips.get(branch):
            continue
        changes.append(
            branch_change(repo, branch, baseline.get(branch), tips.get(branch), max_commits=max_commits)
        )
    return UpstreamChanges(polled_at=now or utcnow(), tips=dict(tips), branches=changes)


def with_served_ranges(
    repo: pygit2.Repository,
    changes: UpstreamChanges,
    served: Mapping[str, str],
    read: Callable[[str, str, str], bytes | None],
    *,
    main_branch: str,
    max_commits: int = MAX_COMMITS,
) -> UpstreamChanges:
    """`changes` with what commit-to-deploy needs observed too: for each moved stage branch, how
    it changed since the commit being served (the poll's own diff when that is the last one
    judged), and the values.yaml files those commits touched, read at the commits (and tips)
    admission may deploy. `read(branch, path, commit)` reads one file."""
    since: dict[str, BranchChange] = {}
    values: dict[str, bytes | None] = {}
    for change in changes.branches:
        previous = served.get(change.branch)
        if change.branch == main_branch or not previous or change.new is None or previous == change.new:
            continue
        if previous == change.old:
            moved = change
        else:
            try:
                moved = branch_change(repo, change.branch, previous, change.new, max_commits=max_commits)
            except (pygit2.GitError, KeyError, ValueError) as exc:
                log.warning("upstream.deploy_diff_failed", stage=change.branch, error=str(exc))
                continue
        since[change.branch] = moved
        for path in sorted({*moved.paths, *(p for c in moved.commits for p in c.paths)}):
            if service_of_values(path) is None:
                continue
            touched = [c.sha for c in moved.commits if path in c.paths]
            for commit in {*touched[-1:], change.new}:
                values[f"{commit}:{path}"] = read(change.branch, path, commit)
    return changes.model_copy(update={"since_served": since, "values": values})


OnChange = Callable[[UpstreamChanges], Any]


class Poller:
    """Fetches the mirror on a schedule (or when poked), reports changes, keeps health.

    `on_change` is called with every poll's changes; when it returns, the changes
    count as recorded and the baseline moves. When it raises, the baseline stays and
    the same changes (plus any newer) come again next poll.
    """

    def __init__(
        self,
        mirror: Mirror,
        on_change: OnChange,
        *,
        baseline: Mapping[str, str] | None = None,
        interval: float = 30.0,
        jitter: float = 0.1,
        backoff_max: float = 300.0,
        ignore_branches: Collection[str] = (),
        max_commits: int = MAX_COMMITS,
        rng: random.Random | None = None,
    ) -> None:
        self.mirror = mirror
        self.on_change = on_change
        self.interval = interval
        self.jitter = jitter
        self.backoff_max = backoff_max
        self.ignore = frozenset(ignore_branches)
        self.max_commits = max_commits
        self._rng = rng or random.Random()
        self._baseline: dict[str, str] = dict(baseline or {})
        self._poll_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._arm_lock = threading.Lock()
        """Held while a poll is (re)scheduled and while `stop` cancels: APScheduler's shutdown waits
        for a running poll while holding its job-store lock, which a poll re-arming itself needs."""
        self._health = UpstreamHealth(url=mirror.upstream.url, transport=mirror.upstream.transport)
        self._scheduler: BaseScheduler | None = None
        self._owns_scheduler = False
        self._job_id: str | None = None
        self._again = False
        self._running = False
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ state

    @property
    def baseline(self) -> dict[str, str]:
        with self._state_lock:
            return dict(self._baseline)

    def set_baseline(self, baseline: Mapping[str, str]) -> None:
        with self._state_lock:
            self._baseline = dict(baseline)

    def health(self) -> UpstreamHealth:
        with self._state_lock:
            return self._health.model_copy(deep=True)

    def set_watching(self, watching: bool) -> None:
        with self._state_lock:
            self._health.watching = watching

    # ------------------------------------------------------------------ one poll

    def poll_once(self) -> UpstreamChanges | None:
        """Fetch and report; returns the changes handed on (None when the fetch failed)."""
        with self._poll_lock:
            started = utcnow()
            with self._state_lock:
                self._health.last_attempt = started
                self._health.polls += 1
            began = time.perf_counter()
            try:
                tips = self.mirror.fetch()
            except UpstreamError as exc:
                self._failed(exc.reason, str(exc))
                return None
            fetched = time.perf_counter()
            crash_point("poll.after-fetch")
            with self._state_lock:
                baseline = dict(self._baseline)
            changes = diff_branches(
                self.mirror.repo,
                baseline,
                tips,
                ignore=self.ignore,
                max_commits=self.max_commits,
                now=started,
            )
            with self._state_lock:
                self._health.last_fetch_seconds = round(fetched - began, 6)
                self._health.last_diff_seconds = round(time.perf_counter() - fetched, 6)
            if changes.branches:
                log.info(
                    "upstream.changed",
                    branches={
                        c.branch: f"{(c.old or '-')[:8]}..{(c.new or '-')[:8]}" for c in changes.branches
                    },
                )
                try:
                    self.on_change(changes)
                except Exception as exc:  # the handler decides nothing here; retry with the same changes
                    log.error("upstream.handler_failed", error=redact(f"{type(exc).__name__}: {exc}"))
                    self._succeeded(tips, handler_error=redact(f"handling changes failed: {exc}"))
                    return None
                crash_point("poll.after-handler")
            with self._state_lock:
                self._baseline = {b: s for b, s in tips.items() if b not in self.ignore}
            self._succeeded(tips)
            return changes

    def _failed(self, reason: str, message: str) -> None:
        with self._state_lock:
            h = self._health
            h.consecutive_failures += 1
            h.last_error = redact(message)
            h.last_error_at = utcnow()
            if reason == "unauthenticated":
                h.reachable, h.authenticated = True, False
            elif reason != "local-storage":  # a full data disk says nothing about the upstream
                h.reachable = False
            failures = h.consecutive_failures
        log.warning("upstream.fetch_failed", reason=reason, error=message, consecutive_failures=failures)

    def _succeeded(self, tips: Mapping[str, str], handler_error: str | None = None) -> None:
        with self._state_lock:
            h = self._health
            recovered = h.consecutive_failures > 0
            h.reachable = h.authenticated = True
            h.branches = dict(tips)
            h.last_success = utcnow()
            h.consecutive_failures = 0
            if handler_error:
                h.last_error, h.last_error_at = handler_error, utcnow()
        if recovered:
            log.info("upstream.recovered", url=self._health.url)

    # ------------------------------------------------------------------ schedule

    def start(self, scheduler: BaseScheduler | None = None) -> None:
        """Poll now, then on schedule; uses `scheduler` when given (the app's), else its own."""
        if scheduler is None:
            scheduler = BackgroundScheduler(timezone="UTC")
            self._owns_scheduler = True
        self._scheduler = scheduler
        self._stopped.clear()
        if not scheduler.running:
            scheduler.start()
        self._arm(0.0)

    def stop(self) -> None:
        with self._arm_lock:  # a poll re-arming now finishes first; any later one sees the stop
            self._stopped.set()
            with self._state_lock:
                job, self._job_id = self._job_id, None
            if self._scheduler is not None and job is not None:
                with contextlib.suppress(JobLookupError):
                    self._scheduler.remove_job(job)
        if self._scheduler is not None and self._owns_scheduler and self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        self._scheduler = None

    def poke(self) -> None:
        """Poll as soon as possible (a watched local upstream changed)."""
        with self._state_lock:
            if self._running:
                self._again = True  # the running poll may have fetched before the new commit
                return
        self._arm(0.0)

    def _arm(self, delay: float) -> None:
        """Replace the pending poll with one in `delay` seconds (each poll is a one-shot job)."""
        with self._arm_lock:
            scheduler = self._scheduler
            if scheduler is None or self._stopped.is_set():
                return
            run_at = utcnow() + timedelta(seconds=delay)
            job_id = f"upstream-poll-{uuid.uuid4().hex[:12]}"
            with self._state_lock:
                old, self._job_id = self._job_id, job_id
                self._health.next_attempt = run_at
            if old is not None:
                with contextlib.suppress(JobLookupError):
                    scheduler.remove_job(old)
            scheduler.add_job(
                self._tick, "date", args=[job_id], run_date=run_at, id=job_id, misfire_grace_time=None
            )

    def _tick(self, job_id: str) -> None:
        with self._state_lock:
            if self._stopped.is_set() or job_id != self._job_id:
                return  # superseded by a poke that armed a newer job
            self._running, self._again = True, False
        try:
            self.poll_once()
        except Exception as exc:  # never let the loop die: record and back off
            self._failed("unreachable", f"poll failed: {type(exc).__name__}: {exc}")
        with self._state_lock:
            self._running = False
            again = self._again
            failures = self._health.consecutive_failures
        delay = (
            0.0
            if again
            else poll_delay(self.interval, self.jitter, failures, self.backoff_max, self._rng.random())
        )
        self._arm(delay)
