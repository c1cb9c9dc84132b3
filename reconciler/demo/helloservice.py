"""A local stand-in for podtatoserver, the tutorial's helloservice, as a real HTTP server.

The demo has no cluster, so `localhelm` runs this module as the chart's pods. Its
only job is to make the tutorial's quality gates mean something locally: `GET /`
answers fast or slowly depending on the version named by the image tag, and
`/metrics` exposes the metric families the SLIs of `example-upstream` query,
measured for real in this process.

Versions (the tag after the last `:` of the image):

- `v0.1.2`, or any tag ending in `-slow`: every `GET /` waits `SLOW_DELAY_SECONDS`
  (0.8 s) before answering, twice the 0.4 s the SLO allows, so the response-time
  objective fails (score 75 → `warning` under the tutorial's SLO).
- every other tag (the good build `v0.1.1` included): no added delay.

Endpoints:

- `GET /`: a small HTML page naming the version (header `X-Helloservice-Version`).
- `GET /metrics`: Prometheus text format from this server's own registry.
- `GET /healthz`: `ok`; used by `localhelm --wait` and left out of the request
  metrics, like a kubelet probe that a scrape-side filter would drop.
- anything else: 404, counted as an error with `route="unmatched"`.

Metric families (all real measurements):

- `http_server_request_duration_seconds` histogram, labels `method`, `route`,
  `status_code` (the `_sum`/`_count` the response-time SLI divides);
- `http_requests_total{status="success"|"error"}` (2xx/3xx vs the rest);
- `promhttp_metric_handler_requests_total{code}`: answers of `/metrics` itself,
  each answer counted in the next (not its own, like Go's promhttp); `200` and `500` start at 0;
- `python_threads`: live Python threads (`threading.active_count()`), the honest
  counterpart of the `go_goroutines` gauge, which a Python process does not have and
  which is therefore not exported (the local profile's SLI/SLO use `python_threads`);
- `process_*` (prometheus_client's process collector) and
  `helloservice_build_info{version,image}` = 1.

Command line (listens on 127.0.0.1 only)::

    python -m reconciler.demo.helloservice --image ghcr.io/podtato-head/podtatoserver:v0.1.1 \
        [--port 9000 | --port 0] [--port-file FILE]

`--port` defaults to `$PORT`, else 9000; `--port 0` picks a free port and
`--port-file` receives `{"port": N, "pid": P}` once the socket is bound (written
atomically), so a supervisor never races for ports. SIGTERM and SIGINT stop it.

May import: stdlib and prometheus_client.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

SLOW_DELAY_SECONDS = 0.8
SLOW_VERSIONS = frozenset({"v0.1.2"})
DEFAULT_PORT = 9000
LOOPBACK = "127.0.0.1"


def version_of(image: str) -> str:
    """The tag of an image reference (`registry:5000/name:tag` -> `tag`); `latest` when untagged."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


def delay_for(version: str) -> float:
    """Seconds every `GET /` of this version waits before answering."""
    if version in SLOW_VERSIONS or version.endswith("-slow"):
        return SLOW_DELAY_SECONDS
    return 0.0


@dataclass
class Metrics:
    registry: CollectorRegistry
    duration: Histogram
    requests: Counter
    scrapes: Counter


def new_metrics(image: str, version: str) -> Metrics:
    """A private registry per server, so several servers in one process never share counts."""
    registry = CollectorRegistry(auto_describe=True)
    duration = Histogram(
        "http_server_request_duration_seconds",
        "Time spent answering HTTP requests, by method, route and status code.",
        ["method", "route", "status_code"],
        registry=registry,
    )
    requests = Counter(
        "http_requests",
        "HTTP requests answered, by outcome (success = 2xx/3xx).",
        ["status"],
        registry=registry,
    )
    for status in ("success", "error"):
        requests.labels(status=status)
    scrapes = Counter(
        "promhttp_metric_handler_requests",
        "Answers of the /metrics endpoint itself, by HTTP status code.",
        ["code"],
        registry=registry,
    )
    for code in ("200", "500"):
        scrapes.labels(code=code)
    threads = Gauge("python_threads", "Live Python threads of the service process.", registry=registry)
    threads.set_function(lambda: float(threading.active_count()))
    info = Gauge(
        "helloservice_build_info",
        "Always 1; labels name the version being served.",
        ["version", "image"],
        registry=registry,
    )
    info.labels(version=version, image=image).set(1)
    ProcessCollector(registry=registry)
    return Metrics(registry=registry, duration=duration, requests=requests, scrapes=scrapes)


class HelloServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], image: str) -> None:
        self.image = image
        self.version = version_of(image)
        self.delay = delay_for(self.version)
        self.metrics = new_metrics(image, self.version)
        super().__init__(address, HelloHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class HelloHandler(BaseHTTPRequestHandler):
    server: HelloServer
    server_version = "helloservice"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: under load tests per-request lines would only fill the replica's log file."""

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Helloservice-Version", self.server.version)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            self._timed("/", self._main_page)
        else:
            self._timed("unmatched", self._not_found)

    def _not_found(self) -> tuple[int, bytes, str]:
        return 404, b"not found\n", "text/plain; charset=utf-8"

    def _main_page(self) -> tuple[int, bytes, str]:
        if self.server.delay:
            time.sleep(self.server.delay)
        version = self.server.version
        body = (
            "<!doctype html><html><head><title>helloservice</title></head><body>"
            f"<h1>Hello from helloservice</h1><p>version {version}</p></body></html>\n"
        ).encode()
        return 200, body, "text/html; charset=utf-8"

    def _timed(self, route: str, answer: Callable[[], tuple[int, bytes, str]]) -> None:
        """Counts a request before its answer goes out: a client that scrapes /metrics
        right after its response must already see it (else a scrape races the count)."""
        metrics = self.server.metrics
        start = time.perf_counter()
        code, body, content_type = 500, b"internal error\n", "text/plain; charset=utf-8"
        try:
            code, body, content_type = answer()
        finally:
            metrics.duration.labels(method="GET", route=route, status_code=str(code)).observe(
                time.perf_counter() - start
            )
            metrics.requests.labels(status="success" if code < 400 else "error").inc()
        self._send(code, body, content_type)

    def _metrics(self) -> None:
        metrics = self.server.metrics
        try:
            body = generate_latest(metrics.registry)
        except Exception:
            self._send(500, b"metrics unavailable\n", "text/plain; charset=utf-8")
            metrics.scrapes.labels(code="500").inc()
            raise
        # counted once its body is rendered (it shows the answers before it, as Go's promhttp)
        # but before it is sent: counted after sending, the client's next scrape could outrun it
        metrics.scrapes.labels(code="200").inc()
        self._send(200, body, CONTENT_TYPE_LATEST)


def serve(image: str, port: int = 0, host: str = LOOPBACK) -> HelloServer:
    """A bound server (not yet serving); call `serve_forever` on it, `shutdown` to stop."""
    return HelloServer((host, port), image)


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reconciler.demo.helloservice", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--image", default="ghcr.io/podtato-head/podtatoserver:v0.1.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    parser.add_argument("--port-file", type=Path)
    args = parser.parse_args(argv)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # this process is the whole service; `_created` series only add noise
    server = serve(args.image, args.port)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        _write_port_file(args.port_file, server.port)
    print(
        f"helloservice {server.version} ({args.image}) on http://{LOOPBACK}:{server.port}/ "
        f"(delay {server.delay}s)",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
