"""Evaluations per hour end to end: the evaluation task against a real Prometheus.

A real Prometheus (the Debian package, on 127.0.0.1) serves the tutorial service's
series backfilled with `promtool` (ten minutes at 10 s resolution, so every
query answers at once); the tutorial upstream is a git repository; the ledger is
a real git ledger. Each evaluation is what the control loop does for an
`evaluation.triggered`: record it, then `EvaluationExecutor.run` through the
app's `AppContext` (read slo.yaml and sli.yaml at the pinned commit, four PromQL
queries, select previous evaluations from the ledger, score, five appends).
Evaluations run back to back for a bounded window; the rate is extrapolated to
an hour (a window is a sample).

Baseline: the same four resolved queries sent to the same Prometheus with
`requests` alone, back to back, as evaluations per hour.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from bench.harness import Budget, Clock, Figure, Result
from bench.upstreamgen import build_upstream, service_name
from reconciler.appcontext import AppContext
from reconciler.base.clock import utcnow
from reconciler.demo.prometheus import PROMTOOL, generated_config, start_prometheus
from reconciler.executors.evaluation import EvaluationExecutor
from reconciler.formats.events import KeptnEvent, derived_id, format_time
from reconciler.ledger.gitledger import Ledger
from reconciler.settings import Settings
from reconciler.upstream.files import GitFiles

TITLE = "Evaluations per hour end to end against a real Prometheus vs its four queries alone"
BASE = "4 PromQL queries alone"
T0 = 1_767_261_600  # 2026-01-01T10:00:00Z
WINDOW = 300
SERVICE = service_name(0)


def series(name: str, labels: dict[str, str], points: list[tuple[int, float]]) -> str:
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return "".join(f"{name}{{{rendered}}} {value!r} {ts}\n" for ts, value in points)


def openmetrics() -> str:
    """The tutorial service in qa: 1 request/s of 0.2 s, 12 goroutines, 5 failed scrapes."""
    job = {"job": f"{SERVICE}-fulltour-qa"}
    route = {"job": job["job"], "method": "GET", "route": "/", "status_code": "200"}
    times = list(range(T0 - 300, T0 + WINDOW + 301, 10))
    text = series(
        "http_requests_total", {**job, "status": "success"}, [(t, float(t - times[0])) for t in times]
    )
    text += series(
        "http_server_request_duration_seconds_count", route, [(t, float(t - times[0])) for t in times]
    )
    text += series(
        "http_server_request_duration_seconds_sum", route, [(t, 0.2 * (t - times[0])) for t in times]
    )
    text += series("go_goroutines", job, [(t, 12.0) for t in times])
    for code, value in (("200", 100.0), ("500", 5.0)):
        text += series(
            "promhttp_metric_handler_requests_total", {**job, "code": code}, [(t, value) for t in times]
        )
    return text + "# EOF\n"


def _triggered(n: int, commit: str) -> KeptnEvent:
    iso = datetime.fromtimestamp
    return KeptnEvent(
        id=derived_id("bench-evaluation", str(n)),
        source="shipyard-controller",
        type="sh.keptn.event.evaluation.triggered",
        shkeptncontext=derived_id("bench-evaluation-context", str(n)),
        gitcommitid=commit,
        data={
            "project": "fulltour",
            "stage": "qa",
            "service": SERVICE,
            "evaluation": {"start": iso(T0, UTC).isoformat(), "end": iso(T0 + WINDOW, UTC).isoformat()},
            "deployment": {"deploymentNames": [SERVICE]},
        },
        time=format_time(utcnow()),
    )


def run(budget: Budget) -> Result:
    import subprocess

    res = Result("evaluation", TITLE)
    clock = Clock(budget.deadline)
    window = budget.pick(30, 3) * 1.0
    windows = budget.pick(3, 1)
    with tempfile.TemporaryDirectory(prefix="bench-evaluation-") as tmp:
        root = Path(tmp)
        up = build_upstream(root / "upstream.git", 1)
        commit = up.tip("qa")
        assert commit is not None
        source = root / "data.om"
        source.write_text(openmetrics())
        tsdb = root / "tsdb"
        subprocess.run(
            [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        server = start_prometheus(root / "prometheus", generated_config(), data_dir=tsdb)
        try:
            settings = Settings(prometheus_url=server.url, data_dir=root / "data", prometheus_timeout=10)
            ledger = Ledger(root / "ledger.git")
            ctx = AppContext(settings, ledger, GitFiles(up.repo))
            executor = EvaluationExecutor()
            n = 0
            queries: list[str] = []
            rates: list[float] = []
            for _ in range(windows):
                began = time.perf_counter()
                done = 0
                while time.perf_counter() - began < window:
                    event = _triggered(n, commit)
                    n += 1
                    ctx.emit(event)
                    executor.run(event, ctx, started=False)
                    finished = [
                        e
                        for e in ctx.events(
                            type_="sh.keptn.event.evaluation.finished", context=event.shkeptncontext
                        )
                    ]
                    if not finished or finished[0].result != "pass":
                        message = finished[0].data.get("message") if finished else "no evaluation.finished"
                        raise RuntimeError(f"evaluation {n} did not pass: {message}")
                    if not queries:
                        sli = ctx.events(
                            type_="sh.keptn.event.get-sli.finished", context=event.shkeptncontext
                        )
                        queries = [v["query"] for v in sli[0].data["get-sli"]["indicatorValues"]]
                    done += 1
                rates.append(done / (time.perf_counter() - began) * 3600)
                if not clock.left():
                    break
            baseline: list[float] = []
            with requests.Session() as http:
                for _ in range(windows):
                    began = time.perf_counter()
                    rounds = 0
                    while time.perf_counter() - began < min(window, 5.0):
                        for query in queries:
                            answer = http.get(
                                f"{server.url}/api/v1/query",
                                params={"query": query, "time": str(T0 + WINDOW)},
                                timeout=10,
                            )
                            answer.raise_for_status()
                            if not answer.json()["data"]["result"]:
                                raise RuntimeError(f"no data for {query}")
                        rounds += 1
                    baseline.append(rounds / (time.perf_counter() - began) * 3600)
        finally:
            server.stop()
    res.add(
        Figure(
            BASE,
            "evaluations/h",
            baseline,
            higher_is_better=True,
            note=f"{len(queries)} instant queries over HTTP, one session",
        )
    )
    res.add(
        Figure(
            "evaluations end to end",
            "evaluations/h",
            rates,
            higher_is_better=True,
            baseline=BASE,
            note=f"{window:g} s windows back to back, extrapolated to an hour; {n} evaluations, "
            "ledger growing by 6 events each",
        )
    )
    return res
