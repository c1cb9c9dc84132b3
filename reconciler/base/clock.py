"""The wall clock, as one name the shell passes down.

The pure layers (`formats`, `core`) never read the clock: a time is an argument, so
the same inputs give the same decision, and a simulation can drive time itself
(`reconciler simulate`). The shell reads it here and hands it on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
