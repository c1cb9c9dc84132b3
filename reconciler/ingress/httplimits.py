"""Bounds on what the HTTP API's clients may hold: connections, and time to send a request.

Without them a few thousand sockets that send half a header and then nothing (a
slowloris flood; no token is needed to open a socket) took every file descriptor
the process had, and the ledger and git could no longer open theirs. uvicorn (as
pinned) has no header-read timeout, and its `limit_concurrency` answers 503 only
once a request's headers are complete, which such a socket never sends; so the
bounds live in a thin subclass of uvicorn's h11 protocol:

- at most `max_connections` open at once: the next is answered 503 and closed at
  accept, holding its descriptor for microseconds;
- `read_timeout` seconds from a connection's first byte (or its opening) until the
  request's headers and body are in; then it is closed (408 when nothing was
  answered yet). Idle keep-alive connections close after uvicorn's
  `timeout_keep_alive`;
- headers are bounded by h11's incomplete-event size (`MAX_HEADER_BYTES`), bodies
  by the routes (`read_body`).

`max_connections` is kept well below the descriptor limit (`connection_cap`), so the
ledger, the mirror, jobs and logs keep descriptors whatever the clients do. Refusals
and timeouts are counted, logged at most every few seconds, and shown on the
problems board while they go on.

May import: uvicorn, h11, `reconciler.runtime.health`, `reconciler.base.redact`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from reconciler.base.logs import get_logger
from reconciler.runtime import health

log = get_logger("reconciler.ingress.http")

FD_RESERVE = 128
"""Descriptors kept out of the API's reach, for the ledger, the mirror, git, jobs and logs."""
MAX_HEADER_BYTES = 16 * 1024
"""Request line plus headers; larger is refused by h11 (400). Keptn clients send well under 2 KiB."""
KEEP_ALIVE = 5
"""Seconds an idle keep-alive connection stays open (uvicorn's default, stated here)."""
REPORT_EVERY = 10.0
"""Seconds between log lines summing up refused and timed-out connections."""
QUIET_AFTER = 30.0
"""Seconds without a refusal or timeout after which the problem leaves the board."""
HEALTH_PART = "http api"


def connection_cap(wanted: int, open_files_limit: int) -> int:
    """At most half of the descriptors left after `FD_RESERVE`: a flood can never starve the rest
    (the other half absorbs the accept bursts, see `accept_burst`)."""
    return max(1, min(wanted, (open_files_limit - FD_RESERVE) // 2))


def accept_burst(cap: int) -> int:
    """The listen backlog, which is also how many sockets asyncio accepts per wake-up of its loop.

    A socket beyond the cap is refused only in `connection_made`, two loop iterations after
    its accept, and its descriptor closes one more iteration later; meanwhile the loop may
    accept a batch per iteration. So up to about four batches sit above the cap during a
    flood (measured: a backlog equal to the cap of 64 put 256 descriptors in use and hit
    EMFILE). A quarter of the cap keeps the total near twice the cap, inside the half of
    the descriptors `connection_cap` leaves for it; further connections wait in the kernel,
    where they cost none.
    """
    return max(8, cap // 4)


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"code": status, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body


@dataclass
class ConnectionLimits:
    """One server's bounds and its tally of what they turned away (touched only on its event loop)."""

    max_connections: int
    read_timeout: float
    refused: int = 0
    timed_out: int = 0
    _reported: tuple[int, int] = (0, 0)
    _last_log: float = 0.0
    _last_trouble: float = 0.0
    _quiet_check: asyncio.TimerHandle | None = field(default=None, repr=False)

    def note(self, what: str, loop: asyncio.AbstractEventLoop) -> None:
        if what == "refused":
            self.refused += 1
        else:
            self.timed_out += 1
        now = time.monotonic()
        self._last_trouble = now
        if now - self._last_log >= REPORT_EVERY:
            self._summarize(now)
        if self._quiet_check is None:
            self._quiet_check = loop.call_later(QUIET_AFTER, self._check_quiet, loop)

    def _summarize(self, now: float) -> None:
        refused = self.refused - self._reported[0]
        timed_out = self.timed_out - self._reported[1]
        self._reported = (self.refused, self.timed_out)
        self._last_log = now
        if not (refused or timed_out):
            return
        log.warning(
            "api_connections_turned_away",
            refused_at_cap=refused,
            timed_out=timed_out,
            max_connections=self.max_connections,
            read_timeout=self.read_timeout,
        )
        health.report(
            HEALTH_PART,
            f"clients are holding the API at its limits: {self.refused} connections refused at the cap of "
            f"{self.max_connections}, {self.timed_out} closed for not sending a request within "
            f"{self.read_timeout:g}s (since start); the reconciler keeps running",
        )

    def _check_quiet(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        self._summarize(now)
        if now - self._last_trouble >= QUIET_AFTER:
            self._quiet_check = None
            health.clear(HEALTH_PART)
        else:
            self._quiet_check = loop.call_later(QUIET_AFTER, self._check_quiet, loop)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a request read deadline."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = False
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(
                _raw_response(
                    503,
                    "Service Unavailable",
                    f"too many connections (at most {self.limits.max_connections}); try again shortly",
                )
            )
            transport.close()
            self.limits.note("refused", self.loop)
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self.conn.their_state is h11.IDLE:
            self._arm()  # a new request starts (after a keep-alive pause, or pipelined)
        super().data_received(data)
        if (
            self.conn.their_state not in (h11.IDLE, h11.SEND_BODY)
            or self.transport.get_protocol() is not self
        ):
            self._disarm()  # headers and body are in (or a WebSocket took over); the app answers in its own time

    def _arm(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.limits.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        self.limits.note("timed out", self.loop)
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            # Nothing was answered on this cycle: say why before closing.
            self.transport.write(
                _raw_response(
                    408,
                    "Request Timeout",
                    f"the request was not sent within {self.limits.read_timeout:g}s",
                )
            )
        # Mid-body the app sees a disconnect (`read_body` turns it into a 408 nobody reads).
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class for `uvicorn.Config(http=...)` bound to one server's `limits`."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
