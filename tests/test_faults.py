"""Faults: the whole reconciler keeps running while its real parts misbehave, says so, and loses nothing.

Each test runs the reconciler in-process (`App`, as `reconciler run` does) against
real parts made faulty: a git upstream served over git:// or smart HTTP that stops
or answers 500, a real Prometheus that stops or answers slowly or with 503 behind a
proxy, the Kubernetes API double answering 500s and timing out (so a create that
succeeded is answered 409 on the retry), a data directory on a tmpfs that fills up,
and a clock that jumps. For each it checks what a user would: the reconciler is
still running, `status()` / status.json and the log say what is wrong, it tries
again with backoff, and after recovery the ledger holds every event once.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.adapters.kube_runner import KubeRunner
from reconciler.app import App
from reconciler.base.clock import utcnow
from reconciler.cli import cli
from reconciler.executors.approval import ApprovalExecutor
from reconciler.executors.base import Executor
from reconciler.executors.evaluation import EvaluationExecutor
from reconciler.executors.jobs import JobExecutor
from reconciler.executors.remediation import GetActionExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings
from tests.support.faults import CapturedLogs, FaultProxy, TinyDisk
from tests.support.gitserver import GitDaemon, SmartHttp, UpstreamRepo
from tests.support.kube import KubeDouble
from tests.support.prometheus import PrometheusFactory
from tests.support.shop import deploy, recording_job, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

SHIPYARD = shipyard(stage("qa", sequence("delivery", task("deploy"))))

KUBE_JOB = """\
apiVersion: v2
actions:
  - name: deploy
    events:
      - name: sh.keptn.event.deploy.triggered
    tasks:
      - name: helm
        image: alpine/helm:3.9.0
        cmd: [helm]
        args: [upgrade, --install, $(KEPTN_SERVICE)]
        maxPollDuration: 60
"""

DELIVERED = "sh.keptn.event.qa.delivery.finished"


def seed(repo: UpstreamRepo, job: str) -> None:
    seed_shop(repo, SHIPYARD, files={"web/job/config.yaml": job})


@dataclass
class Running:
    """One in-process reconciler and the questions the tests ask it."""

    app: App
    thread: threading.Thread

    def events(self, type_: str | None = None) -> list[KeptnEvent]:
        self.app.ledger.refresh()
        return [e for e in self.app.ledger.events() if type_ is None or e.type == type_]

    def delivered(self) -> list[KeptnEvent]:
        return self.events(DELIVERED)

    def status(self) -> dict[str, Any]:
        return self.app.status()

    def alive(self) -> bool:
        return self.thread.is_alive() and self.app.phase == "running"


def assert_no_duplicates(run: Running) -> None:
    ids = Counter(e.id for e in run.events())
    assert [i for i, n in ids.items() if n > 1] == []
    # a task is answered once per executor, however often it was retried
    answers = Counter((e.type, e.triggeredid, e.source) for e in run.events() if e.triggeredid)
    assert [k for k, n in answers.items() if n > 1] == []


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    apps: list[Running] = []

    def start(
        upstream: str,
        *,
        data_dir: Path | None = None,
        executors: list[Executor] | None = None,
        clock: Callable[[], datetime] = utcnow,
        **overrides: Any,
    ) -> Running:
        options: dict[str, Any] = {
            "upstream": upstream,
            "data_dir": data_dir or tmp_path / "data",
            "poll_interval": 0.3,
            "poll_jitter": 0.0,
            "backoff_max": 2.0,
            "api_listen": "",
            "runner": "local",
            "local_commands": ["*"],  # the job is a python one-liner
            "ledger_push": "never",
            "watch": False,
            **overrides,
        }
        app = App(Settings(**options), executors=executors, serve_api=False, clock=clock).start()
        thread = threading.Thread(target=app.run_forever, daemon=True, name="app-loop")
        thread.start()
        run = Running(app, thread)
        apps.append(run)
        return run

    yield start
    for run in apps:
        run.app.stop(grace=5)
        run.thread.join(timeout=10)


def kube_executors(api: Any) -> list[Executor]:
    """The default executors with the job executor on the Kubernetes runner, short request timeouts."""
    runner = KubeRunner(api, wake_seconds=0.2, grace_seconds=0.5, request_timeout=1.0)
    return [ApprovalExecutor(), EvaluationExecutor(), GetActionExecutor(), JobExecutor(runner)]


def api_through(proxy: FaultProxy) -> Any:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = proxy.url
    return client.ApiClient(cfg)


# ----------------------------------------------------------------------------- Kubernetes API


JOBS_PATH = r"^/apis/batch/v1/namespaces/[^/]+/jobs$"


@pytest.mark.timeout(90)
def test_kubernetes_api_answering_500_is_retried_shown_in_status_and_the_job_created_once(
    kube: KubeDouble,
    fault_proxy: Callable[[str], FaultProxy],
    captured_logs: CapturedLogs,
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
) -> None:
    seed(upstream_repo, KUBE_JOB)
    proxy = fault_proxy(kube.url)
    failing = proxy.fail(500, method="POST", path=JOBS_PATH)
    kube.job_controller(lambda job: kube.succeed(job, logs="release web deployed\n"), timeout=80)
    run = start_app(str(upstream_repo.path), executors=kube_executors(api_through(proxy)))
    deploy(upstream_repo, "2.0")

    problems = wait_for(lambda: run.status().get("problems", {}).get("kubernetes"), what="kubernetes problem")
    assert "500" in problems["message"] and problems["retrying"]
    status_file = run.app.settings.data_dir / "status.json"
    wait_for(lambda: "kubernetes" in json.loads(status_file.read_text())["problems"], what="status.json")
    shown = CliRunner().invoke(cli, ["status", "--data-dir", str(run.app.settings.data_dir)])
    assert (
        "problem: kubernetes: creating Job " in shown.output and "500 Internal Server Error" in shown.output
    )
    wait_for(lambda: failing.hits >= 3, what="a few retries")
    assert run.alive() and run.delivered() == []
    proxy.clear()  # the API server recovers

    done = wait_for(run.delivered, what="delivery after recovery")
    assert done[0].result == "pass", done[0].data
    assert len(kube.created("Job")) == 1
    assert "kubernetes" not in run.status().get("problems", {})
    assert "kube.api_retry" in captured_logs.text()
    assert_no_duplicates(run)


@pytest.mark.timeout(90)
def test_a_create_whose_answer_times_out_is_retried_and_the_409_adopts_the_job_it_made(
    kube: KubeDouble,
    fault_proxy: Callable[[str], FaultProxy],
    captured_logs: CapturedLogs,
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
) -> None:
    seed(upstream_repo, KUBE_JOB)
    proxy = fault_proxy(kube.url)
    # the API server creates the Job, but its answer comes after the client gave up (1 s)
    slow = proxy.delay(3.0, method="POST", path=JOBS_PATH, times=1, after_forward=True)
    kube.job_controller(lambda job: kube.succeed(job, logs="release web deployed\n"), timeout=80)
    run = start_app(str(upstream_repo.path), executors=kube_executors(api_through(proxy)))
    deploy(upstream_repo, "2.0")

    done = wait_for(run.delivered, what="delivery")
    assert done[0].result == "pass", done[0].data
    assert slow.hits == 1
    posts = [o for o in kube.created("Job")]
    assert len(posts) == 1, "the retry must adopt the Job the timed-out create made, not make another"
    assert "no answer within 1s" in captured_logs.text()
    assert run.alive()
    assert_no_duplicates(run)


@pytest.mark.timeout(90)
def test_a_hung_kubernetes_api_ends_in_a_failed_task_not_a_hung_reconciler(
    kube: KubeDouble,
    fault_proxy: Callable[[str], FaultProxy],
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
) -> None:
    seed(upstream_repo, KUBE_JOB)
    proxy = fault_proxy(kube.url)
    proxy.delay(20.0, method="POST", path=JOBS_PATH)  # never answers in time
    runner = KubeRunner(
        api_through(proxy), wake_seconds=0.2, grace_seconds=0.5, request_timeout=0.5, create_retry_seconds=3.0
    )
    executors = [ApprovalExecutor(), EvaluationExecutor(), GetActionExecutor(), JobExecutor(runner)]
    run = start_app(str(upstream_repo.path), executors=executors)
    deploy(upstream_repo, "2.0")

    done = wait_for(run.delivered, what="the delivery to end")
    assert done[0].result == "fail"
    deployed = run.events("sh.keptn.event.deploy.finished")[0]
    assert (
        "no answer within 0.5s" in deployed.data["message"] and "retried for 3s" in deployed.data["message"]
    )
    problem = run.status()["problems"]["kubernetes"]
    assert problem["retrying"] is False and "gave up" in problem["message"]
    assert run.alive()
    assert_no_duplicates(run)


# ----------------------------------------------------------------------------- upstream


def upstream_health(run: Running) -> dict[str, Any]:
    up: dict[str, Any] = run.status()["upstream"]
    return up


@pytest.mark.timeout(90)
def test_an_unreachable_upstream_backs_off_shows_why_and_a_commit_made_meanwhile_is_delivered_once(
    git_daemon: GitDaemon,
    captured_logs: CapturedLogs,
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs.txt"
    seed(upstream_repo, recording_job(runs))
    run = start_app(git_daemon.url("project.git"))
    assert upstream_health(run)["reachable"] is True

    git_daemon.stop()
    wait_for(lambda: upstream_health(run)["consecutive_failures"] >= 1, what="a failed poll")
    deploy(upstream_repo, "2.0")  # pushed while we cannot see the upstream
    down = wait_for(
        lambda: (h := upstream_health(run))["consecutive_failures"] >= 3 and h, what="3 failed polls"
    )
    assert down["reachable"] is False
    assert "unreachable" in down["last_error"] and "127.0.0.1" in down["last_error"]
    gap = datetime.fromisoformat(down["next_attempt"]) - datetime.fromisoformat(down["last_attempt"])
    assert gap >= timedelta(seconds=0.3 * 2**2), "the next poll should wait longer than the normal interval"
    status_file = tmp_path / "data" / "status.json"
    wait_for(
        lambda: json.loads(status_file.read_text())["upstream"]["reachable"] is False, what="status.json"
    )
    assert captured_logs.text().count('"upstream.fetch_failed"') >= 3
    assert run.alive() and run.delivered() == []

    git_daemon.start()
    done = wait_for(run.delivered, what="the delivery of the commit made during the outage")
    assert done[0].result == "pass"
    assert upstream_health(run)["reachable"] is True and upstream_health(run)["consecutive_failures"] == 0
    assert '"upstream.recovered"' in captured_logs.text()
    polls = upstream_health(run)["polls"]
    wait_for(lambda: upstream_health(run)["polls"] >= polls + 2, what="two more polls")  # nothing twice
    assert runs.read_text().splitlines() == ["web:2.0"]
    assert len(run.events("sh.keptn.event.qa.delivery.triggered")) == 1
    assert_no_duplicates(run)


@pytest.mark.timeout(90)
def test_an_upstream_answering_500_is_shown_and_retried_until_it_serves_again(
    git_http: SmartHttp,
    fault_proxy: Callable[[str], FaultProxy],
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs.txt"
    seed(upstream_repo, recording_job(runs))
    proxy = fault_proxy(f"http://127.0.0.1:{git_http.port}")
    run = start_app(f"{proxy.url}/project.git")
    assert upstream_health(run)["reachable"] is True

    errors = proxy.fail(500, path="/project.git/")
    wait_for(lambda: upstream_health(run)["consecutive_failures"] >= 1, what="a failed poll")
    deploy(upstream_repo, "3.0")
    down = wait_for(
        lambda: (h := upstream_health(run))["consecutive_failures"] >= 2 and h, what="failed polls"
    )
    assert "500" in down["last_error"]
    assert run.alive() and run.delivered() == []
    proxy.clear()

    done = wait_for(run.delivered, what="the delivery once the upstream serves again")
    assert done[0].result == "pass" and errors.hits >= 2
    assert runs.read_text().splitlines() == ["web:3.0"]
    assert_no_duplicates(run)


# ----------------------------------------------------------------------------- Prometheus


GATED_SHIPYARD = shipyard(
    stage("qa", sequence("delivery", task("deploy"), task("evaluation", timeframe="5m")))
)

SLI = 'spec_version: "1.0"\nindicators:\n  response_time: vector(0.2)\n'
SLO = """\
spec_version: "1.0"
objectives:
  - sli: response_time
    pass:
      - criteria: ["<=0.5"]
total_score: {pass: "90%", warning: "75%"}
"""


def seed_gated(repo: UpstreamRepo, runs: Path) -> None:
    """qa: web with a quality gate."""
    files = {"web/job/config.yaml": recording_job(runs), "web/slo.yaml": SLO, "web/prometheus/sli.yaml": SLI}
    seed_shop(repo, GATED_SHIPYARD, files=files)


def evaluations(run: Running) -> list[KeptnEvent]:
    return run.events("sh.keptn.event.evaluation.finished")


@pytest.mark.timeout(120)
def test_prometheus_down_fails_the_gate_with_the_reason_and_the_next_gate_passes_once_it_is_back(
    prometheus_factory: PrometheusFactory,
    fault_proxy: Callable[[str], FaultProxy],
    captured_logs: CapturedLogs,
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
) -> None:
    seed_gated(upstream_repo, tmp_path / "runs.txt")
    prometheus = prometheus_factory.start()
    proxy = fault_proxy(prometheus.url)
    run = start_app(str(upstream_repo.path), prometheus_url=proxy.url, prometheus_timeout=10.0)

    proxy.down()
    deploy(upstream_repo, "2.0")
    wait_for(lambda: len(evaluations(run)) == 1, what="the first evaluation")
    failed = evaluations(run)[0]
    assert failed.result == "fail", failed.data
    [sli] = failed.data["evaluation"]["indicatorResults"]
    refused = os.strerror(errno.ECONNREFUSED).lower()  # the OS's reason, not the HTTP client's wording
    assert "cannot reach" in sli["value"]["message"] and refused in sli["value"]["message"]
    problem = run.status()["problems"][f"prometheus {proxy.url}"]
    assert refused in problem["message"]
    assert '"sli_failed"' in captured_logs.text()
    assert run.alive()

    proxy.up()
    deploy(upstream_repo, "3.0")
    wait_for(lambda: len(evaluations(run)) == 2, what="the second evaluation")
    assert evaluations(run)[1].result == "pass", evaluations(run)[1].data
    assert f"prometheus {proxy.url}" not in run.status()["problems"], run.status()["problems"]
    # the sequence's .finished follows the evaluation's a moment later
    wait_for(lambda: [e.result for e in run.delivered()] == ["fail", "pass"], what="both deliveries finished")
    assert_no_duplicates(run)


@pytest.mark.timeout(120)
def test_a_restarting_prometheus_answering_503_is_retried_and_a_slow_one_fails_only_after_the_timeout(
    prometheus_factory: PrometheusFactory,
    fault_proxy: Callable[[str], FaultProxy],
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
) -> None:
    seed_gated(upstream_repo, tmp_path / "runs.txt")
    prometheus = prometheus_factory.start()
    proxy = fault_proxy(prometheus.url)
    run = start_app(str(upstream_repo.path), prometheus_url=proxy.url, prometheus_timeout=2.0)

    blip = proxy.fail(503, path="/api/v1/query", times=2)  # two 503s, then Prometheus answers
    deploy(upstream_repo, "2.0")
    wait_for(lambda: len(evaluations(run)) == 1, what="the evaluation through the 503s")
    assert evaluations(run)[0].result == "pass", evaluations(run)[0].data
    assert blip.hits == 2

    proxy.delay(6.0, path="/api/v1/query")  # answers, but only after the 2 s timeout
    deploy(upstream_repo, "3.0")
    wait_for(lambda: len(evaluations(run)) == 2, what="the evaluation against a slow Prometheus")
    slow = evaluations(run)[1]
    assert slow.result == "fail"
    [sli] = slow.data["evaluation"]["indicatorResults"]
    assert "no answer from" in sli["value"]["message"] and "within 2s" in sli["value"]["message"]
    assert "within 2s" in run.status()["problems"][f"prometheus {proxy.url}"]["message"]
    assert run.alive()
    assert_no_duplicates(run)


# ----------------------------------------------------------------------------- full disk


def git_fsck(repo: Path) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(repo), "fsck", "--strict"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.timeout(120)
def test_a_full_data_disk_is_shown_the_finished_job_is_recorded_once_space_returns_and_nothing_is_corrupt(
    kube: KubeDouble,
    tiny_disk: TinyDisk,
    captured_logs: CapturedLogs,
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
) -> None:
    seed(upstream_repo, KUBE_JOB)
    release = threading.Event()

    def job_controller(job: dict[str, Any]) -> None:
        release.wait(60)  # the job runs until the test lets it finish
        kube.succeed(job, logs="release web deployed\n")

    kube.job_controller(job_controller, timeout=100)
    run = start_app(
        str(upstream_repo.path), data_dir=tiny_disk.path / "data", executors=kube_executors(kube.api_client())
    )
    deploy(upstream_repo, "2.0")
    wait_for(lambda: kube.created("Job"), what="the deploy job")

    filler = tiny_disk.fill()  # the data disk fills up while the job runs
    release.set()  # the job finishes: its answer cannot be recorded
    deploy(upstream_repo, "3.0")  # and the next commit cannot be fetched
    problems = wait_for(
        lambda: (p := run.status()["problems"]).keys() >= {"ledger", "data directory"} and p,
        what="the full disk in status",
    )
    full = os.strerror(errno.ENOSPC)  # the OS's reason, whichever library met it
    assert full in problems["ledger"]["message"]
    assert full in problems["data directory"]["message"]
    up = run.status()["upstream"]
    assert full in up["last_error"] and up["reachable"] is not False
    wait_for(
        lambda: run.status()["problems"]["ledger"]["count"] >= 2, what="a second try to record the answer"
    )
    assert '"executor_answer_unrecorded"' in captured_logs.text()
    assert run.alive() and run.delivered() == []

    filler.unlink()  # space returns
    done = wait_for(lambda: len(run.delivered()) == 2 and run.delivered(), timeout=60, what="both deliveries")
    assert [e.result for e in done] == ["pass", "pass"]
    assert len(kube.created("Job")) == 2  # one per delivery: the re-run adopted the finished job
    deployed = run.events("sh.keptn.event.deploy.finished")
    assert [e.result for e in deployed] == ["pass", "pass"]
    wait_for(lambda: not run.status()["problems"], what="problems cleared")
    assert_no_duplicates(run)
    git_fsck(run.app.settings.data_dir / "ledger.git")
    git_fsck(run.app.settings.data_dir / "upstream.git")


# ----------------------------------------------------------------------------- clock


class JumpingClock:
    """The wall clock plus an offset a test moves, like NTP stepping the clock of a host."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def jump(self, by: timedelta) -> None:
        self.offset += by


@pytest.mark.timeout(120)
def test_the_clock_jumping_back_and_forth_is_shown_and_deliveries_keep_their_ledger_order(
    captured_logs: CapturedLogs,
    start_app: Callable[..., Running],
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs.txt"
    seed(upstream_repo, recording_job(runs))
    clock = JumpingClock()
    run = start_app(str(upstream_repo.path), clock=clock)
    deploy(upstream_repo, "2.0")
    wait_for(lambda: len(run.delivered()) == 1, what="the first delivery")

    clock.jump(-timedelta(days=1))
    problem = wait_for(lambda: run.status()["problems"].get("clock"), what="the backward jump in status")
    assert "jumped backward by 86400s" in problem["message"]
    deploy(upstream_repo, "3.0")
    wait_for(lambda: len(run.delivered()) == 2, what="a delivery a day in the past")

    clock.jump(timedelta(days=1, minutes=40))
    wait_for(
        lambda: "forward by 88800s" in run.status()["problems"]["clock"]["message"],
        what="the forward jump in status",
    )
    deploy(upstream_repo, "4.0")
    wait_for(lambda: len(run.delivered()) == 3, what="a delivery 40 minutes ahead")

    delivered = run.delivered()
    assert [e.result for e in delivered] == ["pass", "pass", "pass"]
    assert runs.read_text().splitlines() == ["web:2.0", "web:3.0", "web:4.0"]
    first, second, third = (e.timestamp for e in delivered)
    assert second < first < third  # recorded as the clock said, kept in the order it happened
    assert run.status()["updated_at"] > third.isoformat()[:16]
    assert captured_logs.text().count('"clock_jumped"') == 2
    assert run.alive()
    assert_no_duplicates(run)
