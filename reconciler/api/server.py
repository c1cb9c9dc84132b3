"""The HTTP server: uvicorn in a thread, bounded before any route runs.

The server bounds what clients hold — open connections, and the time to send a request — so
a flood of sockets cannot take the descriptors the ledger needs (`ingress.httplimits`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from reconciler.base.logs import get_logger
from reconciler.ingress.httplimits import (
    KEEP_ALIVE,
    MAX_HEADER_BYTES,
    ConnectionLimits,
    accept_burst,
    connection_cap,
    guarded_protocol,
)
from reconciler.runtime.lifecycle import open_files_limit

log = get_logger("reconciler.api")

SERVE_START_TIMEOUT = 10.0
SERVE_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServerLimits:
    """What one client may hold of the server (see `reconciler.ingress.httplimits`)."""

    max_connections: int = 128
    read_timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Any) -> ServerLimits:
        return cls(max_connections=settings.api_max_connections, read_timeout=settings.api_read_timeout)


class ApiServer:
    """uvicorn in a daemon thread: `start()` returns once it listens, `stop()` once it stopped.

    The connection cap is `limits.max_connections`, lowered to what the soft descriptor
    limit allows beside the ledger's and git's reserve (`connection_cap`).
    """

    def __init__(self, app: ASGIApp, listen: str, limits: ServerLimits | None = None) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        wanted = limits or ServerLimits()
        cap = connection_cap(wanted.max_connections, open_files_limit())
        if cap < wanted.max_connections:
            log.warning(
                "api_connections_capped",
                wanted=wanted.max_connections,
                cap=cap,
                open_files_limit=open_files_limit(),
                reason="the descriptor limit leaves room for no more beside the ledger's and git's reserve",
            )
        self.limits = ConnectionLimits(max_connections=cap, read_timeout=wanted.read_timeout)
        config = uvicorn.Config(
            app,
            host=self.host,
            port=int(port or 0),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            http=guarded_protocol(self.limits),
            timeout_keep_alive=KEEP_ALIVE,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            backlog=accept_burst(cap),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets if self.server.servers else []
        return int(sockets[0].getsockname()[1]) if sockets else 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + SERVE_START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"HTTP API could not listen on {self.host}: see the log above")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"HTTP API did not start within {SERVE_START_TIMEOUT:.0f} s")
            time.sleep(0.02)
        log.info("api_listening", url=self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=SERVE_STOP_TIMEOUT)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=SERVE_STOP_TIMEOUT)


def serve(app: ASGIApp, listen: str, limits: ServerLimits | None = None) -> ApiServer:
    """Start the API on `listen` (`host:port`, port 0 picks a free one); call `.stop()` to end it."""
    return ApiServer(app, listen, limits).start()
