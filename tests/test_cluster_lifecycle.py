"""The whole reconciler as processes: SIGTERM mid-sequence, a leader killed mid-sequence, /metrics.

`reconciler run` runs as child processes on a real git upstream, with the local runner
(tasks are real processes supervised outside the reconciler, as Kubernetes Jobs are), a
Kubernetes API-server double for the Lease, and a real Prometheus scraping `/metrics`.

When the app lacks a piece of the wiring (a /metrics route, a Lease) the tests raise
`NotWired` as soon as that is evident, so a regression fails fast and says what is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import Ledger
from reconciler.runtime.datalock import DataDirLock
from tests.support.gitserver import UpstreamRepo, free_port
from tests.support.kube_leases import ApiDouble
from tests.support.prometheus import PrometheusFactory
from tests.support.shop import deploy, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

BRANCH = "reconciler-ledger"
GRACE = 5.0
"""shutdown_grace of the processes under test: SIGTERM must be done within it (plus start-up slack)."""

SHIPYARD = shipyard(
    stage("qa", sequence("delivery", task("deploy"), task("soak"), task("evaluation", timeframe="5m")))
)

# deploy: one line per run. soak: a line when it starts, then it waits (bounded) for the
# test's go-file, then a line when it is done: a task that is running when SIGTERM arrives.
JOB_CONFIG = """\
apiVersion: v2
actions:
  - name: deploy
    events:
      - name: sh.keptn.event.deploy.triggered
    tasks:
      - name: record
        image: python:3.11-slim
        cmd: ["{python}"]
        args: ["-c", "import sys; open(sys.argv[1], 'a').write('deploy' + chr(10))", "{runs}"]
        maxPollDuration: 60
  - name: soak
    events:
      - name: sh.keptn.event.soak.triggered
    tasks:
      - name: soak
        image: python:3.11-slim
        cmd: ["{python}"]
        args: ["-c", "{soak}", "{runs}", "{go}"]
        maxPollDuration: 120
"""

SOAK = (
    "import os, sys, time; open(sys.argv[1], 'a').write('soak started' + chr(10)); "
    "end = time.time() + 90; "
    "exec('while time.time() < end and not os.path.exists(sys.argv[2]): time.sleep(0.1)'); "
    "open(sys.argv[1], 'a').write('soak done' + chr(10))"
)


class NotWired(AssertionError):
    """The running app does not (yet) do what the test exercises."""


@dataclass
class Scene:
    repo: UpstreamRepo
    data: Path
    runs: Path
    go: Path
    logs: Path

    def ledger(self) -> list[KeptnEvent]:
        path = self.data / "ledger.git"
        if not (path / "HEAD").exists():
            return []
        return list(Ledger(path, BRANCH).events())

    def types(self) -> list[str]:
        return [e.type for e in self.ledger()]

    def runs_lines(self) -> list[str]:
        return self.runs.read_text().splitlines() if self.runs.exists() else []


@pytest.fixture
def scene(upstream_repo: UpstreamRepo, tmp_path: Path) -> Iterator[Scene]:
    runs, go = tmp_path / "runs.txt", tmp_path / "go"
    job = JOB_CONFIG.format(python=sys.executable, runs=runs, go=go, soak=SOAK)
    seed_shop(upstream_repo, SHIPYARD, files={"web/job/config.yaml": job})
    logs = tmp_path / "logs"
    logs.mkdir()
    s = Scene(upstream_repo, tmp_path / "data", runs, go, logs)
    yield s
    go.touch()  # let a soak job still waiting end (it is bounded anyway)
    wait_for(
        lambda: s.runs_lines().count("soak started") == s.runs_lines().count("soak done"),
        30,
        "soak jobs to end",
    )


@pytest.fixture
def reconciler_process(scene: Scene) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "RECONCILER_LEDGER_PUSH": "always",
            "RECONCILER_LEDGER_PUSH_INTERVAL": "1",
            "RECONCILER_WATCH": "false",
            "RECONCILER_LOG_FORMAT": "json",
            "RECONCILER_SHUTDOWN_GRACE": str(GRACE),
            "RECONCILER_LOCAL_COMMANDS": "*",  # the jobs are python one-liners
            **(extra_env or {}),
        }
        env.pop("RECONCILER_CONFIG", None)
        with (scene.logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reconciler",
                    "run",
                    "--upstream",
                    str(scene.repo.path),
                    "--data-dir",
                    str(scene.data),
                    "--runner",
                    "local",
                    "--api-listen",
                    (extra_env or {}).get("RECONCILER_API_LISTEN", ""),
                    "--poll-interval",
                    "0.5",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.mark.timeout(180)
def test_sigterm_mid_sequence_loses_no_ledger_commit_and_the_next_start_resumes_it(
    scene: Scene, reconciler_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    first = reconciler_process("first")
    wait_for(lambda: "reconciler.upstream.accepted" in scene.types(), 60, "the upstream to be accepted")
    deploy(scene.repo, "2.0")  # commit-to-deploy
    wait_for(lambda: "soak started" in scene.runs_lines(), 60, "the soak task to run")
    wait_for(lambda: "sh.keptn.event.soak.started" in scene.types(), 30, "soak.started in the ledger")
    before = scene.ledger()

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=GRACE + 10) == 0, (scene.logs / "first.log").read_text()[-3000:]

    after_stop = scene.ledger()
    assert [e.id for e in after_stop[: len(before)]] == [
        e.id for e in before
    ]  # nothing lost, nothing rewritten
    local_tip = Ledger(scene.data / "ledger.git", BRANCH).tip
    assert (
        local_tip is not None and scene.repo.tip(BRANCH) == local_tip
    )  # flushed to the upstream on the way out
    assert "sh.keptn.event.qa.delivery.finished" not in scene.types()  # it was stopped mid-sequence

    second = reconciler_process("second")
    wait_for(lambda: "soak started" in scene.runs_lines() and second.poll() is None, 30, "the second process")
    scene.go.touch()
    wait_for(
        lambda: "sh.keptn.event.qa.delivery.finished" in scene.types(), 90, "the resumed sequence to finish"
    )
    events = scene.ledger()
    assert [e.id for e in events[: len(after_stop)]] == [e.id for e in after_stop]
    done = next(e for e in events if e.type == "sh.keptn.event.qa.delivery.finished")
    assert done.result == "pass", done.data
    # Every task ran once: the soak job the first process started was adopted, not started again.
    assert scene.runs_lines() == ["deploy", "soak started", "soak done"]
    for name in ("deploy", "soak", "evaluation"):
        assert [e.type for e in events].count(f"sh.keptn.event.{name}.triggered") == 1, name
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=GRACE + 10) == 0
    assert scene.repo.tip(BRANCH) == Ledger(scene.data / "ledger.git", BRANCH).tip


# -- two replicas, one Lease -------------------------------------------------------------------------

LEASE_NS, LEASE_NAME = "reconciler", "reconciler-leader"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 3, 2.0, 0.5


def lease_holder(api: ApiDouble) -> str:
    lease = api.lease(LEASE_NS, LEASE_NAME)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def lock_holder_pid(scene: Scene) -> int | None:
    holder = DataDirLock(scene.data).holder()
    return holder.pid if holder else None


@pytest.mark.timeout(240)
def test_killed_leader_hands_over_within_the_lease_duration_and_the_standby_resumes_the_sequence(
    scene: Scene, reconciler_process: Callable[..., subprocess.Popen[bytes]], lease_api: ApiDouble
) -> None:
    cluster = {
        "RECONCILER_LEADER_ELECTION": "on",
        "RECONCILER_KUBECONFIG": str(lease_api.kubeconfig),
        "RECONCILER_LEASE_NAMESPACE": LEASE_NS,
        "RECONCILER_LEASE_NAME": LEASE_NAME,
        "RECONCILER_LEASE_DURATION": str(LEASE_DURATION),
        "RECONCILER_LEASE_RENEW_DEADLINE": str(RENEW_DEADLINE),
        "RECONCILER_LEASE_RETRY_PERIOD": str(RETRY_PERIOD),
    }
    procs = {
        name: reconciler_process(name, {**cluster, "RECONCILER_LEADER_IDENTITY": name})
        for name in ("pod-a", "pod-b")
    }
    try:
        wait_for(lambda: lease_holder(lease_api) in procs, 20, "a replica to take the Lease")
    except AssertionError:
        raise NotWired(
            "no replica took the Lease: " + (scene.logs / "pod-b.log").read_text()[-1500:]
        ) from None
    leader = lease_holder(lease_api)
    standby = next(n for n in procs if n != leader)
    # Exactly one leads: it holds the Lease and the data directory; the standby waits, alive.
    wait_for(lambda: lock_holder_pid(scene) == procs[leader].pid, 30, "the leader to lock the data directory")
    wait_for(lambda: "reconciler.upstream.accepted" in scene.types(), 60, "the upstream to be accepted")
    deploy(scene.repo, "2.0")
    wait_for(lambda: "sh.keptn.event.soak.started" in scene.types(), 60, "the soak task to start")
    assert lease_holder(lease_api) == leader and procs[standby].poll() is None
    assert lock_holder_pid(scene) == procs[leader].pid

    killed_at = time.monotonic()
    procs[leader].kill()
    procs[leader].wait(timeout=10)
    wait_for(lambda: lease_holder(lease_api) == standby, 4 * LEASE_DURATION, "the standby to take the Lease")
    takeover = time.monotonic() - killed_at
    print(f"takeover after SIGKILL: {takeover:.2f}s (lease duration {LEASE_DURATION}s)")
    # Protocol bound: the Lease's last renewal was at most one retry period before the kill.
    assert takeover <= LEASE_DURATION + 2 * RETRY_PERIOD + 1.0
    wait_for(
        lambda: lock_holder_pid(scene) == procs[standby].pid, 30, "the new leader to lock the data directory"
    )

    scene.go.touch()
    wait_for(lambda: "sh.keptn.event.qa.delivery.finished" in scene.types(), 90, "the sequence to finish")
    events = scene.ledger()
    done = next(e for e in events if e.type == "sh.keptn.event.qa.delivery.finished")
    assert done.result == "pass", done.data
    assert scene.runs_lines() == ["deploy", "soak started", "soak done"]  # the running job was adopted
    for name in ("deploy", "soak", "evaluation"):
        assert [e.type for e in events].count(f"sh.keptn.event.{name}.triggered") == 1, name

    procs[standby].send_signal(signal.SIGTERM)
    assert procs[standby].wait(timeout=GRACE + 10) == 0
    assert lease_holder(lease_api) == ""  # released on the way out


# -- /metrics of the running reconciler, scraped by Prometheus --------------------------------------------


@pytest.mark.timeout(180)
def test_prometheus_sees_sequence_and_evaluation_counters_move_after_a_sequence_runs(
    scene: Scene,
    reconciler_process: Callable[..., subprocess.Popen[bytes]],
    prometheus_factory: PrometheusFactory,
) -> None:
    port = free_port()
    scene.go.touch()  # the soak task ends at once here
    proc = reconciler_process("metrics", {"RECONCILER_API_LISTEN": f"127.0.0.1:{port}"})
    url = f"http://127.0.0.1:{port}/metrics"

    def served() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(served, 60, "the API to listen")
    if requests.get(url, timeout=5).status_code == 404:
        raise NotWired("GET /metrics answered 404")
    server = prometheus_factory.start(
        scrape_targets=[f"127.0.0.1:{port}"], job="reconciler", scrape_interval="1s"
    )
    server.wait_for('reconciler_leader{job="reconciler"} == 1', deadline=30)
    assert not server.query('reconciler_sequences_finished_total{stage="qa"} > 0')["result"]

    wait_for(lambda: "reconciler.upstream.accepted" in scene.types(), 60, "the upstream to be accepted")
    deploy(scene.repo, "2.0")
    wait_for(lambda: "sh.keptn.event.qa.delivery.finished" in scene.types(), 60, "the sequence to finish")

    finished = server.wait_for(
        'reconciler_sequences_finished_total{stage="qa",sequence="delivery",result="pass"}', 30
    )
    assert float(finished["result"][0]["value"][1]) == 1
    evaluations = server.wait_for('reconciler_evaluations_total{result="pass"}', 30)
    assert float(evaluations["result"][0]["value"][1]) == 1
    jobs = server.wait_for('reconciler_job_runs_total{result="pass"}', 30)
    assert float(jobs["result"][0]["value"][1]) == 2  # deploy and soak
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=GRACE + 10)
