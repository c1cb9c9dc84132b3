"""The evaluation window of an `evaluation.triggered` event (spec 4.2); pure, `now` is an argument.

Users write `timeframe: 5m` in their shipyard, or send explicit start/end, or rely
on the preceding test task's start/end; the window decides which samples the
SLIs see, so it follows lighthouse's rules and error texts exactly (they end up in
the `evaluation.finished` message a person reads).

May import: `reconciler.formats.gotime` and `reconciler.formats.events`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from reconciler.formats.events import format_time
from reconciler.formats.gotime import DurationError, TimestampError, parse_go_duration, parse_timestamp

NO_TIMEFRAME = "evaluation.triggered event does not contain evaluation timeframe"


class TimeframeError(ValueError):
    """The window cannot be resolved; the text is what `evaluation.finished` reports."""


@dataclass(frozen=True)
class Window:
    """Start and end as they go into `get-sli.triggered` (strings, like Keptn's)."""

    start: str
    end: str


def _text(block: Any, key: str) -> str:
    if not isinstance(block, dict):
        return ""
    value = block.get(key)
    return value if isinstance(value, str) else ""


_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_UNIT = re.compile(r"[^\d.]*")
_GO_UNITS = ("ns", "us", "µs", "μs", "ms", "s", "m", "h")


def _go_duration_error(text: str) -> str:
    """Go's `time.ParseDuration` error text, which Keptn puts into its message."""
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    s = text[1:] if text[:1] in ("+", "-") else text
    while s:
        number = _NUMBER.match(s)
        if number is None:
            break
        s = s[number.end() :]
        unit = _UNIT.match(s)
        name = unit.group(0) if unit else ""
        if not name:
            return f"time: missing unit in duration {quoted}"
        if name not in _GO_UNITS:
            return f'time: unknown unit "{name}" in duration {quoted}'
        s = s[len(name) :]
    return f"time: invalid duration {quoted}"


def _duration(text: str) -> timedelta:
    try:
        return parse_go_duration(text)
    except DurationError:
        raise TimeframeError(f"could not parse provided timeframe: {_go_duration_error(text)}") from None


def _timestamp(text: str, field: str) -> datetime:
    try:
        return parse_timestamp(text)
    except TimestampError:
        raise TimeframeError(
            f"could not parse {field} {text!r}: expected a timestamp such as 2024-01-01T10:00:00.000Z"
        ) from None


def start_end(start: str, end: str, timeframe: str, now: datetime) -> tuple[datetime, datetime]:
    """Keptn's `GetStartEndTime`: validate, then derive the missing bound (spec 4.2 step 3)."""
    if start and not end and not timeframe:
        raise TimeframeError("no timeframe or end date provided")
    if end and timeframe:
        raise TimeframeError("'end' and 'timeframe' are mutually exclusive")
    if end and not start:
        raise TimeframeError("start date is required when using an end date")
    length = _duration(timeframe or "5m")
    t_end = now
    t_start = now - length
    if start:
        t_start = _timestamp(start, "start date")
    if end:
        t_end = _timestamp(end, "end date")
    if start and not end and timeframe:
        t_end = t_start + length
    if (t_end - t_start).total_seconds() / 60 < 1:
        raise TimeframeError("end date must be at least 1 minute after start date")
    return t_start, t_end


def resolve_window(data: dict[str, Any], now: datetime) -> Window:
    """The window of an `evaluation.triggered` data block.

    `evaluation.start`+`end` or `evaluation.timeframe` win; else the preceding test's
    `test.start`/`test.end`, passed on verbatim as Keptn does; else an error. Unlike
    Keptn, a time given with an offset is printed in UTC (Keptn prints the local
    clock reading with a `Z`, which names a different instant).
    """
    evaluation = data.get("evaluation")
    e_start = _text(evaluation, "start")
    e_end = _text(evaluation, "end")
    e_timeframe = _text(evaluation, "timeframe")
    if (e_start and e_end) or e_timeframe:
        t_start, t_end = start_end(e_start, e_end, e_timeframe, now)
        return Window(start=format_time(t_start), end=format_time(t_end))
    test = data.get("test")
    t_start_s = _text(test, "start")
    t_end_s = _text(test, "end")
    if t_start_s and t_end_s:
        return Window(start=t_start_s, end=t_end_s)
    raise TimeframeError(NO_TIMEFRAME)
