"""What one client may hold of the HTTP API's server: connections, and time to send a request.

A real uvicorn server on 127.0.0.1 (`ApiServer`, as `reconciler run` starts it) with small
limits, and raw sockets playing the slow or greedy client. Issue 20, item 3: before these
bounds a socket that sent half a header, or nothing, held its descriptor forever, and
there was no cap on how many did.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket

from reconciler.api import ApiServer, ServerLimits, read_body
from reconciler.ingress.httplimits import FD_RESERVE, connection_cap


def small_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        while True:
            await socket.send_text(await socket.receive_text())

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await read_body(request, 1024))}

    return app


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ApiServer]:
    limits = getattr(request, "param", ServerLimits(max_connections=4, read_timeout=1.0))
    srv = ApiServer(small_app(), "127.0.0.1:0", limits).start()
    try:
        yield srv
    finally:
        srv.stop()


def connect(server: ApiServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (socket.timeout if it does not close in time)."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def open_connections(server: ApiServer) -> int:
    return len(server.server.server_state.connections)


def wait_connections(server: ApiServer, n: int) -> None:
    deadline = time.monotonic() + 5
    while open_connections(server) != n:
        assert time.monotonic() < deadline, f"{open_connections(server)} connections open, expected {n}"
        time.sleep(0.02)


@pytest.mark.parametrize("server", [ServerLimits(max_connections=4, read_timeout=30.0)], indirect=True)
def test_connections_beyond_the_cap_are_answered_503_at_once_and_the_api_serves_again_after(
    server: ApiServer,
) -> None:
    held = [connect(server) for _ in range(4)]
    try:
        wait_connections(server, 4)
        extra = connect(server)
        answer = read_all(extra, timeout=3)  # answered and closed at once, not left hanging
        extra.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer
        assert "too many connections" in json.loads(body)["message"]
        assert open_connections(server) == 4, "the refused connection was kept"
    finally:
        for sock in held:
            sock.close()
    wait_connections(server, 0)
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_a_slowloris_header_is_cut_off_at_the_read_timeout_whatever_it_trickles(server: ApiServer) -> None:
    sock = connect(server)
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    sock.settimeout(0.3)
    answer = b""
    try:
        while time.monotonic() - started < 5:
            try:
                sock.sendall(b"X-Slow: 1\r\n")  # a header every 0.3 s keeps an idle timer from firing
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    finally:
        sock.close()
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert took < 3.5, f"closed after {took:.1f}s; the read timeout is 1 s"
    wait_connections(server, 0)


def test_a_connection_that_sends_nothing_is_closed_at_the_read_timeout(server: ApiServer) -> None:
    sock = connect(server)
    try:
        answer = read_all(sock, timeout=4)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    wait_connections(server, 0)


def test_a_body_that_stops_half_way_is_cut_off_and_the_api_keeps_serving(server: ApiServer) -> None:
    sock = connect(server)
    try:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n0123456789"
        )
        read_all(sock, timeout=4)  # closed (no answer is owed to a request that never finished)
    finally:
        sock.close()
    wait_connections(server, 0)
    response = httpx.post(f"{server.url}/echo", content=b"x" * 100, timeout=5)
    assert response.json() == {"bytes": 100}


def test_a_request_sent_in_time_is_answered_even_when_the_app_is_slower_than_the_read_timeout(
    server: ApiServer,
) -> None:
    """The deadline covers reading the request, not answering it; keep-alive requests each get their own."""
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(3):
            assert client.post("/echo", content=b"abc").json() == {"bytes": 3}
            time.sleep(0.6)  # 1.8 s in all on one connection, beyond the 1 s read timeout


def test_the_cap_leaves_the_reserve_and_half_the_rest_to_everything_else() -> None:
    assert connection_cap(128, 1 << 20) == 128
    assert connection_cap(128, 256) == (256 - FD_RESERVE) // 2
    assert connection_cap(128, 100) == 1  # never zero: the API still answers one at a time


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    """As a shell or container runtime often starts a process: soft 256, hard 512."""
    code = (
        "from reconciler.runtime.lifecycle import raise_open_files_limit, open_files_limit; "
        "import resource; print(raise_open_files_limit(), open_files_limit(), "
        "*resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["512", "512", "512", "512"]


def test_a_websocket_outlives_the_read_timeout(server: ApiServer) -> None:
    """The deadline is for sending a request; a WebSocket (a live view, say) stays open after its upgrade."""
    import websocket  # websocket-client, installed with the kubernetes client

    conn = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws", timeout=5)
    try:
        time.sleep(1.6)  # beyond the 1 s read timeout
        conn.send("still here")
        assert conn.recv() == "still here"
    finally:
        conn.close()
