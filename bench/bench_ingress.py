"""Ingress figures: how fast events get in through the HTTP API and the CLI path.

    python bench/bench_ingress.py [--events 200]

Builds the tutorial's upstream as a git repository, starts the HTTP API on
127.0.0.1 over a real git ledger, and prints: latency of `POST /v1/event`
(the tutorial's fake problem, each a new context; admission + one ledger commit)
sequentially and with 4 concurrent clients, the Alertmanager receiver's latency
for one firing alert, and the in-process cost of `Ingress.submit_json`
(what `reconciler send event` and the inbox run) without HTTP.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.api import create_app, serve  # noqa: E402
from reconciler.ingress.submit import Ingress  # noqa: E402
from reconciler.ledger.gitledger import Ledger  # noqa: E402
from reconciler.runtime.observability import configure_logging  # noqa: E402
from reconciler.upstream.files import GitFiles  # noqa: E402
from reconciler.upstream.snapshot import snapshot_of  # noqa: E402
from tests.support.ingress import example_upstream_repo  # noqa: E402

TOKEN = "bench-token-123456"
TRIGGER = (ROOT / "tests" / "data" / "ingress" / "remediation_trigger.json").read_bytes()


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {p50 * 1000:.1f} ms  p95 {p95 * 1000:.1f} ms  mean {statistics.mean(ordered) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    configure_logging("console", "warning", sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    example_upstream_repo(root / "upstream.git")
    ledger = Ledger(root / "ledger.git", "reconciler-ledger")
    ingress = Ingress(ledger=ledger, view=snapshot_of(GitFiles(root / "upstream.git")), project="fulltour")
    server = serve(create_app(ingress, token=TOKEN), "127.0.0.1:0")
    headers = {"x-token": TOKEN, "content-type": "application/json"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            samples = []
            for _ in range(args.events):
                start = time.perf_counter()
                assert http.post("/v1/event", content=TRIGGER).status_code == 200
                samples.append(time.perf_counter() - start)
            print(f"POST /v1/event sequential x{args.events}: {percentiles(samples)}")

            def one(_: int) -> float:
                start = time.perf_counter()
                assert http.post("/v1/event", content=TRIGGER).status_code == 200
                return time.perf_counter() - start

            wall = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                concurrent = list(pool.map(one, range(args.events)))
            wall = time.perf_counter() - wall
            print(
                f"POST /v1/event 4 clients x{args.events}: {percentiles(concurrent)}  "
                f"throughput {args.events / wall:.0f} events/s"
            )

            alert: dict[str, Any] = {
                "version": "4",
                "status": "firing",
                "receiver": "r",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "Slow", "stage": "production", "service": "helloservice"},
                        "annotations": {"summary": "slow"},
                        "startsAt": "2026-01-01T00:00:00Z",
                        "fingerprint": "0",
                    }
                ],
            }
            alert_samples = []
            for n in range(50):
                alert["alerts"][0]["fingerprint"] = f"{n:016x}"  # a new incident each time
                start = time.perf_counter()
                assert http.post("/v1/alertmanager", content=json.dumps(alert)).status_code == 200
                alert_samples.append(time.perf_counter() - start)
            print(f"POST /v1/alertmanager (one firing alert) x50: {percentiles(alert_samples)}")
        direct = []
        for _ in range(args.events):
            start = time.perf_counter()
            ingress.submit_json(TRIGGER, origin="bench")
            direct.append(time.perf_counter() - start)
        print(f"Ingress.submit_json in-process x{args.events}: {percentiles(direct)}")
        print(f"ledger events: {len(ledger.events())}")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)  # the repositories are scratch


if __name__ == "__main__":
    main()
