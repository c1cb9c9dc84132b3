"""The evaluation task end to end: the tutorial's SLO and SLIs on a git upstream, answered
by a real Prometheus (backfilled for exact values, and live-scraping a real endpoint),
recorded as Keptn's event conversation, reproducible after a crash."""

from __future__ import annotations

import base64
import itertools
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pygit2.enums import FileMode

from reconciler.executors.evaluation import EvaluationExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings
from reconciler.upstream.files import GitFiles
from tests.support.context import MemoryContext
from tests.support.events import new_id, now_text
from tests.support.prometheus import MetricsEndpoint, PrometheusFactory, PrometheusServer, openmetrics_series

T0 = 1704103200  # 2024-01-01T10:00:00Z: first window [T0, T0+5m]
T1 = T0 + 3600  # second window [T1, T1+5m]: throughput drops to a tenth

SLO = b"""spec_version: "1.0"
comparison:
  aggregate_function: "avg"
  compare_with: "single_result"
  include_result_with_score: "pass"
  number_of_comparison_results: 1
filter:
objectives:
  - sli: "http_response_time_seconds_main_page_sum"
    displayName: "HTTP Response Time"
    pass:
      - criteria:
          - "<=0.4"
    warning:
      - criteria:
          - "<=0.1"
  - sli: "request_throughput"
    pass:
      - criteria:
          - ">=-80%"
  - sli: "go_routines"
    pass:
      - criteria:
          - "<=30"
    key_sli: true
  - sli: "failing_request"
    pass:
      - criteria:
          - "<10"
total_score:
  pass: "90%"
  warning: "75%"
"""

J = "$SERVICE-$PROJECT-$STAGE"
PROJECT_SLI = f"""spec_version: "1.0"
indicators:
  go_routines: go_goroutines{{job="{J}"}}
  failing_request: promhttp_metric_handler_requests_total{{job="{J}"}}
""".encode()
SERVICE_SLI = f"""spec_version: "1.0"
indicators:
  http_response_time_seconds_main_page_sum: sum(rate(http_server_request_duration_seconds_sum{{method="GET",route="/",status_code="200",job="{J}"}}[$DURATION_SECONDS]))/sum(rate(http_server_request_duration_seconds_count{{method="GET",route="/",status_code="200",job="{J}"}}[$DURATION_SECONDS]))
  request_throughput: sum(rate(http_requests_total{{status="success",job="{J}"}}[$DURATION_SECONDS]))
  failing_request: sum(promhttp_metric_handler_requests_total{{code!="200",job="{J}"}})
  http_requests_total_sucess: http_requests_total{{status="success",job="{J}"}}
""".encode()


def tutorial_openmetrics() -> str:
    """podtatoserver-like series for qa (fast) and production (0.6 s per request)."""
    times = list(range(T0 - 60, T1 + 301, 10))
    text = ""
    for stage, mean in (("qa", 0.2), ("production", 0.6)):
        job = {"job": f"helloservice-fulltour-{stage}"}
        route = {"method": "GET", "route": "/", "status_code": "200", **job}
        requests_total, points_req, points_sum, points_count = 0.0, [], [], []
        for t in times:
            step = 1.0 if t > T1 - 60 else 10.0  # throughput 1/s, then 0.1/s around T1
            requests_total += step
            points_req.append((float(t), requests_total))
            points_count.append((float(t), requests_total))
            points_sum.append((float(t), requests_total * mean))
        text += openmetrics_series("http_requests_total", {**job, "status": "success"}, points_req)
        text += openmetrics_series("http_server_request_duration_seconds_count", route, points_count)
        text += openmetrics_series("http_server_request_duration_seconds_sum", route, points_sum)
        text += openmetrics_series("go_goroutines", job, [(float(t), 12.0) for t in times])
        for code, value in (("200", 100.0), ("500", 3.0), ("503", 2.0)):
            text += openmetrics_series(
                "promhttp_metric_handler_requests_total",
                {**job, "code": code},
                [(float(t), value) for t in times],
            )
    return text


class Upstream:
    """A git upstream (no work tree): main with project files, one branch per stage."""

    def __init__(self, path: Path) -> None:
        self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        self.sig = pygit2.Signature("Dev Eloper", "dev@example.com")

    def commit(self, branch: str, files: dict[str, bytes | None]) -> str:
        ref = self.repo.references.get(f"refs/heads/{branch}")
        index = pygit2.Index()
        if ref is not None:
            index.read_tree(self.repo[ref.target].peel(pygit2.Commit).tree)
        for path, data in files.items():
            if data is None:
                index.remove(path)
            else:
                index.add(pygit2.IndexEntry(path, self.repo.create_blob(data), FileMode.BLOB))
        tree = index.write_tree(self.repo)
        parents = [ref.target] if ref is not None else []
        oid = self.repo.create_commit(f"refs/heads/{branch}", self.sig, self.sig, "change", tree, parents)
        return str(oid)


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    up = Upstream(tmp_path / "upstream.git")
    up.commit(
        "main", {"shipyard.yaml": b"apiVersion: spec.keptn.sh/0.2.2\n", "prometheus/sli.yaml": PROJECT_SLI}
    )
    for stage in ("qa", "production"):
        up.commit(
            stage,
            {
                "helloservice/slo.yaml": SLO,
                "helloservice/prometheus/sli.yaml": SERVICE_SLI,
                "helloservice/metadata.yaml": b"ServiceName: helloservice\n",
            },
        )
    return up


@pytest.fixture(scope="module")
def tutorial_prometheus(prometheus_factory_module: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory_module.backfilled(tutorial_openmetrics())


def ticking_clock(start: datetime) -> Callable[[], datetime]:
    counter = itertools.count()
    return lambda: start + timedelta(seconds=next(counter))


def make_ctx(upstream: Upstream, url: str, tmp_path: Path, **settings: Any) -> MemoryContext:
    return MemoryContext(
        files=GitFiles(upstream.repo),
        settings=Settings(prometheus_url=url, data_dir=tmp_path / "data", prometheus_timeout=5, **settings),
        clock=ticking_clock(datetime(2024, 2, 1, tzinfo=UTC)),
    )


def triggered(
    upstream: Upstream,
    stage: str = "qa",
    *,
    start: int = T0,
    context: str = "ctx-1",
    eid: str | None = None,
    evaluation: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> KeptnEvent:
    data: dict[str, Any] = {
        "project": "fulltour",
        "stage": stage,
        "service": "helloservice",
        "labels": {"image": "ghcr.io/podtato-head/podtatoserver", "version": "v0.1.1"},
        "evaluation": evaluation
        if evaluation is not None
        else {
            "start": datetime.fromtimestamp(start, UTC).isoformat(),
            "end": datetime.fromtimestamp(start + 300, UTC).isoformat(),
        },
        "deployment": {"deploymentNames": ["helloservice"]},
        **(extra or {}),
    }
    ref = upstream.repo.references[f"refs/heads/{stage}"]
    return KeptnEvent(
        id=eid or f"eval-{stage}-{context}-{start}",
        source="shipyard-controller",
        type="sh.keptn.event.evaluation.triggered",
        shkeptncontext=context,
        gitcommitid=str(ref.target),
        data=data,
        time=now_text(),
    )


def run(ctx: MemoryContext, event: KeptnEvent, *, started: bool = False) -> KeptnEvent:
    ctx.emit(event)
    EvaluationExecutor().run(event, ctx, started=started)
    return finished(ctx, event)


def finished(ctx: MemoryContext, event: KeptnEvent) -> KeptnEvent:
    (done,) = [e for e in ctx.events(type_="sh.keptn.event.evaluation.finished") if e.triggeredid == event.id]
    return done


def indicator(done: KeptnEvent, sli: str) -> dict[str, Any]:
    (found,) = [r for r in done.data["evaluation"]["indicatorResults"] if r["value"]["metric"] == sli]
    return found


# --------------------------------------------------------------------------------------------
# backfilled Prometheus: exact values


def test_tutorial_gate_passes_in_qa_and_records_keptns_conversation(
    upstream: Upstream, tutorial_prometheus: PrometheusServer, tmp_path: Path
) -> None:
    ctx = make_ctx(upstream, tutorial_prometheus.url, tmp_path)
    event = triggered(upstream)
    done = run(ctx, event)

    assert ctx.types() == [
        "sh.keptn.event.evaluation.triggered",
        "sh.keptn.event.evaluation.started",
        "sh.keptn.event.get-sli.triggered",
        "sh.keptn.event.get-sli.started",
        "sh.keptn.event.get-sli.finished",
        "sh.keptn.event.evaluation.finished",
    ]
    started, get_sli, sli_started, sli_done = ctx.recorded[1:5]
    assert (started.source, started.triggeredid) == ("lighthouse-service", event.id)
    assert (get_sli.source, get_sli.triggeredid, get_sli.shkeptncontext) == (
        "lighthouse-service",
        None,
        "ctx-1",
    )
    assert get_sli.data["get-sli"] == {
        "sliProvider": "prometheus",
        "start": "2024-01-01T10:00:00.000Z",
        "end": "2024-01-01T10:05:00.000Z",
        "indicators": [
            "http_response_time_seconds_main_page_sum",
            "request_throughput",
            "go_routines",
            "failing_request",
        ],
    }
    assert get_sli.data["deployment"] == "helloservice"
    assert {e.source for e in (sli_started, sli_done)} == {"prometheus-service"}
    assert {e.triggeredid for e in (sli_started, sli_done)} == {get_sli.id}

    assert (done.source, done.data["status"], done.data["result"], done.data["message"]) == (
        "lighthouse-service",
        "succeeded",
        "pass",
        "",
    )
    assert done.gitcommitid == event.gitcommitid
    evaluation = done.data["evaluation"]
    assert (evaluation["result"], evaluation["score"]) == ("pass", 100.0)
    assert base64.b64decode(evaluation["sloFileContent"]) == SLO
    assert (evaluation["timeStart"], evaluation["timeEnd"]) == (
        "2024-01-01T10:00:00.000Z",
        "2024-01-01T10:05:00.000Z",
    )
    assert done.data["labels"] == event.data["labels"]

    rt = indicator(done, "http_response_time_seconds_main_page_sum")
    assert rt["value"]["value"] == pytest.approx(0.2, rel=1e-9)
    assert rt["displayName"] == "HTTP Response Time"
    assert rt["value"]["query"] == (
        'sum(rate(http_server_request_duration_seconds_sum{method="GET",route="/",status_code="200",'
        'job="helloservice-fulltour-qa"}[300s]))/sum(rate(http_server_request_duration_seconds_count{method="GET",'
        'route="/",status_code="200",job="helloservice-fulltour-qa"}[300s]))'
    )
    assert indicator(done, "request_throughput")["value"]["value"] == pytest.approx(1.0, rel=1e-9)
    go = indicator(done, "go_routines")
    assert (go["value"]["value"], go["keySli"], go["status"]) == (12.0, True, "pass")
    # project level (main) defines go_routines; the service level overrides failing_request
    assert go["value"]["query"] == 'go_goroutines{job="helloservice-fulltour-qa"}'
    assert indicator(done, "failing_request")["value"]["value"] == 5.0
    # the provider's answer in the ledger carries the queries too
    assert [v["query"] for v in sli_done.data["get-sli"]["indicatorValues"]][2] == go["value"]["query"]


def test_slow_production_scores_the_tutorials_expected_warning(
    upstream: Upstream, tutorial_prometheus: PrometheusServer, tmp_path: Path
) -> None:
    ctx = make_ctx(upstream, tutorial_prometheus.url, tmp_path)
    done = run(ctx, triggered(upstream, "production"))
    assert indicator(done, "http_response_time_seconds_main_page_sum")["value"]["value"] == pytest.approx(0.6)
    assert indicator(done, "http_response_time_seconds_main_page_sum")["status"] == "fail"
    assert (done.data["result"], done.data["evaluation"]["score"]) == ("warning", 75.0)
    assert done.data["message"] == (
        "Evaluation returned a warning: the calculated score of 75 is close to the warning target value of 75"
    )


def test_throughput_is_compared_with_the_last_passing_evaluation(
    upstream: Upstream, tutorial_prometheus: PrometheusServer, tmp_path: Path
) -> None:
    ctx = make_ctx(upstream, tutorial_prometheus.url, tmp_path)
    first = run(ctx, triggered(upstream, start=T0, context="ctx-1"))
    warned = run(
        ctx, triggered(upstream, "production", start=T0, context="ctx-1")
    )  # other stage: not compared
    second = run(ctx, triggered(upstream, start=T1, context="ctx-2"))

    assert warned.data["result"] == "warning"
    tp = indicator(second, "request_throughput")
    assert tp["value"]["value"] == pytest.approx(0.1, rel=1e-9)
    assert tp["value"]["comparedValue"] == pytest.approx(1.0, rel=1e-9)
    assert tp["passTargets"] == [{"criteria": ">=-80%", "targetValue": pytest.approx(0.2), "violated": True}]
    assert second.data["evaluation"]["comparedEvents"] == [first.id]
    assert (second.data["result"], second.data["evaluation"]["score"]) == ("warning", 75.0)

    # Only passing evaluations count (include_result_with_score: pass): the warning is skipped,
    # so a third evaluation still compares with the first one.
    third = run(ctx, triggered(upstream, start=T1, context="ctx-3"))
    assert third.data["evaluation"]["comparedEvents"] == [first.id]


def test_an_invalidated_evaluation_is_not_compared(
    upstream: Upstream, tutorial_prometheus: PrometheusServer, tmp_path: Path
) -> None:
    ctx = make_ctx(upstream, tutorial_prometheus.url, tmp_path)
    first = run(ctx, triggered(upstream, start=T0, context="ctx-1"))
    ctx.emit(
        KeptnEvent(
            source="user",
            type="sh.keptn.event.evaluation.invalidated",
            shkeptncontext="ctx-1",
            triggeredid=first.triggeredid,
            data={"project": "fulltour", "stage": "qa", "service": "helloservice"},
            id=new_id(),
            time=now_text(),
        )
    )
    second = run(ctx, triggered(upstream, start=T1, context="ctx-2"))
    assert "comparedEvents" not in second.data["evaluation"]
    assert indicator(second, "request_throughput")["status"] == "pass"  # no history: relative passes


def test_files_are_read_at_the_pinned_commit(
    upstream: Upstream, tutorial_prometheus: PrometheusServer, tmp_path: Path
) -> None:
    ctx = make_ctx(upstream, tutorial_prometheus.url, tmp_path)
    event = triggered(upstream)
    upstream.commit("qa", {"helloservice/slo.yaml": SLO.replace(b'"<=30"', b'"<=3"')})
    upstream.commit(
        "qa", {"helloservice/prometheus/sli.yaml": b"indicators:\n  request_throughput: vector(0)\n"}
    )
    done = run(ctx, event)
    assert done.data["result"] == "pass"
    assert indicator(done, "go_routines")["passTargets"][0]["criteria"] == "<=30"


def test_rerun_after_a_crash_records_nothing_twice_and_does_not_remeasure(
    upstream: Upstream, tutorial_prometheus: PrometheusServer, tmp_path: Path
) -> None:
    ctx = make_ctx(upstream, tutorial_prometheus.url, tmp_path)
    event = triggered(upstream, evaluation={"timeframe": "5m"})
    # window "5m ending now" with the clock in 2024-02: no data, every SLI fails
    first = run(ctx, event)
    # crash before evaluation.finished was recorded: drop it, and make Prometheus unreachable
    ctx.recorded.remove(first)
    ctx._ids.discard(first.id)
    ctx.settings = Settings(prometheus_url="http://127.0.0.1:9", data_dir=tmp_path / "data")
    EvaluationExecutor().run(event, ctx, started=True)
    again = finished(ctx, event)
    assert again.id == first.id
    assert again.data == first.data
    assert ctx.types().count("sh.keptn.event.get-sli.finished") == 1
    # and a third run finds the task done
    EvaluationExecutor().run(event, ctx, started=True)
    assert len(ctx.recorded) == 6


# --------------------------------------------------------------------------------------------
# failure modes: each SLI reports its reason, the gate follows the documented policy


def test_prometheus_down_fails_the_gate_with_each_slis_reason(upstream: Upstream, tmp_path: Path) -> None:
    ctx = make_ctx(upstream, "http://127.0.0.1:9", tmp_path)
    done = run(ctx, triggered(upstream))
    assert (done.data["status"], done.data["result"]) == ("succeeded", "fail")
    assert (
        done.data["message"] == "lighthouse failed because SLI failed with message unable to retrieve metrics"
    )
    assert done.data["evaluation"]["result"] == "fail"
    for result in done.data["evaluation"]["indicatorResults"]:
        assert result["status"] == "fail"
        assert (
            result["value"]["message"]
            == "unable to query prometheus api: cannot reach http://127.0.0.1:9: connection refused"
        )


def test_a_bad_query_fails_only_its_objective(
    upstream: Upstream, tutorial_prometheus: PrometheusServer, tmp_path: Path
) -> None:
    upstream.commit(
        "qa",
        {
            "helloservice/prometheus/sli.yaml": SERVICE_SLI.replace(
                b"failing_request: sum(", b"failing_request: sum(("
            )
        },
    )
    ctx = make_ctx(upstream, tutorial_prometheus.url, tmp_path)
    done = run(ctx, triggered(upstream))
    failing = indicator(done, "failing_request")
    assert failing["status"] == "fail"
    assert failing["value"]["message"].startswith("unable to query prometheus api: bad_data: ")
    assert (done.data["result"], done.data["evaluation"]["score"]) == ("warning", 75.0)


@pytest.mark.parametrize(
    ("policy", "status", "result", "score"),
    [
        (None, "fail", "warning", 75.0),
        ("ignore", "info", "pass", 100.0),
        ("zero", "pass", "pass", 100.0),
    ],
)
def test_no_data_follows_the_slos_policy(
    upstream: Upstream,
    tutorial_prometheus: PrometheusServer,
    tmp_path: Path,
    policy: str | None,
    status: str,
    result: str,
    score: float,
) -> None:
    slo = SLO + (f"onNoData: {policy}\n".encode() if policy else b"")
    upstream.commit(
        "qa",
        {
            "helloservice/slo.yaml": slo,
            "helloservice/prometheus/sli.yaml": SERVICE_SLI.replace(b'code!="200"', b'code="404"'),
        },
    )
    ctx = make_ctx(upstream, tutorial_prometheus.url, tmp_path)
    done = run(ctx, triggered(upstream))
    failing = indicator(done, "failing_request")
    assert failing["status"] == status
    assert failing["value"]["message"].startswith("query did not return any values")
    assert (done.data["result"], done.data["evaluation"]["score"]) == (result, score)


def test_a_timeframe_error_is_an_errored_evaluation_without_sli_fetch(
    upstream: Upstream, tmp_path: Path
) -> None:
    ctx = make_ctx(upstream, "http://127.0.0.1:9", tmp_path)
    done = run(ctx, triggered(upstream, evaluation={"timeframe": "30s"}))
    assert (done.data["status"], done.data["result"], done.data["message"]) == (
        "errored",
        "fail",
        "end date must be at least 1 minute after start date",
    )
    assert done.data["evaluation"] == {
        "timeStart": "",
        "timeEnd": "",
        "result": "fail",
        "score": 0.0,
        "sloFileContent": "",
        "indicatorResults": None,
    }
    assert "sh.keptn.event.get-sli.triggered" not in ctx.types()


def test_no_slo_file_passes_without_evaluation(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit("qa", {"helloservice/slo.yaml": None})
    ctx = make_ctx(upstream, "http://127.0.0.1:9", tmp_path)
    done = run(ctx, triggered(upstream))
    assert (done.data["status"], done.data["result"]) == ("succeeded", "pass")
    assert (
        done.data["message"]
        == "no evaluation performed by lighthouse because no SLO file configured for project fulltour"
    )
    (get_sli,) = ctx.events(type_="sh.keptn.event.get-sli.triggered")
    assert "indicators" not in get_sli.data["get-sli"]


def test_a_broken_slo_file_names_the_file_and_line(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit("qa", {"helloservice/slo.yaml": SLO.replace(b"key_sli: true", b"key_sli: [yes]")})
    ctx = make_ctx(upstream, "http://127.0.0.1:9", tmp_path)
    done = run(ctx, triggered(upstream))
    assert done.data["status"] == "errored"
    assert done.data["message"].startswith(
        "error retrieving SLO file: Could not parse SLO file for service helloservice in stage qa in project "
        "fulltour: qa:helloservice/slo.yaml:25:14: objectives[2].key_sli: "
    )
    assert done.data["message"].endswith("boolean")


def test_a_missing_service_is_an_error(upstream: Upstream, tmp_path: Path) -> None:
    ctx = make_ctx(upstream, "http://127.0.0.1:9", tmp_path)
    event = triggered(upstream)
    event.data["service"] = "nosuch"
    done = run(ctx, event)
    assert (done.data["status"], done.data["message"]) == (
        "errored",
        "error retrieving SLO file: service nosuch not found",
    )


def test_a_broken_sli_file_errors_the_provider_and_the_evaluation(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit("qa", {"helloservice/prometheus/sli.yaml": b"indicators:\n  a: [1]\n"})
    ctx = make_ctx(upstream, "http://127.0.0.1:9", tmp_path)
    done = run(ctx, triggered(upstream))
    (sli_done,) = ctx.events(type_="sh.keptn.event.get-sli.finished")
    assert sli_done.data["status"] == "errored"
    assert (done.data["status"], done.data["result"], done.data["evaluation"]["result"]) == (
        "errored",
        "fail",
        "fail",
    )
    assert done.data["message"].startswith(
        "evaluation performed by lighthouse received an unexpected error: unable to retrieve custom queries for "
        "project fulltour: qa:helloservice/prometheus/sli.yaml:2"
    )


# --------------------------------------------------------------------------------------------
# live scraping: a real metrics endpoint, scraped every second


@pytest.fixture
def live_service(
    prometheus_factory: PrometheusFactory, metrics_endpoint_factory: Callable[..., MetricsEndpoint]
) -> Iterator[PrometheusServer]:
    registry = CollectorRegistry()
    requests_total = Counter("http_requests", "requests", ["status"], registry=registry)
    duration = Histogram(
        "http_server_request_duration_seconds",
        "duration",
        ["method", "route", "status_code"],
        registry=registry,
    )
    Gauge("go_goroutines", "goroutines of the Go service this endpoint stands in for", registry=registry).set(
        9
    )
    handler = Counter("promhttp_metric_handler_requests", "scrapes", ["code"], registry=registry)
    handler.labels(code="200").inc(50)
    handler.labels(code="500").inc(1)
    endpoint = metrics_endpoint_factory(registry)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(0.05):
            requests_total.labels(status="success").inc()
            duration.labels(method="GET", route="/", status_code="200").observe(0.125)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    server = prometheus_factory.start(scrape_targets=[endpoint.target], job="helloservice-fulltour-qa")
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)


def test_tutorial_gate_on_a_live_scraped_endpoint(
    upstream: Upstream, live_service: PrometheusServer, tmp_path: Path
) -> None:
    live_service.wait_for('rate(http_requests_total{job="helloservice-fulltour-qa"}[1m]) > 0', deadline=30)
    ctx = MemoryContext(
        files=GitFiles(upstream.repo),
        settings=Settings(prometheus_url=live_service.url, data_dir=tmp_path / "data"),
    )
    done = run(ctx, triggered(upstream, evaluation={"timeframe": "1m"}))
    assert (done.data["result"], done.data["evaluation"]["score"]) == ("pass", 100.0)
    assert indicator(done, "http_response_time_seconds_main_page_sum")["value"]["value"] == pytest.approx(
        0.125
    )
    assert indicator(done, "go_routines")["value"]["value"] == 9.0
    assert indicator(done, "failing_request")["value"]["value"] == 1.0
    assert indicator(done, "request_throughput")["value"]["value"] > 0
    assert "[60s]" in indicator(done, "request_throughput")["value"]["query"]


# --------------------------------------------------------------------------------------------
# the locust provider: statistics of real locust runs

LOCUSTFILE = """
from locust import HttpUser, constant, task

class Visitor(HttpUser):
    wait_time = constant(0.05)

    @task
    def index(self):
        self.client.get("/")
"""

IDLE_LOCUSTFILE = """
import gevent
from locust import HttpUser, constant, task

class Idle(HttpUser):
    wait_time = constant(60)

    def on_start(self):
        gevent.sleep(60)

    @task
    def index(self):
        self.client.get("/")
"""

LOCUST_SLO = b"""sliProvider: locust
objectives:
  - sli: request_count
    pass: [{criteria: [">0"]}]
  - sli: error_rate
    pass: [{criteria: ["<=0.01"]}]
  - sli: response_time_p95
    pass: [{criteria: ["<=500"]}]
total_score: {pass: "90%"}
"""


@pytest.fixture
def web_server() -> Iterator[str]:
    import http.server

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def locust_run(locustfile: str, host: str, stats_dir: Path) -> None:
    """A real, short, headless locust run in its own process (locust patches with gevent)."""
    if shutil.which("locust") is None and not Path(sys.executable).with_name("locust").exists():
        pytest.skip("locust is not installed")
    stats_dir.mkdir(parents=True)
    (stats_dir / "locustfile.py").write_text(locustfile)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(stats_dir / "locustfile.py"),
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "2s",
            "--host",
            host,
            "--only-summary",
            "--csv",
            str(stats_dir / "result"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize(("locustfile", "result"), [(LOCUSTFILE, "pass"), (IDLE_LOCUSTFILE, "fail")])
def test_locust_statistics_gate_a_load_test_that_made_no_requests(
    upstream: Upstream, web_server: str, tmp_path: Path, locustfile: str, result: str
) -> None:
    data_dir = tmp_path / "data"
    locust_run(locustfile, web_server, data_dir / "jobs" / "je-test" / "keptn")
    upstream.commit("qa", {"helloservice/slo.yaml": LOCUST_SLO})
    ctx = MemoryContext(files=GitFiles(upstream.repo), settings=Settings(data_dir=data_dir))
    event = triggered(
        upstream, extra={"test": {"start": "x", "end": "y", "locustStatsDir": "jobs/je-test/keptn"}}
    )
    done = run(ctx, event)
    (sli_done,) = ctx.events(type_="sh.keptn.event.get-sli.finished")
    assert sli_done.source == "locust-service"
    assert done.data["result"] == result
    count = indicator(done, "request_count")["value"]
    if result == "pass":
        assert count["value"] > 0
        assert indicator(done, "response_time_p95")["status"] == "pass"
    else:
        assert count["value"] == 0
        p95 = indicator(done, "response_time_p95")
        assert (p95["status"], p95["value"]["message"]) == (
            "fail",
            "query did not return any values: the load test made no requests",
        )


def test_locust_statistics_outside_the_data_directory_are_refused(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit("qa", {"helloservice/slo.yaml": LOCUST_SLO})
    ctx = MemoryContext(files=GitFiles(upstream.repo), settings=Settings(data_dir=tmp_path / "data"))
    done = run(ctx, triggered(upstream, extra={"test": {"locustStatsDir": "/etc"}}))
    assert done.data["result"] == "fail"
    assert "outside the data directory" in indicator(done, "request_count")["value"]["message"]
