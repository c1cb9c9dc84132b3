"""The podtatoserver stand-in: version-dependent latency and the metrics the SLIs read."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.demo.helloservice import SLOW_DELAY_SECONDS, HelloServer, serve, version_of

GOOD = "ghcr.io/podtato-head/podtatoserver:v0.1.1"
SLOW = "ghcr.io/podtato-head/podtatoserver:v0.1.2"
SLO_SECONDS = 0.4  # the tutorial's pass criterion for the mean response time


@pytest.fixture
def start_service() -> Iterator[Callable[[str], str]]:
    servers: list[tuple[HelloServer, threading.Thread]] = []

    def start(image: str) -> str:
        server = serve(image, 0)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def get(url: str) -> tuple[int, str, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """name + labels -> value, from a real scrape of /metrics."""
    status, text, _ = get(base + "/metrics")
    assert status == 200
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


MAIN_PAGE = frozenset({("method", "GET"), ("route", "/"), ("status_code", "200")})


def test_good_version_serves_the_main_page_well_within_the_slo(start_service: Callable[[str], str]) -> None:
    base = start_service(GOOD)
    for _ in range(3):
        status, body, headers = get(base + "/")
        assert status == 200
        assert "v0.1.1" in body
        assert headers["X-Helloservice-Version"] == "v0.1.1"
    metrics = samples(base)
    count = metrics[("http_server_request_duration_seconds_count", MAIN_PAGE)]
    total = metrics[("http_server_request_duration_seconds_sum", MAIN_PAGE)]
    assert count == 3
    assert total / count < SLO_SECONDS


def test_slow_version_answers_slower_than_the_slo_allows(start_service: Callable[[str], str]) -> None:
    base = start_service(SLOW)
    started = time.monotonic()
    status, body, _ = get(base + "/")
    elapsed = time.monotonic() - started
    assert status == 200 and "v0.1.2" in body
    assert elapsed >= SLOW_DELAY_SECONDS > SLO_SECONDS
    metrics = samples(base)
    assert metrics[("http_server_request_duration_seconds_count", MAIN_PAGE)] == 1
    assert metrics[("http_server_request_duration_seconds_sum", MAIN_PAGE)] >= SLOW_DELAY_SECONDS


def test_tags_ending_in_slow_are_slow_too(start_service: Callable[[str], str]) -> None:
    base = start_service("registry.local:5000/team/hello:v2.0.0-slow")
    get(base + "/")
    assert samples(base)[("http_server_request_duration_seconds_sum", MAIN_PAGE)] >= SLOW_DELAY_SECONDS


def test_metrics_expose_the_families_the_slis_read(start_service: Callable[[str], str]) -> None:
    base = start_service(GOOD)
    get(base + "/")
    get(base + "/")
    first = samples(base)
    assert first[("http_requests_total", frozenset({("status", "success")}))] == 2
    assert first[("http_requests_total", frozenset({("status", "error")}))] == 0
    # failing_request sums code!="200": the series must exist (at 0) before any failure
    assert first[("promhttp_metric_handler_requests_total", frozenset({("code", "500")}))] == 0
    assert first[("promhttp_metric_handler_requests_total", frozenset({("code", "200")}))] == 0
    assert first[("python_threads", frozenset())] >= 1
    assert first[("helloservice_build_info", frozenset({("version", "v0.1.1"), ("image", GOOD)}))] == 1
    # /metrics answers are counted honestly, after each answer like Go's promhttp
    second = samples(base)
    assert second[("promhttp_metric_handler_requests_total", frozenset({("code", "200")}))] == 1
    # the metric a Python process cannot have is absent, not faked
    assert not any(name.startswith("go_") for name, _ in second)


def test_unknown_paths_count_as_errors_without_a_route_per_path(start_service: Callable[[str], str]) -> None:
    base = start_service(GOOD)
    status, _, _ = get(base + "/no/such/page")
    assert status == 404
    metrics = samples(base)
    assert metrics[("http_requests_total", frozenset({("status", "error")}))] == 1
    unmatched = frozenset({("method", "GET"), ("route", "unmatched"), ("status_code", "404")})
    assert metrics[("http_server_request_duration_seconds_count", unmatched)] == 1


def test_health_checks_are_not_counted_as_traffic(start_service: Callable[[str], str]) -> None:
    base = start_service(GOOD)
    assert get(base + "/healthz")[0] == 200
    metrics = samples(base)
    assert metrics[("http_requests_total", frozenset({("status", "success")}))] == 0


def test_command_line_reports_its_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler.demo.helloservice",
            "--image",
            SLOW,
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no port file within 20 s"
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        assert info["pid"] == proc.pid
        status, body, _ = get(f"http://127.0.0.1:{info['port']}/")
        assert status == 200 and "v0.1.2" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_defaults_to_the_port_environment_variable_like_the_chart_sets_it(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    port_file = tmp_path / "port.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.demo.helloservice", "--port-file", str(port_file)],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert json.loads(port_file.read_text())["port"] == port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("ghcr.io/podtato-head/podtatoserver:v0.1.1", "v0.1.1"),
        ("registry.local:5000/podtatoserver:v0.1.2", "v0.1.2"),
        ("registry.local:5000/podtatoserver", "latest"),
        ("podtatoserver:v1@sha256:abc", "v1"),
    ],
)
def test_version_is_the_image_tag(image: str, version: str) -> None:
    assert version_of(image) == version
