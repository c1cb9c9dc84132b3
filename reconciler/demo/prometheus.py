"""Running a real Prometheus (the Debian package) on 127.0.0.1: for the demo and the tests.

One launcher for both, so the demo and the test fixtures start, wait for and stop
Prometheus the same way: a generated or given config, `--web.enable-lifecycle` for
`/-/quit` and `/-/reload`, readiness polled with a deadline, and a stop that asks,
then terminates, then kills — always bounded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
READY_DEADLINE = 15.0
STOP_DEADLINE = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PrometheusServer:
    url: str
    port: int
    data_dir: Path
    config_file: Path
    process: subprocess.Popen[bytes]
    log_file: Path
    auth: tuple[str, str] | None = None

    def query(self, promql: str, at: float | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        response = requests.get(f"{self.url}/api/v1/query", params=params, timeout=5, auth=self.auth)
        response.raise_for_status()
        data: dict[str, Any] = response.json()["data"]
        return data

    def wait_for(
        self,
        promql: str,
        deadline: float = 20.0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Poll until the query returns a sample (or `predicate(data)` holds); bounded."""
        check = predicate or (lambda data: bool(data.get("result")))
        end = time.monotonic() + deadline
        last: dict[str, Any] = {}
        while time.monotonic() < end:
            with contextlib.suppress(requests.RequestException):
                last = self.query(promql)
                if check(last):
                    return last
            time.sleep(0.25)
        raise AssertionError(
            f"Prometheus never answered {promql!r} as expected within {deadline}s; last: {last}"
        )

    def reload(self) -> None:
        requests.post(f"{self.url}/-/reload", timeout=5, auth=self.auth).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(requests.RequestException):
            requests.post(f"{self.url}/-/quit", timeout=2, auth=self.auth)
        try:
            self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_DEADLINE)


def _yaml_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def generated_config(
    *,
    scrape_targets: Sequence[str] = (),
    job: str = "app",
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    file_sd_dir: Path | None = None,
    rule_files: Sequence[Path] = (),
) -> str:
    lines = [
        "global:",
        f"  scrape_interval: {scrape_interval}",
        f"  evaluation_interval: {evaluation_interval}",
    ]
    if rule_files:
        lines.append(f"rule_files: {_yaml_list([str(p) for p in rule_files])}")
    lines.append("scrape_configs:")
    if scrape_targets:
        lines += [
            f"  - job_name: {json.dumps(job)}",
            "    static_configs:",
            f"      - targets: {_yaml_list(list(scrape_targets))}",
        ]
    if file_sd_dir is not None:
        lines += [
            "  - job_name: file_sd",
            "    file_sd_configs:",
            f"      - files: {_yaml_list([str(file_sd_dir / '*.json'), str(file_sd_dir / '*.yml')])}",
            "        refresh_interval: 1s",
        ]
    if not scrape_targets and file_sd_dir is None:
        lines[-1] = "scrape_configs: []"
    return "\n".join(lines) + "\n"


def start_prometheus(
    home: Path,
    config_text: str,
    *,
    data_dir: Path | None = None,
    port: int | None = None,
    web_config: str | None = None,
    auth: tuple[str, str] | None = None,
    extra_args: Sequence[str] = (),
    retention: str = "36500d",
) -> PrometheusServer:
    """Write the config under `home`, start Prometheus on 127.0.0.1 and wait until it is ready."""
    home.mkdir(parents=True, exist_ok=True)
    web_args: list[str] = []
    if web_config is not None:
        web_file = home / "web.yml"
        web_file.write_text(web_config)
        web_args.append(f"--web.config.file={web_file}")
    config_file = home / "prometheus.yml"
    config_file.write_text(config_text)
    data = data_dir or home / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_file = home / "prometheus.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={data}",
                f"--storage.tsdb.retention.time={retention}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                *web_args,
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(
        url=f"http://127.0.0.1:{port}",
        port=port,
        data_dir=data,
        config_file=config_file,
        process=process,
        log_file=log_file,
        auth=auth,
    )
    end = time.monotonic() + READY_DEADLINE
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}: {log_file.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.url}/-/ready", timeout=1, auth=auth).status_code == 200:
                return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"prometheus not ready within {READY_DEADLINE}s: {log_file.read_text()[-2000:]}")
