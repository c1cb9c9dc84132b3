"""A local bare mirror of the upstream: fetch every branch, read files at any commit.

The reconciler never checks anything out: executors read `<service>/slo.yaml` at a
pinned commit straight from the mirror's object database, so a sequence started on
commit C keeps reading C even after the branch moves, is force-pushed or deleted.
To keep that promise across force-pushes the old tip gets a keep-alive ref
(`refs/reconciler/seen/<sha>`) and the mirror is never garbage-collected.

Transports: local path, file://, git://, http(s):// (token or basic auth), ssh
(key; host keys checked against `upstream_known_hosts`). Network calls are bounded
by libgit2's connect and read timeouts, so a hung upstream fails a poll instead of
hanging it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Literal

import pygit2
from pygit2.enums import FetchPrune

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.upstream.credentials import AuthenticationError, Upstream
from reconciler.upstream.files import GitFiles

log = get_logger("reconciler.upstream")

REMOTE = "origin"
FETCH_REFSPEC = "+refs/heads/*:refs/heads/*"
KEEP_PREFIX = "refs/reconciler/seen/"
CONNECT_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 60_000

Reason = Literal["unreachable", "unauthenticated", "local-storage"]
_AUTH_MARKERS = (
    "401",
    "403",
    "authentication",
    "unauthorized",
    "credentials",
    "permission denied",
    "publickey",
)
_STORAGE_MARKERS = ("no space left on device", "disk quota exceeded", "read-only file system")
"""Our own data directory failed the fetch, not the upstream: it is still reachable."""


class UpstreamError(RuntimeError):
    """A fetch failed; `reason` says what to show and whether credentials are the problem.

    The message is always redacted: no token, password or URL userinfo.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason: Reason = reason
        super().__init__(redact(message))


def classify(exc: BaseException) -> Reason:
    if isinstance(exc, AuthenticationError):
        return "unauthenticated"
    text = str(exc).lower()
    if any(m in text for m in _STORAGE_MARKERS):
        return "local-storage"
    return "unauthenticated" if any(m in text for m in _AUTH_MARKERS) else "unreachable"


def _bound_network_time() -> None:
    """libgit2 defaults to waiting forever; a poll must end."""
    if not pygit2.settings.server_connect_timeout:
        pygit2.settings.server_connect_timeout = CONNECT_TIMEOUT_MS
    if not pygit2.settings.server_timeout:
        pygit2.settings.server_timeout = READ_TIMEOUT_MS


def ledger_branches(ledger_git: Path) -> frozenset[str]:
    """Branches of the data directory's ledger repository (and the one its HEAD names).

    The ledger is pushed to the upstream as one of its branches; the mirror must not
    fetch it back: it is not configuration, and at 100,000 events the first fetch alone
    copied the whole history a second time (libgit2 built a 1 GiB pack in-process).
    """
    if not (ledger_git / "HEAD").is_file():
        return frozenset()
    try:
        repo = pygit2.Repository(str(ledger_git))
    except pygit2.GitError:
        return frozenset()
    try:
        names = set(repo.branches.local)
        head = repo.references.get("HEAD")
        target = head.target if head is not None else None
        if isinstance(target, str) and target.startswith("refs/heads/"):
            names.add(target[len("refs/heads/") :])
        return frozenset(names)
    finally:
        repo.free()


class Mirror:
    """`data_dir/upstream.git`: every upstream branch under refs/heads, fetched on demand.

    `exclude` names branches never fetched (the ledger's own, see `in_data_dir`); when
    there are any, a fetch first lists the upstream's branches and fetches only those
    that moved (a no-op poll is that one listing), since libgit2 1.9 does not apply
    negative refspecs (`^refs/heads/x`) to the refs it updates.
    """

    def __init__(
        self, path: Path, upstream: Upstream, *, exclude: Callable[[], Collection[str]] | None = None
    ) -> None:
        self.path = Path(path)
        self.upstream = upstream
        self.exclude = exclude or (lambda: ())
        self._lock = threading.RLock()
        _bound_network_time()
        if upstream.transport == "ssh" and upstream.credentials.known_hosts is not None:
            _use_known_hosts(upstream.credentials.known_hosts, self.path.parent / ".ssh-home")
        if (self.path / "HEAD").is_file():
            self._repo = pygit2.Repository(str(self.path))
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._repo = pygit2.init_repository(str(self.path), bare=True)
        self._configure_remote()

    @classmethod
    def in_data_dir(cls, data_dir: Path, upstream: Upstream) -> Mirror:
        """The mirror of a data directory, leaving out the branches of its ledger (read at every
        fetch: the branch appears with the first append)."""
        ledger_git = Path(data_dir) / "ledger.git"
        return cls(Path(data_dir) / "upstream.git", upstream, exclude=lambda: ledger_branches(ledger_git))

    def _configure_remote(self) -> None:
        remotes = self._repo.remotes
        if REMOTE not in remotes.names():
            remotes.create(REMOTE, self.upstream.url, FETCH_REFSPEC)
        elif remotes[REMOTE].url != self.upstream.url:
            remotes.set_url(REMOTE, self.upstream.url)

    @property
    def repo(self) -> pygit2.Repository:
        """The mirror's repository; use only from the polling thread (see `files()` for readers)."""
        return self._repo

    def shed_memory(self) -> None:
        """Drop libgit2's caches of this handle (the first fetch's diff read every tree of every
        branch); it reopens what it needs on the next use."""
        with self._lock:
            self._repo.free()

    def branches(self) -> dict[str, str]:
        """Branch -> tip sha, as of the last fetch."""
        with self._lock:
            out: dict[str, str] = {}
            for name in self._repo.references:
                if name.startswith("refs/heads/"):
                    # interned: pygit2 keeps every name it is given (files.tree_entry)
                    ref = self._repo.references[sys.intern(name)].resolve()
                    out[name[len("refs/heads/") :]] = str(ref.target)
            return out

    def fetch(self) -> dict[str, str]:
        """Fetch all branches (pruning deleted ones); returns branch -> tip after the fetch.

        Tips that stop being reachable (force-push, deletion) get a keep-alive ref
        first, so pinned commits stay readable.
        """
        with self._lock:
            before = self.branches()
            excluded = frozenset(self.exclude())
            try:
                if excluded:
                    self._fetch_except(excluded, before)
                else:
                    callbacks = self.upstream.credentials.callbacks()
                    self._repo.remotes[REMOTE].fetch(
                        [FETCH_REFSPEC], callbacks=callbacks, prune=FetchPrune.PRUNE
                    )
            except (pygit2.GitError, OSError, ValueError, AuthenticationError, KeyError) as exc:
                reason = classify(exc)
                raise UpstreamError(
                    reason, f"fetching {self.upstream.url} failed ({reason}): {type(exc).__name__}: {exc}"
                ) from None
            after = self.branches()
            for branch, old in before.items():
                new = after.get(branch)
                if branch not in excluded and new != old and (new is None or not self.is_ancestor(old, new)):
                    self.keep(old)
            return after

    def _fetch_except(self, excluded: frozenset[str], before: dict[str, str]) -> None:
        """List the upstream's branches, fetch those that moved, drop those gone or excluded."""
        remote = self._repo.remotes[REMOTE]
        heads: dict[str, str] = {}
        for head in remote.list_heads(callbacks=self.upstream.credentials.callbacks()):
            name = head.name or ""
            if name.startswith("refs/heads/"):
                heads[name[len("refs/heads/") :]] = str(head.oid)
        wanted = {b: oid for b, oid in heads.items() if b not in excluded}
        moved = sorted(b for b, oid in wanted.items() if before.get(b) != oid)
        refspecs = [f"+refs/heads/{b}:refs/heads/{b}" for b in moved]
        local, git = self.upstream.local_path, shutil.which("git")
        if refspecs and local is not None and git is not None:
            # libgit2's local transport copies the objects of every ref, whatever the refspecs:
            # the excluded branch's whole history would come along
            self._git_fetch(git, str(local), refspecs)
        elif refspecs:
            remote.fetch(refspecs, callbacks=self.upstream.credentials.callbacks(), prune=FetchPrune.NO_PRUNE)
        for branch in before:
            if branch not in wanted:  # deleted upstream (kept alive by the caller) or excluded
                with contextlib.suppress(KeyError):
                    self._repo.references.delete(f"refs/heads/{branch}")

    def _git_fetch(self, git: str, source: str, refspecs: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k != "GIT_DIR"}
        env["GIT_TERMINAL_PROMPT"] = "0"
        cmd = [
            git,
            f"--git-dir={self.path}",
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            source,
        ]
        try:
            done = subprocess.run(
                [*cmd, *refspecs],
                env=env,
                capture_output=True,
                text=True,
                timeout=READ_TIMEOUT_MS / 1000,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise OSError(f"git fetch did not finish within {READ_TIMEOUT_MS / 1000:.0f} s") from None
        if done.returncode != 0:
            raise OSError(f"git fetch exited {done.returncode}: {' '.join(done.stderr.split())[-500:]}")

    def keep(self, sha: str) -> None:
        """Keep a commit (and its history) readable whatever happens upstream."""
        with self._lock:
            name = sys.intern(KEEP_PREFIX + sha)  # files.tree_entry: pygit2 keeps the name
            if self._repo.references.get(name) is None and self.has_commit(sha):
                self._repo.references.create(name, pygit2.Oid(hex=sha), force=True)

    def has_commit(self, sha: str) -> bool:
        with self._lock:
            try:
                obj = self._repo.get(sha)
            except (ValueError, pygit2.GitError):
                return False
            return obj is not None and obj.type == pygit2.GIT_OBJECT_COMMIT

    def is_ancestor(self, old: str, new: str) -> bool:
        with self._lock:
            if old == new:
                return True
            if not (self.has_commit(old) and self.has_commit(new)):
                return False
            return bool(self._repo.descendant_of(pygit2.Oid(hex=new), pygit2.Oid(hex=old)))

    def files(self, branch_filter: frozenset[str] | None = None) -> GitFiles:
        """A reader over its own repository handle, safe to use from any one thread."""
        return GitFiles(pygit2.Repository(str(self.path)), branch_filter=branch_filter)


def _use_known_hosts(known_hosts: Path, home: Path) -> None:
    """libgit2 (libssh2) checks host keys against `$HOME/.ssh/known_hosts` only: give it a home."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(known_hosts, ssh_dir / "known_hosts")
    pygit2.settings.homedir = str(home)
    log.info("upstream.known_hosts", file=str(known_hosts))
