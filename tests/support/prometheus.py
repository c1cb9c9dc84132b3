"""A real Prometheus for tests: the Debian `/usr/bin/prometheus`, on 127.0.0.1 only.

Fixtures (all clean up after themselves: Prometheus is stopped with `POST /-/quit`,
terminated if that fails, and waited for; metric endpoints are shut down):

- `prometheus_factory` (function scope) and `prometheus_factory_module` (module
  scope): a `PrometheusFactory`. Its methods:

  - `start(config=None, *, scrape_targets=(), job="app", scrape_interval="1s",
    file_sd_dir=None, rule_files=(), evaluation_interval="1s", data_dir=None,
    extra_args=(), web_config=None, auth=None)` -> `PrometheusServer`. `config`
    is a complete prometheus.yml text (then the other config arguments are
    ignored); otherwise a config is
    generated with one static job scraping `scrape_targets` (`host:port`), an
    optional file_sd job reading `<file_sd_dir>/*.json|*.yml` (drop target files
    there while Prometheus runs), and `rule_files` (paths; validated with
    `promtool check rules` first so a broken rule fails loudly). `web_config` is
    the text of a `--web.config.file` (e.g. `basic_auth_users` with a bcrypt hash);
    `auth` is the (user, password) the fixture itself then uses.
  - `backfilled(openmetrics, **start_kwargs)` -> `PrometheusServer`: writes the
    OpenMetrics text (a trailing `# EOF` is added when missing), turns it into TSDB
    blocks with `promtool tsdb create-blocks-from openmetrics`, then starts
    Prometheus on that data directory: every sample is queryable at once, at the
    timestamps written (retention is 100 years, so old timestamps survive).

- `metrics_endpoint_factory` (function scope): `serve(registry=None)` ->
  `MetricsEndpoint(url, target, registry)`, a real prometheus_client HTTP endpoint
  on a free 127.0.0.1 port.

- `live_prometheus` (function scope): a `LivePrometheus(server, endpoint)`,
  Prometheus scraping a fresh metrics endpoint every second under job `app`. The
  first scrape is queryable only after about 5.3 s (target discovery delay of
  Prometheus 2.42): use `server.wait_for(query, deadline=...)`, which polls
  `/api/v1/query` until the query returns a sample, bounded by the deadline.

`PrometheusServer` has `url`, `port`, `data_dir`, `config_file`, `query(promql,
at=None)` (the API's `data` block), `wait_for(promql, deadline=20.0,
predicate=None)`, `reload()` and `stop()`. `openmetrics_series(name, labels,
points)` renders backfill lines for one series.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from reconciler.demo.prometheus import (
    PROMTOOL,
    PrometheusServer,
    free_port,
    generated_config,
    start_prometheus,
)


class PrometheusFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[PrometheusServer] = []
        self._count = 0

    def _dir(self, name: str) -> Path:
        self._count += 1
        path = self.root / f"{name}-{self._count}"
        path.mkdir(parents=True)
        return path

    def start(
        self,
        config: str | None = None,
        *,
        scrape_targets: Sequence[str] = (),
        job: str = "app",
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        file_sd_dir: Path | None = None,
        rule_files: Sequence[Path] = (),
        data_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        web_config: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> PrometheusServer:
        home = self._dir("prometheus")
        for rule_file in rule_files:
            subprocess.run(
                [PROMTOOL, "check", "rules", str(rule_file)], check=True, capture_output=True, timeout=30
            )
        text = config or generated_config(
            scrape_targets=scrape_targets,
            job=job,
            scrape_interval=scrape_interval,
            evaluation_interval=evaluation_interval,
            file_sd_dir=file_sd_dir,
            rule_files=rule_files,
        )
        server = start_prometheus(
            home, text, data_dir=data_dir, web_config=web_config, auth=auth, extra_args=extra_args
        )
        self.servers.append(server)
        return server

    def backfilled(self, openmetrics: str, **start_kwargs: Any) -> PrometheusServer:
        home = self._dir("backfill")
        source = home / "data.om"
        text = openmetrics if openmetrics.rstrip().endswith("# EOF") else openmetrics.rstrip() + "\n# EOF\n"
        source.write_text(text)
        data = home / "data"
        subprocess.run(
            [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return self.start(data_dir=data, **start_kwargs)

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[PrometheusFactory]:
    factory = PrometheusFactory(tmp_path / "prometheus")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def prometheus_factory_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    factory = PrometheusFactory(tmp_path_factory.mktemp("prometheus"))
    try:
        yield factory
    finally:
        factory.close()


@dataclass
class MetricsEndpoint:
    url: str
    target: str
    registry: CollectorRegistry
    _server: Any = field(repr=False, default=None)
    _thread: Any = field(repr=False, default=None)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None


@pytest.fixture
def metrics_endpoint_factory() -> Iterator[Callable[..., MetricsEndpoint]]:
    endpoints: list[MetricsEndpoint] = []

    def serve(registry: CollectorRegistry | None = None) -> MetricsEndpoint:
        reg = registry or CollectorRegistry()
        port = free_port()
        server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
        endpoint = MetricsEndpoint(
            url=f"http://127.0.0.1:{port}/metrics",
            target=f"127.0.0.1:{port}",
            registry=reg,
            _server=server,
            _thread=thread,
        )
        endpoints.append(endpoint)
        return endpoint

    try:
        yield serve
    finally:
        for endpoint in endpoints:
            endpoint.close()


@dataclass
class LivePrometheus:
    server: PrometheusServer
    endpoint: MetricsEndpoint


@pytest.fixture
def live_prometheus(
    prometheus_factory: PrometheusFactory, metrics_endpoint_factory: Callable[..., MetricsEndpoint]
) -> LivePrometheus:
    endpoint = metrics_endpoint_factory()
    server = prometheus_factory.start(scrape_targets=[endpoint.target], job="app", scrape_interval="1s")
    return LivePrometheus(server=server, endpoint=endpoint)


def openmetrics_series(name: str, labels: dict[str, str], points: Sequence[tuple[float, float]]) -> str:
    """OpenMetrics lines for one series: `points` are (unix seconds, value)."""
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    selector = f"{name}{{{rendered}}}" if rendered else name
    return "".join(f"{selector} {value!r} {ts!r}\n" for ts, value in points)
