"""The engine state's checkpoint: the second kind of `checkpoint` (the catalog is the first).

Folding 100,000 events through `engine_state.apply` takes ~10 s at start-up; the folded
state is a few hundred executions. So the control loop saves it now and then (in the
background, at most every `SAVE_EVERY` events, and at a clean stop; at once after a start
that folded the whole ledger, which then runs on the state read back from it, see
`App._resume_from_own_checkpoint`) together with the ledger commit it covers, and a start loads it and folds only the events after that
commit. It is a ledger-derived cache, never the source of truth: the file is used only
when its tip is the current tip or an ancestor of it, the ledger's event at the position
it claims is the one that commit recorded, and the state it holds was compacted with the
same `keep_finished`; anything else (no file, another format version, a damaged or
truncated file, a ledger replaced by another) logs one warning and the ledger is folded
from its first event, exactly as without a checkpoint.

The saved state is the live state with its old finished executions dropped
(`EngineState.compact`), which is what the next compaction would leave: folded on, it
reaches the same state a full replay does at its next compaction (finished executions
never change, so dropping them earlier or later drops the same ones).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.engine_payload import PAYLOAD_VERSION, EngineStatePayload, from_payload
from reconciler.core.engine_state import EngineState
from reconciler.formats.events import KeptnEvent
from reconciler.ledger import checkpoint
from reconciler.ledger.gitledger import DEFAULT_BRANCH, event_id_of

log = get_logger("reconciler.ledger.engine")

KIND = "engine-state"
SAVE_EVERY = 5000
"""Events folded between two saves (the size of a replay's chunk: saving costs about one)."""
TIP_SEARCH = 10_000
"""Commits walked back from the branch tip to find the one that recorded the last folded event."""
_HEX = re.compile(r"[0-9a-f]{40}")


def engine_checkpoint_path(ledger: Path, branch: str = DEFAULT_BRANCH) -> Path:
    """`data_dir/ledger.git` -> `data_dir/ledger.engine` (another branch: `ledger.<branch>.engine`)."""
    if branch == DEFAULT_BRANCH:
        return ledger.with_name(ledger.stem + ".engine")
    return ledger.with_name(f"{ledger.stem}.{re.sub(r'[^A-Za-z0-9._-]', '_', branch)}.engine")


@dataclass(frozen=True)
class Resumed:
    """A loaded checkpoint: the state after the first `events` ledger events (commit `tip`)."""

    state: EngineState
    events: int
    tip: str
    seconds: float
    parts: dict[str, Any]
    """What other parts saved with the state (`EngineStatePayload.parts`)."""


def last_event_id(events: Sequence[KeptnEvent], n: int) -> str:
    """Id of the n-th event, without decoding it when the sequence is the ledger's view."""
    meta = getattr(events, "meta", None)
    return str(meta(n - 1).id) if meta is not None else events[n - 1].id


class EngineCheckpoint:
    """Loads and saves one ledger branch's engine-state checkpoint; thread-safe."""

    def __init__(
        self,
        ledger_path: Path,
        branch: str = DEFAULT_BRANCH,
        *,
        path: Path | None = None,
        save_every: int | None = None,
    ) -> None:
        self.ledger_path = Path(ledger_path)
        self.branch = branch
        self.ref_name = f"refs/heads/{branch}"
        self.path = path if path is not None else engine_checkpoint_path(self.ledger_path, branch)
        self.save_every = SAVE_EVERY if save_every is None else save_every
        self.saved_events = 0
        """Events the newest checkpoint (loaded or written by this process) covers."""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    def load(self, events: Sequence[KeptnEvent], keep_finished: int) -> Resumed | None:
        """The saved state if it covers a prefix of `events` (the ledger's, as of now); else None,
        with one warning saying why (an info line when there is none and none was due)."""
        began = time.monotonic()
        found = checkpoint.read(self.path, KIND, PAYLOAD_VERSION, EngineStatePayload)
        if isinstance(found, checkpoint.Unusable):
            if found.missing and len(events) < self.save_every:
                log.info("engine_checkpoint_missing", checkpoint=str(self.path), reason=found.reason)
            else:
                log.warning(
                    "engine_checkpoint_ignored",
                    checkpoint=str(self.path),
                    reason=found.reason,
                    action="folding the whole ledger",
                )
            return None
        key = found.header.key
        problem = self._mismatch(key, events, keep_finished)
        state: EngineState | None = None
        if problem is None:
            try:
                state = from_payload(found.payload)
            except ValueError as exc:
                problem = f"damaged: {' '.join(str(exc).split())[:200]}"
            else:
                if state.event_count != key["events"]:
                    problem = f"damaged: its state folded {state.event_count} events, its header says {key['events']}"
        if problem is not None or state is None:
            log.warning(
                "engine_checkpoint_ignored",
                checkpoint=str(self.path),
                reason=problem,
                action="folding the whole ledger",
            )
            return None
        n, tip = int(key["events"]), str(key["tip"])
        self.saved_events = n
        seconds = round(time.monotonic() - began, 3)
        log.info(
            "engine_checkpoint_loaded", checkpoint=str(self.path), events=n, tip=tip[:12], seconds=seconds
        )
        return Resumed(state, n, tip, seconds, dict(found.payload.parts))

    def _mismatch(
        self, key: dict[str, str | int], events: Sequence[KeptnEvent], keep_finished: int
    ) -> str | None:
        """Why the checkpoint does not cover a prefix of this ledger's history, or None."""
        tip, n, last, keep = (
            key.get("tip"),
            key.get("events"),
            key.get("last_event"),
            key.get("keep_finished"),
        )
        if key.get("branch") != self.branch:
            return f"is for branch {str(key.get('branch'))[:120]!r}, not {self.branch!r}"
        if not isinstance(tip, str) or not _HEX.fullmatch(tip) or not isinstance(n, int) or n <= 0:
            return "names no tip"
        if not isinstance(last, str):
            return "names no last event"
        if keep != keep_finished:
            return f"was compacted to {keep} finished executions; this reconciler keeps {keep_finished}"
        if n > len(events):
            return f"covers {n} events; the ledger holds {len(events)} (stale: the ledger was replaced)"
        if last_event_id(events, n) != last:
            return f"covers commit {tip[:12]}, which is not in the history of {self.branch} (stale)"
        try:
            repo = pygit2.Repository(str(self.ledger_path))
        except (pygit2.GitError, KeyError, ValueError) as exc:
            return f"cannot be checked against the ledger: {redact(str(exc))[:160]}"
        try:
            try:
                commit = repo[pygit2.Oid(hex=tip)].peel(pygit2.Commit)
            except (KeyError, ValueError, pygit2.GitError):
                return f"covers commit {tip[:12]}, which this ledger does not hold (stale)"
            ref = repo.references.get(self.ref_name)
            if ref is None:
                return f"the ledger has no branch {self.branch!r}"
            head = ref.peel(pygit2.Commit).id
            if head != commit.id and not repo.descendant_of(head, commit.id):
                return f"covers commit {tip[:12]}, which is not in the history of {self.branch} (stale)"
            if event_id_of(commit.message) != last:
                return f"does not end with the event of commit {tip[:12]}"
        finally:
            repo.free()
        return None

    # ------------------------------------------------------------------ saving

    def due(self, events: int) -> bool:
        return self.save_every > 0 and events - self.saved_events >= self.save_every

    def save_soon(
        self, payload: EngineStatePayload, events: int, last_event: str, keep_finished: int
    ) -> bool:
        """Write in the background unless a write is under way; True if one was started."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self.saved_events = events
            thread = threading.Thread(
                target=self.save,
                args=(payload, events, last_event, keep_finished),
                name="engine-checkpoint",
                daemon=False,  # a stopping process waits the fraction of a second rather than lose it
            )
            self._thread = thread
            thread.start()
            return True

    def wait(self, timeout: float = 60.0) -> bool:
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def save(self, payload: EngineStatePayload, events: int, last_event: str, keep_finished: int) -> bool:
        """Write the checkpoint now (the state after the first `events` events, the last of them
        `last_event`); a failure is logged and costs the next start time, nothing else."""
        began = time.monotonic()
        self.saved_events = max(self.saved_events, events)
        try:
            tip = self._commit_of(last_event)
            if tip is None:
                log.info(
                    "engine_checkpoint_not_written",
                    checkpoint=str(self.path),
                    reason=f"no commit of the last {TIP_SEARCH} recorded event {last_event[:64]!r}",
                )
                return False
            key: dict[str, str | int] = {
                "branch": self.branch,
                "tip": tip,
                "events": events,
                "last_event": last_event,
                "keep_finished": keep_finished,
            }
            size = checkpoint.write(self.path, KIND, PAYLOAD_VERSION, key, payload)
        except (OSError, ValueError, pygit2.GitError) as exc:
            log.warning("engine_checkpoint_not_written", checkpoint=str(self.path), error=redact(str(exc)))
            return False
        log.info(
            "engine_checkpoint_written",
            checkpoint=str(self.path),
            events=events,
            executions=len(payload.executions),
            tip=tip[:12],
            bytes=size,
            seconds=round(time.monotonic() - began, 3),
        )
        return True

    def _commit_of(self, event_id: str) -> str | None:
        """The commit that recorded `event_id`: the branch tip or one a few commits behind it."""
        repo = pygit2.Repository(str(self.ledger_path))
        try:
            ref = repo.references.get(self.ref_name)
            if ref is None:
                return None
            commit: pygit2.Commit | None = ref.peel(pygit2.Commit)
            for _ in range(TIP_SEARCH):
                if commit is None:
                    return None
                if event_id_of(commit.message) == event_id:
                    return str(commit.id)
                commit = commit.parents[0] if commit.parents else None
            return None
        finally:
            repo.free()
