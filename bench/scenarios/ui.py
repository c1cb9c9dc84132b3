"""The web view at scale: each page's response time with 1,000 services and a 100,000-event ledger.

The whole reconciler runs in-process (`App` with its HTTP API on 127.0.0.1, local
runner, an executor that does nothing, watching off) on a data directory holding a
copy of the generated 100,000-event ledger (3,000 tutorial deliveries over 1,000
services, `bench/ledgergen.py`) and a local upstream with the tutorial's files for
1,000 services on 2 stages. Each page is fetched over HTTP with the token, back to
back, as a browser's reload would (the whole answer read):

- the overview (1,000 services x 2 stages), the sequence list (first page, and a
  filtered one), one context (a delivery's 33 events with their ledger commits),
  the evaluations heatmap of one service, the approvals, the upstream page, and
  the version the live pages poll;
- the first overview after start-up (the ingress state folds the ledger once;
  the web view starts that fold in the background when it is mounted).

Baseline: `GET /v1/status` (the API's own status answer) in the same run.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from bench.harness import Budget, Clock, Figure, Result
from bench.inprocess import InstantExecutor, bench_settings
from bench.ledgergen import cached_count, cached_ledger, copy_ledger
from bench.upstreamgen import build_upstream
from reconciler.app import App
from reconciler.ledger.gitledger import Ledger

TITLE = "Web view pages with 1,000 services and a 100,000-event ledger vs GET /v1/status"
BASE = "GET /v1/status"
TOKEN = "bench-ui-token-0b8e"


def _timed(client: httpx.Client, path: str, runs: int, clock: Clock) -> tuple[list[float], int]:
    samples: list[float] = []
    size = 0
    for _ in range(runs):
        began = time.perf_counter()
        answer = client.get(path)
        body = answer.content
        samples.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:300]}")
        size = len(body)
        if not clock.left():
            break
    return samples, size


def run(budget: Budget) -> Result:
    res = Result("ui", TITLE)
    clock = Clock(budget.deadline)
    events = budget.pick(100_000, 1_000)
    services = budget.pick(1000, 50)
    runs = budget.pick(20, 3)
    source = cached_ledger(events, budget.log)
    events = cached_count(source)
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        root = Path(tmp)
        up = build_upstream(root / "upstream.git", services)
        data = root / "data"
        data.mkdir()
        copy_ledger(source, data / "ledger.git")
        ledger = Ledger(data / "ledger.git")
        probe = next(
            e for e in reversed(ledger.events()) if e.type == "sh.keptn.event.production.delivery.finished"
        )
        context, service = probe.shkeptncontext, probe.service
        settings = bench_settings(
            upstream=str(up.path),
            data_dir=data,
            watch=False,
            poll_interval=3600,
            api_listen="127.0.0.1:0",
            api_token=SecretStr(TOKEN),
        )
        began = time.perf_counter()
        app = App(settings, executors=[InstantExecutor()]).start()
        thread = threading.Thread(target=app.run_forever, name="bench-ui-loop", daemon=True)
        thread.start()
        try:
            assert app.api is not None
            started = time.perf_counter() - began
            budget.log(f"  reconciler running after {started:.1f} s ({events:,} events, {services} services)")
            with httpx.Client(base_url=app.api.url, headers={"x-token": TOKEN}, timeout=600) as client:
                cold, _ = _timed(client, "/ui/", 1, clock)
                res.add(
                    Figure(
                        "first GET /ui/ after start-up",
                        "ms",
                        cold,
                        note=f"waits for the ingress state's first fold of {events:,} events "
                        f"(started {started:.0f} s after App.start, in the background)",
                    )
                )
                pages = [
                    ("GET /ui/ (overview)", "/ui/"),
                    ("GET /ui/sequences", "/ui/sequences"),
                    ("GET /ui/sequences filtered", "/ui/sequences?stage=production&result=pass&since=87600h"),
                    ("GET /ui/context/<delivery>", f"/ui/context/{context}"),
                    ("GET /ui/evaluations (one service)", f"/ui/evaluations?stage=qa&service={service}"),
                    ("GET /ui/approvals", "/ui/approvals"),
                    ("GET /ui/upstream", "/ui/upstream"),
                    ("GET /ui/version (live poll)", "/ui/version"),
                ]
                status, size = _timed(client, "/v1/status", runs, clock)
                res.add(Figure(BASE, "ms", status, note=f"{size:,} bytes"))
                for name, path in pages:
                    samples, size = _timed(client, path, runs, clock)
                    res.add(Figure(name, "ms", samples, baseline=BASE, note=f"{size:,} bytes"))
                    if not clock.left():
                        res.notes.append(f"deadline reached after {name}")
                        break
        finally:
            app.stop(grace=10)
            thread.join(timeout=15)
    res.notes.append(
        f"{events:,}-event ledger, {services} services x 2 stages; context {context[:8]} of {service}; "
        "each sample is one request read to its end over HTTP on 127.0.0.1"
    )
    return res
