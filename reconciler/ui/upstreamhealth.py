"""The upstream page: what each branch serves, what was refused and why, fetch health, problems.

All of it is the running reconciler's status (`App.status()`, what `reconciler
status` and `/v1/status` show); nothing is read from the upstream here. Texts are
redacted again on the way out, though the status never holds a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.base.redact import redact
from reconciler.ui import fmt


@dataclass(frozen=True)
class BranchLine:
    branch: str
    served: str
    fetched: str
    rejected_commit: str
    problems: list[str]


@dataclass(frozen=True)
class Health:
    available: bool
    phase: str
    leader: str
    url: str
    state: str
    reachable: Any
    authenticated: Any
    last_success: str
    last_success_ago: str
    last_attempt: str
    last_error: str
    last_error_at: str
    consecutive_failures: int
    next_attempt: str
    polls: int
    watching: bool
    last_fetch: str
    branches: list[BranchLine]
    problems: list[dict[str, Any]]
    ledger: dict[str, Any]


def _text(value: Any) -> str:
    return redact(str(value)) if value not in (None, "") else ""


def _state(up: Mapping[str, Any]) -> str:
    if not up.get("last_attempt"):
        return "starting"
    if up.get("consecutive_failures"):
        return "backing-off"
    return "ok"


def build(status: Mapping[str, Any] | None, now: datetime) -> Health:
    status = status or {}
    up = status.get("upstream") if isinstance(status.get("upstream"), dict) else {}
    assert isinstance(up, dict)
    accepted = up.get("accepted") if isinstance(up.get("accepted"), dict) else {}
    fetched = up.get("branches") if isinstance(up.get("branches"), dict) else {}
    rejected = up.get("rejected") if isinstance(up.get("rejected"), dict) else {}
    assert isinstance(accepted, dict) and isinstance(fetched, dict) and isinstance(rejected, dict)
    lines = []
    for branch in sorted(set(accepted) | set(fetched) | set(rejected)):
        refused = rejected.get(branch) if isinstance(rejected.get(branch), dict) else {}
        assert isinstance(refused, dict)
        lines.append(
            BranchLine(
                branch=_text(branch),
                served=_text(accepted.get(branch)),
                fetched=_text(fetched.get(branch)),
                rejected_commit=_text(refused.get("commit")),
                problems=[_text(p) for p in refused.get("problems") or []],
            )
        )
    problems = []
    board = status.get("problems") if isinstance(status.get("problems"), dict) else {}
    assert isinstance(board, dict)
    for part, entry in sorted(board.items()):
        entry = entry if isinstance(entry, dict) else {}
        problems.append(
            {
                "part": _text(part),
                "message": _text(entry.get("message")),
                "since": _text(entry.get("since")),
                "count": entry.get("count", 1),
                "retrying": bool(entry.get("retrying")),
            }
        )
    fetch_seconds = up.get("last_fetch_seconds")
    return Health(
        available=bool(status),
        phase=_text(status.get("phase")),
        leader=_text(status.get("leader")),
        url=_text(up.get("url")),
        state=_state(up),
        reachable=up.get("reachable"),
        authenticated=up.get("authenticated"),
        last_success=_text(up.get("last_success")),
        last_success_ago=fmt.ago(str(up.get("last_success") or ""), now),
        last_attempt=_text(up.get("last_attempt")),
        last_error=_text(up.get("last_error")),
        last_error_at=_text(up.get("last_error_at")),
        consecutive_failures=int(up.get("consecutive_failures") or 0),
        next_attempt=_text(up.get("next_attempt")),
        polls=int(up.get("polls") or 0),
        watching=bool(up.get("watching")),
        last_fetch=fmt.duration(fetch_seconds) if isinstance(fetch_seconds, int | float) else "-",
        branches=lines,
        problems=problems,
        ledger=dict(ledger) if isinstance(ledger := status.get("ledger"), dict) else {},
    )
