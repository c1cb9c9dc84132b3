"""How times, durations and outcomes read on a page (pure; the templates call these)."""

from __future__ import annotations

import html
from datetime import datetime

from reconciler.base.redact import registered_secrets
from reconciler.formats.gotime import parse_timestamp
from reconciler.runtime.statusview import outcome_of as outcome_of

OUTCOME_LABELS = {
    "pass": "pass",
    "warning": "warning",
    "fail": "fail",
    "started": "running",
    "waiting": "waiting",
    "waitingForApproval": "waiting for approval",
    "paused": "paused",
    "timedOut": "timed out",
    "aborted": "aborted",
    "finished": "finished",
}
"""`statusview.outcome` words as a person reads them."""


def label(outcome: str) -> str:
    return OUTCOME_LABELS.get(outcome, outcome)


def parse(ts: str) -> datetime | None:
    if not ts:
        return None
    try:
        return parse_timestamp(ts)
    except ValueError:
        return None


def ago(ts: str, now: datetime) -> str:
    at = parse(ts)
    if at is None:
        return ""
    seconds = (now - at).total_seconds()
    if seconds < 0:
        return "just now"
    return f"{duration(seconds)} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def short_time(ts: str) -> str:
    """`2026-01-01T10:42:07.123Z` -> `01-01 10:42:07`."""
    at = parse(ts)
    if at is None:
        return ts
    return at.strftime("%m-%d %H:%M:%S")


def number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    return f"{value:.4g}"


def without_secrets(text: str) -> str:
    """Every registered secret replaced, raw and as HTML-escaped: the last pass over a page.

    Not `observability.redact`, whose URL-credential pattern rescans each run of letters
    and digits (quadratic on the base64 SLO files evaluations carry: 2 ms per event, two
    thirds of a context page); short texts that may quote a URL go through `redact`.
    """
    for secret in sorted(registered_secrets(), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
        escaped = html.escape(secret)
        if escaped != secret and escaped in text:
            text = text.replace(escaped, "***")
    return text
