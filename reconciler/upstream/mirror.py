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

import shutil
import threading
from pathlib import Path
from typing import Literal

import pygit2
from pygit2.enums import FetchPrune

from reconciler.observability import get_logger, redact
from reconciler.upstream.credentials import AuthenticationError, Upstream
from reconciler.upstream.files import GitFiles

log = get_logger("reconciler.upstream")

REMOTE = "origin"
FETCH_REFSPEC = "+refs/heads/*:refs/heads/*"
KEEP_PREFIX = "refs/reconciler/seen/"
CONNECT_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 60_000

Reason = Literal["unreachable", "unauthenticated", "local-storage"]
_AUTH_MARKERS = ("401", "403", "authentication", "unauthorized", "credentials", "permission denied", "publickey")
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


class Mirror:
    """`data_dir/upstream.git`: every upstream branch under refs/heads, fetched on demand."""

    def __init__(self, path: Path, upstream: Upstream) -> None:
        self.path = Path(path)
        self.upstream = upstream
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
        return cls(Path(data_dir) / "upstream.git", upstream)

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

    def branches(self) -> dict[str, str]:
        """Branch -> tip sha, as of the last fetch."""
        with self._lock:
            out: dict[str, str] = {}
            for name in self._repo.references:
                if name.startswith("refs/heads/"):
                    ref = self._repo.references[name].resolve()
                    out[name[len("refs/heads/") :]] = str(ref.target)
            return out

    def fetch(self) -> dict[str, str]:
        """Fetch all branches (pruning deleted ones); returns branch -> tip after the fetch.

        Tips that stop being reachable (force-push, deletion) get a keep-alive ref
        first, so pinned commits stay readable.
        """
        with self._lock:
            before = self.branches()
            callbacks = self.upstream.credentials.callbacks()
            try:
                self._repo.remotes[REMOTE].fetch([FETCH_REFSPEC], callbacks=callbacks, prune=FetchPrune.PRUNE)
            except (pygit2.GitError, OSError, ValueError, AuthenticationError, KeyError) as exc:
                reason = classify(exc)
                raise UpstreamError(
                    reason, f"fetching {self.upstream.url} failed ({reason}): {type(exc).__name__}: {exc}"
                ) from None
            after = self.branches()
            for branch, old in before.items():
                new = after.get(branch)
                if new != old and (new is None or not self.is_ancestor(old, new)):
                    self.keep(old)
            return after

    def keep(self, sha: str) -> None:
        """Keep a commit (and its history) readable whatever happens upstream."""
        with self._lock:
            name = KEEP_PREFIX + sha
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
