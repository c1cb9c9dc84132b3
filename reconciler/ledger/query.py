"""Selecting ledger events the way `reconciler events` filters them: pure, over recorded events.

Filters combine with AND. A context matches by prefix, so the short ids shown in
tables and in `git log --oneline` can be pasted back; a type matches exactly or as
a shell glob (`sh.keptn.event.qa.*`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel

from reconciler.base.clock import utcnow
from reconciler.formats.events import KeptnEvent
from reconciler.formats.gotime import TimestampError, parse_go_duration, parse_time_arg


class EventFilter(BaseModel):
    context: str | None = None
    type: str | None = None
    project: str | None = None
    stage: str | None = None
    service: str | None = None
    since: datetime | None = None

    def matches(self, event: KeptnEvent) -> bool:
        if self.context and not event.shkeptncontext.startswith(self.context):
            return False
        if self.type and not (event.type == self.type or fnmatch.fnmatchcase(event.type, self.type)):
            return False
        if self.project and event.project != self.project:
            return False
        if self.stage and event.stage != self.stage:
            return False
        if self.service and event.service != self.service:
            return False
        if self.since is not None:
            try:
                return event.timestamp >= self.since
            except (TimestampError, ValueError):
                return False
        return True


def select(events: Iterable[KeptnEvent], flt: EventFilter, limit: int | None = None) -> list[KeptnEvent]:
    """Matching events, oldest first; with `limit`, the newest `limit` of them."""
    out = [e for e in events if flt.matches(e)]
    return out[-limit:] if limit else out


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """A timestamp (RFC 3339 or Unix seconds) or a Go duration meaning "that long ago" (`30m`, `2h`)."""
    try:
        return (now or utcnow()) - parse_go_duration(text)
    except ValueError:
        pass
    try:
        return parse_time_arg(text)
    except (TimestampError, ValueError):
        raise ValueError(
            f"invalid --since {text!r}; expected a duration like 30m or 2h, an RFC 3339 time "
            "like 2024-05-01T10:00:00Z, or Unix seconds"
        ) from None
