"""The webhook task executor's own records (`reconciler.webhook.*`): what was sent, and what came back.

A webhook request leaves the process; a crash can come between sending it and recording
what it did. So each attempt is recorded in the ledger *before* it is sent (`attempt`),
and its result right after (`answer`). Folded per request (`requests_of`), they tell a
re-run (after a restart, or on a new leader) what it may do:

- an answered request is never sent again: a 2xx counts as done, any other final result
  is the task's failure, rebuilt from the record;
- a request with attempts but no answer was perhaps received: it is sent again with the
  same `Idempotency-Key` (derived from the triggered id, the webhook and the request's
  place), so a receiver that honours the key sees one effect (at-least-once with a key);
- the attempts recorded count against `webhook_max_attempts`, across restarts too.

Records carry no URL, header or payload (they may hold secrets): the request's place, the
attempt's number and the key; answers the result, the status code and the receiver's
bounded, redacted body. They are the engine's own (admission refuses `reconciler.*` from
outside) and the engine's fold ignores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.formats.events import KeptnEvent, derived_id, format_time

SOURCE = "webhook-service"
"""Keptn's webhook-service name: the source of the task's answers and of these records."""
ATTEMPT = "reconciler.webhook.attempt"
ANSWER = "reconciler.webhook.answer"
WEBHOOK_TYPES = frozenset({ATTEMPT, ANSWER})
MAX_RECORD_BODY = 2048


@dataclass(frozen=True)
class Answer:
    result: str
    """success | http-error | timeout | connection-error | refused | interrupted."""
    status_code: int | None = None
    body: str = ""
    reason: str = ""
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.result == "success"


@dataclass
class RequestRecord:
    """What the ledger says about one request of one task's webhook."""

    index: int
    key: str = ""
    attempts: int = 0
    answer: Answer | None = None


@dataclass
class TaskRecords:
    requests: dict[int, RequestRecord] = field(default_factory=dict)

    def request(self, index: int) -> RequestRecord:
        return self.requests.setdefault(index, RequestRecord(index))


def _base(triggered: KeptnEvent) -> dict[str, Any]:
    return {"project": triggered.project, "stage": triggered.stage, "service": triggered.service}


def attempt_record(
    triggered: KeptnEvent, *, key: str, request: int, attempt: int, now: datetime
) -> KeptnEvent:
    """Recorded before attempt `attempt` (1-based, counted across restarts) of request `request` is sent."""
    return KeptnEvent(
        id=derived_id(triggered.id, SOURCE, "attempt", str(request), str(attempt)),
        source=SOURCE,
        type=ATTEMPT,
        time=format_time(now),
        shkeptncontext=triggered.shkeptncontext,
        triggeredid=triggered.id,
        gitcommitid=triggered.gitcommitid,
        data={**_base(triggered), "webhook": {"request": request, "attempt": attempt, "key": key}},
    )


def answer_record(
    triggered: KeptnEvent, *, key: str, request: int, answer: Answer, now: datetime
) -> KeptnEvent:
    """Recorded once request `request` has its final result (after its retries)."""
    block: dict[str, Any] = {
        "request": request,
        "key": key,
        "result": answer.result,
        "attempts": answer.attempts,
    }
    if answer.status_code is not None:
        block["statusCode"] = answer.status_code
    if answer.body:
        block["body"] = answer.body[:MAX_RECORD_BODY]
    if answer.reason:
        block["reason"] = answer.reason[:MAX_RECORD_BODY]
    return KeptnEvent(
        id=derived_id(triggered.id, SOURCE, "answer", str(request)),
        source=SOURCE,
        type=ANSWER,
        time=format_time(now),
        shkeptncontext=triggered.shkeptncontext,
        triggeredid=triggered.id,
        gitcommitid=triggered.gitcommitid,
        data={**_base(triggered), "webhook": block},
    )


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def records_of(triggered_id: str, events: Iterable[KeptnEvent]) -> TaskRecords:
    """The fold of one task's records (events of other tasks and types are skipped)."""
    out = TaskRecords()
    for event in events:
        if event.type not in WEBHOOK_TYPES or event.triggeredid != triggered_id:
            continue
        block = event.data.get("webhook")
        if not isinstance(block, dict):
            continue
        record = out.request(_int(block.get("request"), -1))
        record.key = str(block.get("key") or record.key)
        if event.type == ATTEMPT:
            record.attempts = max(record.attempts, _int(block.get("attempt")))
        elif record.answer is None:
            status = block.get("statusCode")
            record.answer = Answer(
                result=str(block.get("result") or "interrupted"),
                status_code=_int(status) if status is not None else None,
                body=str(block.get("body") or ""),
                reason=str(block.get("reason") or ""),
                attempts=_int(block.get("attempts")),
            )
    return out
