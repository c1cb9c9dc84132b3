"""Ids and times for events tests build by hand: the event model takes both as arguments.

`now_text()` is the wall clock in Keptn's format (an event a live engine must not find
overdue); `T0`/`T0_TEXT` a fixed instant for pure cases; `new_id()` a random id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from reconciler.base.clock import utcnow
from reconciler.formats.events import format_time

T0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
T0_TEXT = format_time(T0)


def now_text() -> str:
    return format_time(utcnow())


def new_id() -> str:
    return str(uuid.uuid4())
