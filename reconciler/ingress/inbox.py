"""The inbox directory: event files dropped into `<data_dir>/inbox/` are recorded, then moved aside.

For people and tools that can write a file but not call an API (a cron job, a CI
step with a shared volume, `cp remediation_trigger.json inbox/`). A file that was
recorded moves to `inbox/done/` with a `.receipt.json` naming its keptn context; a
refused one moves to `inbox/rejected/` with a `.error` file saying why. A file
that could not be handled for another reason (the ledger is busy) stays and is
retried on the next scan.

Watching uses watchdog: a file is taken when its writer closes it or when it is
renamed into the directory (write `name.json.tmp` or `.name.json`, then rename, for
atomicity on any platform). A periodic scan picks up what events missed, leaving
alone files modified in the last `settle` seconds. The id and context of a file's
event derive from its bytes, so a crash between recording and moving does not
record it twice.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.admission import Rejected
from reconciler.formats.events import MAX_EVENT_BYTES, EventError
from reconciler.ingress.submit import Ingress, Receipt

log = get_logger("reconciler.ingress.inbox")

DONE = "done"
REJECTED = "rejected"
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".swp", "~")
MAX_FILES_PER_SCAN = 500


@dataclass(frozen=True)
class Outcome:
    path: Path
    moved_to: Path | None
    receipt: Receipt | None = None
    error: str = ""


def _candidate(path: Path) -> bool:
    name = path.name
    return not name.startswith((".", "_")) and not name.endswith(TEMP_SUFFIXES)


def _free_name(directory: Path, name: str) -> Path:
    target = directory / name
    n = 1
    while target.exists() or target.with_name(target.name + ".error").exists():
        target = directory / f"{name}.{n}"
        n += 1
    return target


class Inbox:
    """Records files from one directory; `start()` watches it, `stop()` ends the watch."""

    def __init__(
        self, ingress: Ingress, directory: Path, *, rescan_interval: float = 5.0, settle: float = 1.0
    ) -> None:
        self.ingress = ingress
        self.directory = directory
        self.rescan_interval = rescan_interval
        self.settle = settle
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer: Any = None
        self._rescanner: threading.Thread | None = None
        self.rescans = 0
        """Periodic rescans done (something to wait on instead of sleeping)."""
        for sub in (directory, directory / DONE, directory / REJECTED):
            sub.mkdir(parents=True, exist_ok=True)

    # -- handling one file ------------------------------------------------------------------------

    def process(self, path: Path) -> Outcome | None:
        """Record one file and move it aside; None when it is not (or no longer) an inbox file."""
        with self._lock:
            if path.parent != self.directory or not _candidate(path) or not path.is_file():
                return None
            try:
                size = path.stat().st_size
                if size > MAX_EVENT_BYTES:
                    return self._reject(
                        path, f"{path.name}: file is {size} bytes; expected at most {MAX_EVENT_BYTES}"
                    )
                raw = path.read_bytes()
            except FileNotFoundError:
                return None  # taken by another scan or removed by its writer
            try:
                receipt = self.ingress.submit_json(raw, origin=f"inbox file {path.name}", seed=True)
            except (EventError, Rejected) as exc:
                return self._reject(path, str(exc))
            except Exception as exc:  # the ledger could not take it now: leave the file, retry later
                message = redact(f"{type(exc).__name__}: {exc}")
                log.warning("inbox_retry_later", file=path.name, error=message)
                return Outcome(path, None, error=message)
            target = _free_name(self.directory / DONE, path.name)
            path.replace(target)
            target.with_name(target.name + ".receipt.json").write_text(
                json.dumps(receipt.as_dict(), indent=2) + "\n"
            )
            log.info("inbox_recorded", file=path.name, context=receipt.context, event_type=receipt.type)
            return Outcome(path, target, receipt=receipt)

    def _reject(self, path: Path, reason: str) -> Outcome:
        target = _free_name(self.directory / REJECTED, path.name)
        path.replace(target)
        target.with_name(target.name + ".error").write_text(reason + "\n")
        log.warning("inbox_rejected", file=path.name, reason=reason)
        return Outcome(path, target, error=reason)

    def scan(self, *, settled_only: bool = False) -> list[Outcome]:
        """Handle every file now in the directory (oldest first); bounded per call."""
        now = time.time()
        found = []
        try:
            entries = sorted(
                (p for p in self.directory.iterdir() if p.is_file() and _candidate(p)),
                key=lambda p: p.stat().st_mtime,
            )
        except FileNotFoundError:
            return []
        for path in entries[:MAX_FILES_PER_SCAN]:
            try:
                if settled_only and now - path.stat().st_mtime < self.settle:
                    continue
            except FileNotFoundError:
                continue
            outcome = self.process(path)
            if outcome is not None:
                found.append(outcome)
        return found

    # -- watching ---------------------------------------------------------------------------------

    def start(self) -> Inbox:
        """Scan once, then watch (watchdog) and rescan every `rescan_interval` seconds."""
        self.scan()
        handler = _Handler(self)
        observer = Observer()
        observer.schedule(handler, str(self.directory), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._rescanner = threading.Thread(target=self._rescan_loop, name="inbox-rescan", daemon=True)
        self._rescanner.start()
        log.info("inbox_watching", directory=str(self.directory))
        return self

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.rescan_interval):
            try:
                self.scan(settled_only=True)
            except Exception as exc:  # never let the watcher die silently
                log.error("inbox_scan_failed", error=redact(f"{type(exc).__name__}: {exc}"))
            self.rescans += 1

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if self._rescanner is not None:
            self._rescanner.join(timeout)
            self._rescanner = None


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            target = event.dest_path
        elif isinstance(event, FileClosedEvent):
            target = event.src_path
        else:
            return
        path = Path(target.decode() if isinstance(target, bytes) else target)
        try:
            self.inbox.process(path)
        except Exception as exc:
            log.error("inbox_file_failed", file=path.name, error=redact(f"{type(exc).__name__}: {exc}"))
