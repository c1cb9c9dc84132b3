"""A connection flood against the HTTP API must not stop the reconciler (issue 20, item 3).

`reconciler run` runs as a subprocess with a low descriptor limit (`RLIMIT_NOFILE`
256, set in the child before it starts). A few hundred slow-header sockets — each
sends half a request line and headers and then one more header every second, as a
slowloris client does, with no token — are held open for a bounded time; closed ones
are reopened. Meanwhile a ping sequence is triggered from the CLI (which appends to
the ledger from its own process): the control loop must still fold it and record the
approval and the sequence's end. After the flood the API answers a legitimate
request again, and the process never exited.

Before the fix the API accepted every socket until the process ran out of
descriptors; the ledger could no longer be read and `OSError: Too many open files`
escaped the control loop.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from reconciler.demo.prometheus import free_port
from tests.support import waiting
from tests.support.crash import (
    REPO_ROOT,
    child_environment,
    ledger_events,
    stop_gracefully,
    wait_running,
)
from tests.support.gitserver import UpstreamRepo
from tests.support.shop import approval, seed_shop, sequence, shipyard, stage

pytestmark = pytest.mark.timeout(240)

PROJECT = "shop"
SHIPYARD = shipyard(stage("qa", sequence("ping", approval())))
TOKEN = "flood-test-token-5a6b7c"
NOFILE = 256
"""The child's descriptor limit (soft and hard): small enough that the flood exceeds it."""
SOCKETS = 400
"""Slow-header sockets held open at once (more than NOFILE)."""
FLOOD_SECONDS = 25.0
MAX_CONNECTS = 4000
"""Bound on connection attempts over the whole flood (reopening closed sockets)."""
STEP = 60.0


def seed(repo: UpstreamRepo) -> None:
    seed_shop(repo, SHIPYARD, files={"api/values.yaml": "image: api:1\n"}, project=PROJECT)


def ping_finished(data_dir: Path, context: str) -> bool:
    return any(
        e.type == "sh.keptn.event.qa.ping.finished" and e.shkeptncontext == context
        for e in ledger_events(data_dir)
    )


def limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


PREFIX = b"POST /v1/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


class Flood:
    """Slow-header sockets against one port, in a thread, bounded in time and in connects.

    Connects are non-blocking, so all SOCKETS are attempted at once whether or not the
    server accepts them; each sends half a request, then one header line a second.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.connects = 0
        self.thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def _connect(self) -> list[Any] | None:
        if self.connects >= MAX_CONNECTS:
            return None
        self.connects += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex(("127.0.0.1", self.port)) not in (0, errno.EINPROGRESS):
            sock.close()
            return None
        return [sock, False]

    @staticmethod
    def _keep(entry: list[Any]) -> bool:
        sock, started = entry
        try:
            if not started:
                sock.send(PREFIX)
                entry[1] = True
            else:
                sock.send(b"X-Slow: 1\r\n")
            with contextlib.suppress(BlockingIOError):
                if sock.recv(4096) == b"":  # the server closed it
                    raise ConnectionResetError
            return True
        except (BlockingIOError, InterruptedError):
            return True  # still connecting, or the buffer is full
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                return True  # the handshake has not completed yet
            sock.close()
            return False

    def _run(self) -> None:
        entries: list[list[Any]] = []
        deadline = time.monotonic() + FLOOD_SECONDS
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                while len(entries) < SOCKETS and not self.stop.is_set():
                    entry = self._connect()
                    if entry is None:
                        break
                    entries.append(entry)
                entries = [entry for entry in entries if self._keep(entry)]
                self.stop.wait(1.0)
        finally:
            for sock, _ in entries:
                sock.close()

    def __enter__(self) -> Flood:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


class DescriptorWatch:
    """The most descriptors a process had open, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fd-watch", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, len(os.listdir(f"/proc/{self.pid}/fd")))

    def __enter__(self) -> DescriptorWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def run_cli(args: list[str], data_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args, "--data-dir", str(data_dir), "-o", "json"],
        env=child_environment(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=STEP,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_slow_header_flood_against_a_low_descriptor_limit_does_not_stop_the_reconciler(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    seed(upstream_repo)
    data_dir = (tmp_path / "data").resolve()
    port = free_port()
    log = tmp_path / "reconciler.log"
    env = child_environment({"RECONCILER_LOG_FORMAT": "json", "RECONCILER_API_TOKEN": TOKEN})
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "run",
                "--upstream",
                str(upstream_repo.path),
                "--data-dir",
                str(data_dir),
                "--runner",
                "local",
                "--poll-interval",
                "1",
                "--api-listen",
                f"127.0.0.1:{port}",
            ],
            env=env,
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_descriptors,
        )

    def tail() -> str:
        return log.read_text(errors="replace")[-6000:]

    try:
        assert wait_running(proc, data_dir, time.monotonic() + STEP), tail()
        url = f"http://127.0.0.1:{port}"
        waiting.wait_for(
            lambda: requests.get(f"{url}/readyz", timeout=5).status_code == 200, STEP, "the API to be ready"
        )

        before_flood = len(log.read_bytes())
        with DescriptorWatch(proc.pid) as descriptors, Flood(port) as flood:
            started = time.monotonic()
            time.sleep(4.0)  # the flood is at full strength
            assert proc.poll() is None, tail()
            ping = [
                "trigger",
                "sequence",
                "ping",
                "--stage",
                "qa",
                "--service",
                "api",
                "--data",
                "result=pass",
            ]
            during = run_cli(ping, data_dir)["keptnContext"]
            waiting.wait_for(
                lambda: ping_finished(data_dir, during) or proc.poll() is not None,
                FLOOD_SECONDS - 6,
                "the control loop to finish the ping triggered during the flood",
            )
            assert proc.poll() is None, f"the reconciler exited during the flood:\n{tail()}"
            assert ping_finished(data_dir, during), tail()
            # past the read timeout (10 s): the server has cut the first sockets, the flood reopened them
            time.sleep(max(0.0, 13.0 - (time.monotonic() - started)))
            assert proc.poll() is None, f"the reconciler exited during the flood:\n{tail()}"
            assert flood.connects >= SOCKETS, "the flood never reached its strength"
            assert not flood.stop.is_set() and flood.thread.is_alive(), "the flood ended before the checks"
            during_flood = log.read_bytes()[before_flood:].decode(errors="replace")
        # the descriptors the ledger and git need were never taken (the accept bursts included)
        assert "Too many open files" not in during_flood, during_flood[-4000:]
        assert descriptors.peak <= NOFILE - 64, f"{descriptors.peak} of {NOFILE} descriptors in use"
        assert flood.connects > SOCKETS, "no socket was cut and reopened: the read timeout never fired"

        def answered() -> dict[str, Any] | None:
            try:
                response = requests.post(
                    f"{url}/v1/event",
                    json={
                        "type": "sh.keptn.event.qa.ping.triggered",
                        "specversion": "1.0",
                        "source": "https://example.com/after-the-flood",
                        "data": {"project": PROJECT, "stage": "qa", "service": "api", "result": "pass"},
                    },
                    headers={"x-token": TOKEN},
                    timeout=5,
                )
            except requests.RequestException:
                return None
            return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

        receipt = waiting.wait_for(
            answered, 30, "the API to answer a legitimate request after the flood", step=0.5
        )
        waiting.wait_for(
            lambda: ping_finished(data_dir, receipt["keptnContext"]), STEP, "the ping sent after the flood"
        )
        assert proc.poll() is None, tail()
        assert stop_gracefully(proc) == 0, tail()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
