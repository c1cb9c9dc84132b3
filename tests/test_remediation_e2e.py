"""The tutorial's self-healing end to end: the whole reconciler in-process on a real git upstream.

Real parts: the git upstream and mirror, the git ledger, the control loop, the
built-in get-action and evaluation executors, the job executor on the local
runner, locust as the load test against a real HTTP service on 127.0.0.1, and
the CLI recording the tutorial's fake problem. Helm is stood in for by
`reconciler.demo.localhelm` in record mode: it writes its argv to
`<data_dir>/localhelm/argv.jsonl` and changes nothing. The quality gate is
lighthouse scoring an SLI that a real Prometheus scrapes from the service: the
requests the load test made.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, Counter, generate_latest

from reconciler.app import App
from reconciler.cli import cli
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings
from tests.support.ingress import EXAMPLE, GitUpstream, directory_files
from tests.support.prometheus import PrometheusFactory, PrometheusServer

DATA = Path(__file__).parent / "data" / "ingress"
BIN = Path(sys.executable).parent

SLI = """\
spec_version: "1.0"
indicators:
  served_requests: sum(increase(hello_requests_total{job="$SERVICE-$PROJECT-$STAGE"}[$DURATION_SECONDS]))
"""

PASSING_SLO = """\
spec_version: "1.0"
objectives:
  - sli: served_requests
    displayName: Requests the service answered
    pass: [{criteria: [">=1"]}]
    key_sli: true
total_score: {pass: "90%", warning: "75%"}
"""

# More requests than a two-second load test of two users can make: the gate fails every round.
FAILING_SLO = PASSING_SLO.replace('">=1"', '">=1000000"')

THREE_ACTIONS = """\
apiVersion: spec.keptn.sh/0.1.4
kind: Remediation
metadata: {name: helloservice-remediation}
spec:
  remediations:
    - problemType: http_response_time_seconds_main_page_sum
      actionsOnOpen:
        - {name: Scale to 2, action: scale, value: "2"}
        - {name: Scale to 3, action: scale, value: "3"}
        - {name: Scale to 4, action: scaling, value: "4"}
"""


@dataclass
class Helloservice:
    url: str
    target: str
    served: Counter


@pytest.fixture
def helloservice() -> Iterator[Helloservice]:
    """The service the load test hits, with Prometheus metrics, on a free loopback port."""
    registry = CollectorRegistry()
    served = Counter("hello_requests", "GET / requests answered", registry=registry)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body = generate_latest(registry)
            else:
                served.inc()
                body = b"hello from helloservice\n"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield Helloservice(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", served)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def prometheus(helloservice: Helloservice, prometheus_factory: PrometheusFactory) -> PrometheusServer:
    """Prometheus scraping the service as job helloservice-fulltour-production, with a first sample in."""
    server = prometheus_factory.start(
        scrape_targets=[helloservice.target], job="helloservice-fulltour-production"
    )
    server.wait_for('hello_requests_total{job="helloservice-fulltour-production"}', deadline=30)
    return server


def local_upstream(
    path: Path, service_url: str, *, slo: str, remediation: str | None = None, evaluation_delay: str = ""
) -> GitUpstream:
    """example-upstream with its local profile, wired to this test's tools and service."""
    branches = directory_files(EXAMPLE)
    for branch, files in directory_files(EXAMPLE / "_local").items():
        branches[branch].update(files)
    prod = branches["production"]
    config = prod["helloservice/job/config.yaml"].decode()
    config = config.replace('cmd: ["python", ', f'cmd: ["{sys.executable}", ')
    config = config.replace('cmd: ["locust"]', f'cmd: ["{BIN / "locust"}"]')
    config = config.replace(
        '"--host", "http://127.0.0.1:18092", "--only-summary"]',
        f'"--host", "{service_url}", "--only-summary", "--csv", "/keptn/result"]',
    )
    record = "          - {name: RECONCILER_LOCALHELM_MODE, value: record, valueFrom: string}\n"
    config = config.replace("          - name: REPLICA_COUNT\n", record + "          - name: REPLICA_COUNT\n")
    assert config.count("RECONCILER_LOCALHELM_MODE") == 1 and "--csv" in config
    prod["helloservice/job/config.yaml"] = config.encode()
    conf = prod["helloservice/locust/locust.conf"].decode()
    prod["helloservice/locust/locust.conf"] = (
        conf.replace("users = 10", "users = 2").replace("run-time = 30s", "run-time = 2s").encode()
    )
    prod["helloservice/slo.yaml"] = slo.encode()
    prod["helloservice/prometheus/sli.yaml"] = SLI.encode()
    if evaluation_delay:  # give Prometheus a few scrapes of what the load test did
        shipyard = branches["main"]["shipyard.yaml"].decode()
        marker = "            - name: evaluation\n              properties:\n                timeframe: 1m\n"
        assert shipyard.endswith(marker), shipyard[-200:]
        delayed = marker.replace(
            "- name: evaluation\n", f"- name: evaluation\n              triggeredAfter: {evaluation_delay}\n"
        )
        branches["main"]["shipyard.yaml"] = (shipyard[: -len(marker)] + delayed).encode()
    if remediation is not None:
        prod["helloservice/remediation.yaml"] = remediation.encode()
    up = GitUpstream(path)
    for branch, files in branches.items():
        up.commit(branch, files, f"{branch}: tutorial files, local profile")
    return up


@pytest.fixture
def start_app(tmp_path: Path, prometheus: PrometheusServer) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def start(up: GitUpstream, **overrides: Any) -> App:
        data = tmp_path / "data"
        (data / "localhelm").mkdir(parents=True)  # localhelm's state directory, found from the job dirs
        settings = Settings(
            upstream=str(up.path),
            data_dir=data,
            poll_interval=0.5,
            api_listen="",
            runner="local",
            local_commands=[
                "python -m reconciler.demo.localhelm",
                "locust",
                f"{sys.executable} -m reconciler.demo.localhelm",
                str(BIN / "locust"),
            ],
            ledger_push="never",
            project="",
            prometheus_url=prometheus.url,
            **overrides,
        )
        app = App(settings, serve_api=False).start()
        threading.Thread(target=app.run_forever, daemon=True).start()
        apps.append(app)
        assert app.store.current().ready, app.store.current().rejected
        return app

    yield start
    for app in apps:
        app.stop(grace=10)


def send_fake_problem(app: App) -> str:
    result = CliRunner().invoke(
        cli,
        [
            "send",
            "event",
            "-f",
            str(DATA / "remediation_trigger.json"),
            "--data-dir",
            str(app.settings.data_dir),
        ],
        env={"RECONCILER_CONFIG": ""},
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def remediation_done(app: App, context: str) -> bool:
    """Every remediation of the context finished and nothing is running in it any more."""
    state = app.controller.state
    executions = state.by_context(context)
    return bool(executions) and not any(ex.active for ex in executions) and not app.controller.running


def wait_for(check: Callable[[], bool], deadline: float, what: str, app: App) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.2)
    steps = [
        f"{e.type} {e.data.get('result', '')} {str(e.data.get('message', ''))[:120]}"
        for e in app.ledger.events()
    ]
    raise AssertionError(f"timed out waiting for {what}; ledger:\n" + "\n".join(steps))


def of_context(app: App, context: str) -> list[KeptnEvent]:
    return [e for e in app.ledger.events() if e.shkeptncontext == context]


def recorded_helm_calls(app: App) -> list[list[str]]:
    path = app.settings.data_dir / "localhelm" / "argv.jsonl"
    return [json.loads(line)["argv"] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(240)
def test_tutorial_fake_problem_scales_to_two_load_tests_evaluates_and_finishes(
    start_app: Callable[..., App], helloservice: Helloservice, tmp_path: Path
) -> None:
    up = local_upstream(tmp_path / "upstream.git", helloservice.url, slo=PASSING_SLO, evaluation_delay="4s")
    app = start_app(up)
    context = send_fake_problem(app)
    wait_for(lambda: remediation_done(app, context), 180, "the remediation to finish", app)

    events = of_context(app, context)
    steps = [
        (e.type.removeprefix("sh.keptn.event."), e.source) for e in events if e.type.startswith("sh.keptn")
    ]
    expected_order = [
        ("production.remediation.triggered", "https://github.com/keptn/keptn/fake-problem"),
        ("production.remediation.started", "shipyard-controller"),
        ("get-action.triggered", "shipyard-controller"),
        ("get-action.started", "remediation-service"),
        ("get-action.finished", "remediation-service"),
        ("action.triggered", "shipyard-controller"),
        ("action.started", "job-executor-service"),
        ("action.finished", "job-executor-service"),
        ("je-test.triggered", "shipyard-controller"),
        ("je-test.started", "job-executor-service"),
        ("je-test.finished", "job-executor-service"),
        ("evaluation.triggered", "shipyard-controller"),
        ("evaluation.started", "lighthouse-service"),
        ("get-sli.triggered", "lighthouse-service"),
        ("get-sli.finished", "prometheus-service"),
        ("evaluation.finished", "lighthouse-service"),
        ("production.remediation.finished", "shipyard-controller"),
    ]
    assert [s for s in steps if s in expected_order] == expected_order, "\n".join(map(str, steps))

    by_type = {e.type: e for e in events}
    picked = by_type["sh.keptn.event.get-action.finished"].data
    assert picked["action"]["action"] == "scale" and picked["action"]["value"] == "2"
    action = by_type["sh.keptn.event.action.triggered"].data
    assert action["action"] == picked["action"]
    assert action["problem"] == {"problemTitle": "http_response_time_seconds_main_page_sum"}
    assert by_type["sh.keptn.event.action.finished"].result == "pass"

    [scale] = recorded_helm_calls(app)
    assert scale == [
        "upgrade",
        "-n",
        "fulltour-production",
        "helloservice",
        f"{scale[4]}",
        "--reuse-values",
        "--set",
        "replicaCount=2",
        "--wait",
    ]
    assert scale[4].endswith("/keptn/charts/helloservice.tgz") and Path(scale[4]).is_file()
    job_specs = [json.loads(p.read_text()) for p in (app.settings.data_dir / "jobs").glob("*/spec.json")]
    [scale_job] = [s for s in job_specs if "REPLICA_COUNT" in s["env"]]
    assert scale_job["env"]["REPLICA_COUNT"] == "2"

    evaluation = by_type["sh.keptn.event.evaluation.finished"]
    assert evaluation.result == "pass", evaluation.data["message"]
    values = {
        r["value"]["metric"]: r["value"]["value"] for r in evaluation.data["evaluation"]["indicatorResults"]
    }
    assert values["served_requests"] >= 1
    assert helloservice.served._value.get() >= 1  # the load test really reached the service
    done = by_type["sh.keptn.event.production.remediation.finished"]
    assert (done.result, done.status) == ("pass", "succeeded")
    assert [e.type for e in events].count("sh.keptn.event.production.remediation.triggered") == 1


@pytest.mark.timeout(300)
def test_escalation_tries_each_action_once_per_failing_round_then_stops(
    start_app: Callable[..., App], helloservice: Helloservice, tmp_path: Path
) -> None:
    up = local_upstream(
        tmp_path / "upstream.git", helloservice.url, slo=FAILING_SLO, remediation=THREE_ACTIONS
    )
    app = start_app(up)
    context = send_fake_problem(app)
    wait_for(lambda: remediation_done(app, context), 270, "the escalation to end", app)

    events = of_context(app, context)
    rounds = [e for e in events if e.type == "sh.keptn.event.production.remediation.finished"]
    assert [e.result for e in rounds] == ["fail", "fail", "fail", "fail"]
    picked = [
        e.data["action"]["value"]
        for e in events
        if e.type == "sh.keptn.event.get-action.finished" and "action" in e.data
    ]
    assert picked == ["2", "3", "4"]
    assert [call[call.index("--set") + 1] for call in recorded_helm_calls(app)] == [
        "replicaCount=2",
        "replicaCount=3",
        "replicaCount=4",
    ]
    evaluations = [e.result for e in events if e.type == "sh.keptn.event.evaluation.finished"]
    assert evaluations == ["fail", "fail", "fail"]
    last = rounds[-1]
    assert last.data["message"].startswith(
        "there is no action with index 3 for problem title http_response_time_seconds_main_page_sum"
    )
    # the last round ended at get-action, so the selector on evaluation.result no longer fires
    assert [e.type for e in events].count("sh.keptn.event.production.remediation.triggered") == 4
    assert [e.type for e in events].count("sh.keptn.event.action.triggered") == 3


@pytest.mark.timeout(300)
def test_iteration_cap_ends_a_remediation_that_would_go_on_with_a_clear_message(
    start_app: Callable[..., App], helloservice: Helloservice, tmp_path: Path
) -> None:
    up = local_upstream(
        tmp_path / "upstream.git", helloservice.url, slo=FAILING_SLO, remediation=THREE_ACTIONS
    )
    app = start_app(up, remediation_max_iterations=2)
    context = send_fake_problem(app)
    wait_for(lambda: remediation_done(app, context), 270, "the capped remediation to end", app)

    events = of_context(app, context)
    assert [call[call.index("--set") + 1] for call in recorded_helm_calls(app)] == [
        "replicaCount=2",
        "replicaCount=3",
    ]
    rounds = [e for e in events if e.type == "sh.keptn.event.production.remediation.finished"]
    assert [(e.result, e.status) for e in rounds] == [
        ("fail", "succeeded"),
        ("fail", "succeeded"),
        ("fail", "errored"),
    ]
    capped = rounds[-1]
    assert capped.data["reconciler"]["reason"] == "IterationLimitReached"
    assert "already ran 2 times" in capped.data["message"]
    assert "remediation_max_iterations" in capped.data["message"]
    assert [e.type for e in events].count("sh.keptn.event.get-action.triggered") == 2
