"""One writer per data directory: an exclusive `flock` on `<data_dir>/lock`.

Without Kubernetes there is no Lease to elect a leader, yet two `reconciler run`
processes on one data directory would both poll, dispatch and write the ledger.
The kernel's `flock` is the cheapest mutual exclusion that cleans up after a
crash by itself: the lock dies with the process, so a stale lock file never
blocks a restart. With leader election the leader takes the same lock after it
wins the Lease, so a shared volume is fenced even if two pods believe they lead.

The file also records who holds it (pid, host, start time) so the error a second
process gets names the process to look at, not just "locked". Imports only the
standard library.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

LOCK_NAME = "lock"


class DataDirLocked(RuntimeError):
    """Another process holds the data directory; the message names it."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        self.path = path
        self.holder = holder
        who = holder.describe() if holder else "another process (it did not record its pid)"
        super().__init__(
            f"data directory {path.parent} is in use by {who}: {path} is locked. "
            "Only one reconciler may write a data directory; stop the other process or give this one "
            "its own --data-dir (RECONCILER_DATA_DIR)."
        )


@dataclass(frozen=True)
class Holder:
    """What the lock file says about the process holding it."""

    pid: int
    host: str
    since: float

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)) if self.since else "unknown"
        return f"pid {self.pid} on host {self.host} (since {started})"

    def render(self) -> str:
        return f"pid={self.pid}\nhost={self.host}\nsince={self.since:.3f}\n"


def parse_holder(text: str) -> Holder | None:
    """Read the `key=value` lines a holder wrote; None when they are missing or garbled."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        pid = int(fields["pid"])
    except (KeyError, ValueError):
        return None
    try:
        since = float(fields.get("since", "0"))
    except ValueError:
        since = 0.0
    return Holder(pid=pid, host=fields.get("host", "unknown"), since=since)


class DataDirLock:
    """Exclusive, crash-safe ownership of a data directory for this process.

    `acquire(timeout=0)` fails at once with `DataDirLocked` when taken; a positive
    timeout polls (bounded) for a holder that is shutting down, e.g. the previous
    leader on a shared volume finishing its flush.
    """

    def __init__(self, data_dir: Path | str, *, poll: float = 0.1) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self.poll = poll
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> Holder | None:
        """Who the lock file names (the current holder while it is locked)."""
        try:
            return parse_holder(self.path.read_text(errors="replace"))
        except OSError:
            return None

    def acquire(self, timeout: float = 0.0) -> DataDirLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                if time.monotonic() >= deadline:
                    raise DataDirLocked(self.path, self.holder())
                time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))
            me = Holder(pid=os.getpid(), host=socket.gethostname(), since=time.time())
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.render().encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the directory up. The file stays (removing it would race a waiting process)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
