"""Keeping a copy of the ledger in the upstream: push in batches, retry, give up politely.

Every event is a local commit first (write-ahead); the upstream copy trails it by
at most one push interval, so a reconciler started on an empty data directory can
recover its history (`Ledger.recover`). One push sends every commit since the last
one (a batch). In `auto` mode the reconciler pushes when the upstream lets it: a
refusal for lack of rights switches pushing off (said once in the log) instead of
failing every interval; in `always` mode it keeps retrying and reports the error.

The upstream's copy is never overwritten: when its branch holds commits ours lacks,
the pusher asks `Ledger.sync`, which adopts theirs if it extends ours and verifies
(signed with our key, events the engine could have written), and otherwise leaves
both alone; either way the problem is on the status board (`health`, part
`ledger copy`) and in the log until a push succeeds again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.outcomes import PartHealth
from reconciler.ledger.errors import LedgerError, LedgerRefused
from reconciler.ledger.gitledger import Ledger, PushResult, RemoteAuth, SyncResult

log = get_logger("reconciler.ledger")

Mode = Literal["auto", "always", "never"]
PART = "ledger copy"
"""The status board's name for problems with the upstream's copy of the ledger."""
_NOT_ALLOWED = (
    "401",
    "403",
    "authentication",
    "credentials",
    "permission",
    "not permitted",
    "denied",
    "read-only",
    "read only",
    "service not enabled",
    "access",
    "unauthorized",
)


@dataclass(frozen=True)
class PushStatus:
    """What `reconciler status` shows about the upstream copy of the ledger."""

    mode: Mode
    enabled: bool
    pushed_tip: str | None
    pending: bool
    last_attempt: float | None
    last_error: str | None
    consecutive_failures: int


def refused_for_rights(error: str) -> bool:
    text = error.lower()
    return any(marker in text for marker in _NOT_ALLOWED)


class LedgerPusher:
    """Call `push_if_due()` from a scheduler job; it decides whether a push is worth trying."""

    def __init__(
        self,
        ledger: Ledger,
        remote_url: str,
        credentials: RemoteAuth | None = None,
        *,
        mode: Mode = "auto",
        interval: float = 10.0,
        backoff_max: float = 300.0,
    ) -> None:
        self.ledger = ledger
        self.remote_url = remote_url
        self.credentials = credentials
        self.mode: Mode = mode
        self.interval = interval
        self.backoff_max = backoff_max
        self._enabled = mode != "never"
        self._pushed_tip: str | None = None
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._health: PartHealth | None = None
        self._lock = threading.Lock()

    def status(self) -> PushStatus:
        tip = self.ledger.tip
        with self._lock:
            return PushStatus(
                mode=self.mode,
                enabled=self._enabled,
                pushed_tip=self._pushed_tip,
                pending=self._enabled and tip is not None and tip != self._pushed_tip,
                last_attempt=self._last_attempt,
                last_error=self._last_error,
                consecutive_failures=self._failures,
            )

    def health(self) -> PartHealth | None:
        """How the upstream's copy is doing, as the last push found it (for the problems board)."""
        with self._lock:
            return self._health

    def _due(self, now: float) -> bool:
        if self._last_attempt is None:
            return True
        wait = (
            self.interval if not self._failures else min(self.backoff_max, self.interval * 2**self._failures)
        )
        return now - self._last_attempt >= wait

    def push_if_due(self, *, force: bool = False) -> PushResult | None:
        """Push when enabled, there is something new and the interval (or backoff) has passed."""
        with self._lock:
            now = time.monotonic()
            if not self._enabled or (not force and not self._due(now)):
                return None
            tip = self.ledger.tip
            if tip is None or tip == self._pushed_tip:
                return None
            self._last_attempt = now
        result = self.ledger.push(self.remote_url, self.credentials, attempts=2, retry_delay=0.5)
        if result.remote_ahead:
            result = self._reconcile(result)
        with self._lock:
            if result.pushed:
                self._pushed_tip, self._last_error, self._failures = result.tip, None, 0
                self._health = PartHealth(PART)
                return result
            self._failures += 1
            self._last_error = redact(result.error or "push failed")
            if result.remote_ahead:
                self._health = PartHealth(PART, self._last_error)
            if self.mode == "auto" and not result.remote_ahead and refused_for_rights(self._last_error):
                self._enabled = False
                log.warning(
                    "ledger.push_disabled",
                    reason="the upstream does not accept pushes with these credentials",
                    error=self._last_error,
                    hint="set ledger_push=always to insist, or never to silence this",
                )
            return result

    def _reconcile(self, refused: PushResult) -> PushResult:
        """The upstream's branch has commits ours lacks: adopt them if they extend ours and verify
        (then there is nothing left to push), else say what is wrong; never overwrite."""
        try:
            outcome = self.ledger.sync(self.remote_url, self.credentials)
        except LedgerRefused as exc:
            log.error("ledger.copy_refused", commit=exc.commit, problem=exc.problem, error=str(exc))
            return PushResult(tip=refused.tip, pushed=False, attempts=1, error=str(exc), remote_ahead=True)
        except LedgerError as exc:
            return PushResult(tip=refused.tip, pushed=False, attempts=1, error=str(exc))
        if outcome.state == "adopted":
            return PushResult(tip=outcome.theirs, pushed=True, attempts=1)
        if outcome.state == "diverged":
            message = diverged_message(self.ledger, outcome)
            log.error("ledger.copy_diverged", ours=outcome.ours, theirs=outcome.theirs, error=message)
            return PushResult(tip=refused.tip, pushed=False, attempts=1, error=message, remote_ahead=True)
        return self.ledger.push(self.remote_url, self.credentials, attempts=1)  # it moved: try once more


def diverged_message(ledger: Ledger, outcome: SyncResult) -> str:
    return (
        f"ledger {ledger.path}: the upstream's {ledger.branch} (commit {(outcome.theirs or '')[:12]}) and ours "
        f"(commit {(outcome.ours or '')[:12]}) diverged: {outcome.theirs_only} commit(s) only there, "
        f"{outcome.ours_only} only here. Neither is overwritten and nothing is pushed until one contains the "
        "other (e.g. a data directory restored from an older backup while the reconciler that wrote the "
        "upstream's copy went on)"
    )
