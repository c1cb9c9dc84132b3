"""Real parts made faulty: an HTTP proxy that misbehaves on demand, a tiny disk, captured logs.

- `FaultProxy`: an HTTP/1.1 proxy on 127.0.0.1 in front of a real server (a git
  smart-HTTP server, Prometheus, the Kubernetes API double). It forwards every
  request unchanged (streaming responses such as watches chunk by chunk) until a
  test tells it to answer with a status (`fail`), to hold a request before
  forwarding it (`delay`), or to forward it and hold the answer (`delay(...,
  after_forward=True)`: the server did the work, the client times out — the way a
  create "fails" that in fact succeeded). `down()` / `up()` close and reopen the
  listening socket on the same port (connection refused in between). Rules match
  a method and a path regex and may be limited to the first `times` requests;
  `hits` counts what each rule did.
- `tiny_disk` fixture: a tmpfs of a few MiB mounted for the test (root only; the
  test is skipped where mounting is not permitted) and `fill(path)` to use up its
  free space with a file the test removes again.
- `captured_logs` fixture: structlog configured as `reconciler run` configures it
  (JSON lines, the redaction processor) into a buffer the test can read and scan.

Every server and mount is stopped or unmounted at teardown.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog

from reconciler.runtime.observability import configure_logging
from tests.support.httpbody import read_body

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    }
)
UPSTREAM_TIMEOUT = 30.0
"""Seconds the proxy waits on the real server (a watch with no news ends after this)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Rule:
    """What to do with matching requests: answer `status`, or wait `delay` seconds (before or after forwarding)."""

    method: str | None
    path: re.Pattern[str]
    status: int | None = None
    body: bytes = b""
    delay: float = 0.0
    after_forward: bool = False
    times: int | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method == method) and bool(self.path.search(path))


@dataclass
class FaultProxy:
    target: str
    """Base URL of the real server, e.g. http://127.0.0.1:9090."""
    port: int = field(default_factory=free_port)
    rules: list[Rule] = field(default_factory=list)
    requests: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: set[http.client.HTTPConnection] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(
        self,
        status: int,
        *,
        method: str | None = None,
        path: str = "",
        times: int | None = None,
        body: bytes = b"",
    ) -> Rule:
        rule = Rule(method, re.compile(path), status=status, body=body, times=times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def delay(
        self,
        seconds: float,
        *,
        method: str | None = None,
        path: str = "",
        times: int | None = None,
        after_forward: bool = False,
    ) -> Rule:
        rule = Rule(method, re.compile(path), delay=seconds, after_forward=after_forward, times=times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self.requests += 1
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    return rule
        return None

    def up(self) -> FaultProxy:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        server.allow_reuse_address = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        _wait_listening(self.port)
        return self

    def down(self) -> None:
        """Stop listening: clients get connection refused until `up()`."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            relaying = list(self._open)
        for conn in relaying:  # streams in flight (watches) end now, as when a server goes away
            with contextlib.suppress(OSError, AttributeError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


ThreadingHTTPServer.allow_reuse_address = True


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(proxy.target)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _body(self) -> bytes:
            return read_body(self)

        def _answer(self, status: int, body: bytes) -> None:
            payload = body or f'{{"kind":"Status","code":{status},"message":"injected fault"}}'.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _serve(self) -> None:
            body = self._body()
            rule = proxy.take(self.command, self.path)
            if rule is not None and rule.status is not None:
                self._answer(rule.status, rule.body)
                return
            if rule is not None and not rule.after_forward:
                time.sleep(rule.delay)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=UPSTREAM_TIMEOUT
            )
            with proxy._lock:
                proxy._open.add(conn)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                if rule is not None and rule.after_forward:
                    response.read()
                    time.sleep(rule.delay)
                    self.close_connection = True
                    return
                self._relay(response)
            except (OSError, http.client.HTTPException):
                self.close_connection = True
            finally:
                with proxy._lock:
                    proxy._open.discard(conn)
                conn.close()

        def _relay(self, response: http.client.HTTPResponse) -> None:
            chunked = response.getheader("Content-Length") is None
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", response.getheader("Content-Length") or "0")
            self.end_headers()
            while True:
                data = response.read1(65536)
                if not data:
                    break
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_PATCH = _serve
        do_DELETE = _serve

    return Handler


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    """`fault_proxy(target_url)` makes a started proxy; all are stopped at teardown."""
    made: list[FaultProxy] = []

    def make(target: str) -> FaultProxy:
        proxy = FaultProxy(target)
        made.append(proxy)
        return proxy.up()

    try:
        yield make
    finally:
        for proxy in made:
            proxy.down()


# ----------------------------------------------------------------------------- a full disk


@dataclass
class TinyDisk:
    path: Path
    size_bytes: int

    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    def fill(self, leave: int = 0) -> Path:
        """Use up the free space (less `leave` bytes) with one file; returns it (delete it to recover)."""
        filler = self.path / "filler.bin"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (1 << 20, 1 << 16, 1 << 12, 1):
                block = b"\0" * size
                with contextlib.suppress(OSError):
                    while shutil.disk_usage(self.path).free > leave:
                        os.write(fd, block)
        finally:
            os.close(fd)
        return filler


def mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs at `path`; returns why not when this sandbox does not allow it."""
    if os.geteuid() != 0:
        return "not root: cannot mount a tmpfs"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return None if done.returncode == 0 else f"mount refused: {done.stderr.strip()}"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[TinyDisk]:
    """A 24 MiB tmpfs for a data directory, unmounted at teardown."""
    path = tmp_path / "tiny-disk"
    why = mount_tmpfs(path, "24m")
    if why is not None:
        pytest.skip(why)
    try:
        yield TinyDisk(path, 24 * 1024 * 1024)
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], capture_output=True, timeout=10).returncode == 0:
                break
            time.sleep(0.1)  # a thread of the stopped app may still hold a file for a moment
        else:  # pygit2 keeps pack files mapped until its objects are collected: detach now, freed then
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10, check=True)


# ----------------------------------------------------------------------------- logs


class CapturedLogs(io.StringIO):
    """JSON log lines as `reconciler run` writes them; thread-safe appends."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            return super().write(s)

    def text(self) -> str:
        with self._lock:
            return self.getvalue()


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    buffer = CapturedLogs()
    configure_logging("json", "debug", stream=buffer)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()
