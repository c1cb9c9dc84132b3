"""What is wrong right now with the parts the reconciler depends on, for status.json and logs.

A fault in a dependency (the Kubernetes API answering 500, Prometheus not
answering, the data directory full, the clock jumping) is handled where it
happens — retried, or turned into a failed task — but a person looking at
`reconciler status` must also see that it is happening, not only the poll's
upstream health. Adapters return how a part is doing (`core.outcomes.PartHealth`, in an
executor's outcome or from a runner's `health()`); the controller notes it here, and
`reconciler status` shows the board. One board per process, like the secret registry.

Messages are redacted on the way in. May import: `reconciler.base.redact`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.outcomes import PartHealth

log = get_logger("reconciler.runtime.health")

_lock = threading.Lock()
_board: dict[str, dict[str, Any]] = {}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def report(part: str, message: str, *, retrying: bool = True) -> None:
    """`part` is failing; `retrying` says whether the reconciler is trying again by itself."""
    text = redact(message)
    with _lock:
        entry = _board.get(part)
        first = entry is None
        if entry is None:
            entry = _board[part] = {"since": _now(), "count": 0}
        entry.update(message=text, last=_now(), retrying=retrying)
        entry["count"] += 1
    if first:
        log.warning("health.problem", part=part, message=text, retrying=retrying)


def clear(part: str) -> None:
    """`part` works again."""
    with _lock:
        entry = _board.pop(part, None)
    if entry is not None:
        log.info("health.recovered", part=part, after_failures=entry["count"], since=entry["since"])


def note(part: PartHealth | None) -> None:
    """A part's health as an adapter returned it: reported, or cleared when it works."""
    if part is None:
        return
    if part.problem is None:
        clear(part.part)
    else:
        report(part.part, part.problem, retrying=part.retrying)


def snapshot() -> dict[str, dict[str, Any]]:
    with _lock:
        return {part: dict(entry) for part, entry in sorted(_board.items())}


def reset() -> None:
    """Forget every problem (a new App in the same process starts clean)."""
    with _lock:
        _board.clear()


CLOCK_TOLERANCE = 5.0
"""Seconds the wall clock may drift from the monotonic clock between two looks before it counts as a jump."""
CLOCK_SHOWN_FOR = 600.0
"""Seconds a clock jump stays on the board after it happened."""


@dataclass
class ClockWatch:
    """Notices the wall clock jumping (NTP stepping it, a VM resumed, a person setting it).

    Deadlines, timeframes and event times come from the wall clock, so a jump
    changes them: a backward jump postpones deadlines, a forward one may expire
    them. Nothing can be undone, but a person must be able to see why.
    """

    tolerance: float = CLOCK_TOLERANCE
    _wall: datetime | None = None
    _mono: float = 0.0
    _jumped_at: float | None = None

    def observe(self, wall: datetime, mono: float) -> float | None:
        """Seconds the wall clock jumped since the last look (None within tolerance); reports it."""
        jump: float | None = None
        if self._wall is not None:
            drift = (wall - self._wall).total_seconds() - (mono - self._mono)
            if abs(drift) > self.tolerance:
                jump = drift
        self._wall, self._mono = wall, mono
        if jump is not None:
            self._jumped_at = mono
            direction = "forward" if jump > 0 else "backward"
            log.warning("clock_jumped", seconds=round(jump, 3), now=wall.isoformat())
            report(
                "clock",
                f"the wall clock jumped {direction} by {abs(jump):.0f}s (now {wall.isoformat()}); deadlines, "
                "timeframes and event times follow the new time",
                retrying=False,
            )
        elif self._jumped_at is not None and mono - self._jumped_at > CLOCK_SHOWN_FOR:
            self._jumped_at = None
            clear("clock")
        return jump
