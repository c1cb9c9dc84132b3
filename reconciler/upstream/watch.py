"""Watch a local upstream so a commit starts a poll within a second, not a poll interval.

A commit, push, branch creation or deletion in a local repository always ends with
a ref file being renamed into `refs/` (or `packed-refs` rewritten). Watching only
those (watchdog: inotify on Linux) means object writes do not wake us, and a short
debounce folds the burst of a multi-branch push into one poll.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pygit2
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from reconciler.base.logs import get_logger
from reconciler.upstream.credentials import Upstream
from reconciler.upstream.poll import Poller

log = get_logger("reconciler.upstream")

DEBOUNCE = 0.05
"""Seconds to wait for more ref changes before poking; well under the 1 s promise."""


def git_dir(path: Path) -> Path:
    """The git directory of a bare or non-bare local repository."""
    try:
        return Path(pygit2.Repository(str(path)).path)
    except (pygit2.GitError, KeyError) as exc:
        raise ValueError(f"{path}: not a git repository ({exc})") from None


class _RefChanges(FileSystemEventHandler):
    def __init__(self, gitdir: Path, fire: Callable[[], None]) -> None:
        self.gitdir = gitdir
        self.fire = fire

    def _relevant(self, raw: str | bytes) -> bool:
        path = raw.decode() if isinstance(raw, bytes) else raw
        try:
            rel = Path(path).relative_to(self.gitdir).as_posix()
        except ValueError:
            return False
        if rel.endswith(".lock"):
            return False
        return rel.startswith("refs/") or rel in ("packed-refs", "HEAD")

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        dest = getattr(event, "dest_path", "")
        if self._relevant(event.src_path) or (dest and self._relevant(dest)):
            self.fire()


class LocalWatcher:
    """Calls `on_change` (debounced) whenever a ref of the local repository at `path` changes."""

    def __init__(self, path: Path, on_change: Callable[[], None], *, debounce: float = DEBOUNCE) -> None:
        self.gitdir = git_dir(path)
        self.on_change = on_change
        self.debounce = debounce
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def _fire(self) -> None:
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.debounce, self._run)
            self._timer.daemon = True
            self._timer.start()

    def _run(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.on_change()
        except Exception as exc:  # a failing poke must not kill the observer thread
            log.warning("upstream.watch_callback_failed", error=f"{type(exc).__name__}: {exc}")

    def start(self) -> None:
        if self._observer is not None:
            return
        handler = _RefChanges(self.gitdir, self._fire)
        observer = Observer()
        refs = self.gitdir / "refs"
        refs.mkdir(exist_ok=True)
        observer.schedule(handler, str(refs), recursive=True)
        observer.schedule(handler, str(self.gitdir), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        log.info("upstream.watching", gitdir=str(self.gitdir))

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()


def watch_upstream(upstream: Upstream, poller: Poller) -> LocalWatcher | None:
    """Start watching a local (path or file://) upstream so commits poke `poller`; None otherwise."""
    path = upstream.local_path
    if path is None:
        return None
    watcher = LocalWatcher(path, poller.poke)
    watcher.start()
    poller.set_watching(True)
    return watcher
