"""A real Alertmanager for tests: Debian's `/usr/bin/prometheus-alertmanager`, on 127.0.0.1 only.

`alertmanager_factory` (function scope) -> `AlertmanagerFactory.start(config)` ->
`AlertmanagerServer(url, port, ...)`. Clustering is switched off
(`--cluster.listen-address=`), so nothing listens beyond the one loopback port;
every server is stopped (SIGTERM, then SIGKILL) and waited for at teardown.
`webhook_config(url, token)` renders a config that sends every alert to one
webhook at once (group_wait 0s, group_interval 1s) with a Bearer token, resolved
notifications included.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from reconciler.demo.prometheus import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
READY_DEADLINE = 15.0
STOP_DEADLINE = 10.0


@dataclass
class AlertmanagerServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alerts(self) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v2/alerts", timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_DEADLINE)


def webhook_config(url: str, token: str, *, send_resolved: bool = True) -> str:
    return "\n".join(
        [
            "route:",
            "  receiver: reconciler",
            "  group_by: [alertname, stage, service]",
            "  group_wait: 0s",
            "  group_interval: 1s",
            "  repeat_interval: 1h",
            "receivers:",
            "  - name: reconciler",
            "    webhook_configs:",
            f"      - url: {json.dumps(url)}",
            f"        send_resolved: {'true' if send_resolved else 'false'}",
            "        http_config:",
            "          authorization:",
            "            type: Bearer",
            f"            credentials: {json.dumps(token)}",
            "",
        ]
    )


class AlertmanagerFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: list[AlertmanagerServer] = []

    def start(self, config: str) -> AlertmanagerServer:
        home = self.root / f"alertmanager-{len(self.servers) + 1}"
        home.mkdir(parents=True)
        config_file = home / "alertmanager.yml"
        config_file.write_text(config)
        subprocess.run(
            [AMTOOL, "check-config", str(config_file)], check=True, capture_output=True, timeout=30
        )
        port = free_port()
        log_file = home / "alertmanager.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [
                    ALERTMANAGER,
                    f"--config.file={config_file}",
                    f"--storage.path={home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--cluster.listen-address=",
                    "--log.level=debug",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = AlertmanagerServer(
            url=f"http://127.0.0.1:{port}", port=port, process=process, log_file=log_file
        )
        self.servers.append(server)
        end = time.monotonic() + READY_DEADLINE
        while time.monotonic() < end:
            if process.poll() is not None:
                raise RuntimeError(f"alertmanager exited with {process.returncode}: {server.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                    return server
            time.sleep(0.05)
        server.stop()
        raise RuntimeError(f"alertmanager not ready within {READY_DEADLINE}s: {server.log()}")

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def alertmanager_factory(tmp_path: Path) -> Iterator[AlertmanagerFactory]:
    factory = AlertmanagerFactory(tmp_path / "alertmanager")
    try:
        yield factory
    finally:
        factory.close()
