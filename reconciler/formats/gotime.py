"""Go's duration grammar, Keptn's timestamp formats and Go's `%v` for floats.

Keptn users write `triggeredAfter: 1h30m` and `timeframe: 5m` in Go's duration
syntax and read scores printed by Go; reproducing both keeps their files and their
expectations working unchanged (spec section 10).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PAIR = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    pass


def parse_go_duration(text: str) -> timedelta:
    """Parse `1h30m`, `.5s`, `300ms`, `-2m`, `0`; reject `5`, `1d` and the empty string."""
    if not isinstance(text, str):
        raise DurationError(f"invalid duration {text!r}: expected a string such as '5m' or '1h30m'")
    s = text
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return timedelta(0)
    if not s:
        raise DurationError(f"invalid duration {text!r}: expected a number and a unit such as '5m'")
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PAIR.match(s, pos)
        if not m:
            raise DurationError(
                f"invalid duration {text!r}: expected <number><unit> pairs, units ns, us, ms, s, m, h (e.g. '1h30m')"
            )
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if total * sign > 10 * 365 * 86400:
        raise DurationError(f"invalid duration {text!r}: longer than ten years")
    return timedelta(seconds=sign * total)


_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


class TimestampError(ValueError):
    pass


def parse_timestamp(text: str) -> datetime:
    """Accept Keptn's `…mmmZ`, any RFC 3339 fraction/offset, and naive `YYYY-MM-DDTHH:MM:SS` as UTC."""
    if not isinstance(text, str) or not text:
        raise TimestampError(f"invalid timestamp {text!r}: expected RFC 3339, e.g. 2024-01-01T10:00:00.000Z")
    return _parse_timestamp(text)


def forget_parsed_timestamps() -> None:
    """Empty the memo (`reconciler.formats.events.forget_parsed` says when and why)."""
    _parse_timestamp.cache_clear()


@lru_cache(maxsize=1024)
def _parse_timestamp(text: str) -> datetime:
    """Remembered: each step's plan and metrics read the times of every open task's events again
    (~70,000 parses in the scale bench's 600 transitions); a `datetime` is immutable. 1,024
    entries (~200 KB) hold the open tasks' times of 50 deliveries in flight with room to spare."""
    s = text.strip()
    if _NAIVE.match(s):
        return datetime.fromisoformat(s).replace(tzinfo=UTC)
    try:
        # Python 3.11 accepts 'Z' and any number of fraction digits up to 6.
        frac = re.match(r"^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$", s)
        if frac and len(frac.group(2)) > 6:
            s = f"{frac.group(1)}.{frac.group(2)[:6]}{frac.group(3)}"
        ts = datetime.fromisoformat(s)
    except ValueError:
        raise TimestampError(
            f"invalid timestamp {text!r}: expected RFC 3339, e.g. 2024-01-01T10:00:00.000Z"
        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts


def parse_time_arg(text: str) -> datetime:
    """CLI/SLI timestamps: RFC 3339 or Unix seconds."""
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return parse_timestamp(text)


def go_float(value: float) -> str:
    """Go's `%v` of a float64 (strconv 'g', shortest digits).

    Exponent form when the decimal exponent is < -4 or >= 6 (`1e+06`,
    `1.234567e+06`, `1e-05`); otherwise plain digits without a trailing `.0`
    (`62.5`, `75`, `66.66666666666667`). Used for scores in messages and for
    numbers that job-executor-service puts into env vars.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mant, _, exp_s = repr(abs(float(value))).partition("e")
    int_part, _, frac_part = mant.partition(".")
    if frac_part == "0":
        frac_part = ""
    if exp_s:
        digits = (int_part + frac_part).rstrip("0")
        exp10 = int(exp_s) + len(int_part) - 1
    elif int_part != "0":
        digits = (int_part + frac_part).rstrip("0")
        exp10 = len(int_part) - 1
    else:
        stripped = frac_part.lstrip("0")
        exp10 = -(len(frac_part) - len(stripped)) - 1
        digits = stripped.rstrip("0")
    digits = digits or "0"
    if exp10 < -4 or exp10 >= 6:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{m}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 >= 0:
        whole = digits[: exp10 + 1].ljust(exp10 + 1, "0")
        frac = digits[exp10 + 1 :]
        return sign + whole + ("." + frac if frac else "")
    return sign + "0." + "0" * (-exp10 - 1) + digits
