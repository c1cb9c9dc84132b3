"""localhelm: the helm stand-in really runs, scales, replaces and removes local replicas."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from reconciler.adapters.local_runner import LocalRunner
from reconciler.core.scoring import SLIAnswer, SLIValue, evaluate
from reconciler.core.sliquery import QueryContext, substitute
from reconciler.demo import localhelm
from reconciler.executors.jobs import JobExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.jobconfig import load_jobconfig
from reconciler.formats.sli import load_sli
from reconciler.formats.slo import load_slo
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.context import MemoryContext
from tests.support.events import now_text
from tests.support.localhelm import processes_of, run_localhelm
from tests.support.prometheus import PrometheusFactory

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT / "example-upstream"
CHART = UPSTREAM / "qa" / "helloservice" / "charts" / "helloservice.tgz"
GOOD = "ghcr.io/podtato-head/podtatoserver:v0.1.1"
SLOW = "ghcr.io/podtato-head/podtatoserver:v0.1.2"
NS = "fulltour-qa"


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"localhelm failed ({result.returncode}): {result.stderr}{result.stdout}"
    return result.stdout


def status(state: Path, namespace: str = NS) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ok(run_localhelm(state, "status", "-n", namespace, "helloservice")))
    return loaded


def targets(state: Path, namespace: str = NS) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(
        (state / "file_sd" / f"helloservice-{namespace}.json").read_text()
    )
    return loaded


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.status, answer.read().decode()


def served_requests(port: int) -> float:
    _, text = get(f"http://127.0.0.1:{port}/metrics")
    found = re.search(r'^http_requests_total\{status="success"\} (\S+)$', text, re.M)
    assert found, text
    return float(found.group(1))


def upgrade(state: Path, *flags: str, namespace: str = NS) -> subprocess.CompletedProcess[str]:
    """`helm upgrade -n NAMESPACE helloservice CHART FLAGS...` through localhelm."""
    return run_localhelm(state, "upgrade", "-n", namespace, "helloservice", str(CHART), *flags)


def install(state: Path, *extra: str) -> None:
    ok(upgrade(state, "--create-namespace", "--install", "--set", f"image={GOOD}", "--wait", *extra))


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def test_install_scale_and_uninstall_follow_the_tutorials_helm_calls(localhelm_dir: Path) -> None:
    install(localhelm_dir)
    first = status(localhelm_dir)
    assert [r["image"] for r in first["replicas"]] == [GOOD]
    groups = targets(localhelm_dir)
    assert [g["labels"]["job"] for g in groups] == ["helloservice-fulltour-qa"]
    assert groups[0]["targets"] == [f"127.0.0.1:{first['replicas'][0]['port']}"]
    code, body = get(first["service_url"] + "/")
    assert code == 200 and "v0.1.1" in body

    # the remediation action's call: same image, two replicas
    ok(upgrade(localhelm_dir, "--reuse-values", "--set", "replicaCount=2", "--wait"))
    second = status(localhelm_dir)
    assert [r["image"] for r in second["replicas"]] == [GOOD, GOOD]
    assert second["replicas"][0]["pid"] == first["replicas"][0]["pid"], "scaling up kept the running replica"
    assert second["service_url"] == first["service_url"]
    ports = [r["port"] for r in second["replicas"]]
    (group,) = targets(localhelm_dir)
    assert sorted(group["targets"]) == sorted(f"127.0.0.1:{p}" for p in ports)
    assert group["labels"] == {"job": "helloservice-fulltour-qa", "namespace": NS, "release": "helloservice"}

    # the Service address spreads requests over both replicas
    before = [served_requests(p) for p in ports]
    for _ in range(6):
        assert get(second["service_url"] + "/")[0] == 200
    after = [served_requests(p) for p in ports]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)

    pids = [r["pid"] for r in second["replicas"]]
    service_port = urllib.parse.urlsplit(second["service_url"]).port
    ok(run_localhelm(localhelm_dir, "uninstall", "-n", NS, "helloservice"))
    assert gone(pids)
    assert not processes_of(localhelm_dir)
    assert not (localhelm_dir / "file_sd" / "helloservice-fulltour-qa.json").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", service_port), timeout=1).close()


def test_image_change_replaces_replicas_and_rollback_returns_to_the_previous_revision(
    localhelm_dir: Path,
) -> None:
    install(localhelm_dir)
    old_pid = status(localhelm_dir)["replicas"][0]["pid"]
    # a delivery's call, without --reuse-values: chart defaults plus the new image
    ok(upgrade(localhelm_dir, "--create-namespace", "--install", "--set", f"image={SLOW}", "--wait"))
    slow = status(localhelm_dir)
    assert [r["image"] for r in slow["replicas"]] == [SLOW]
    assert gone([old_pid])
    assert "v0.1.2" in get(slow["service_url"] + "/")[1]
    assert targets(localhelm_dir)[0]["targets"] == [f"127.0.0.1:{slow['replicas'][0]['port']}"]

    ok(run_localhelm(localhelm_dir, "rollback", "-n", NS, "helloservice", "--wait"))
    back = status(localhelm_dir)
    assert back["revision"] == 3
    assert [r["image"] for r in back["replicas"]] == [GOOD]
    assert "v0.1.1" in get(back["service_url"] + "/")[1]
    history = json.loads(ok(run_localhelm(localhelm_dir, "history", "-n", NS, "helloservice")))
    assert [h["description"] for h in history] == ["Install complete", "Upgrade complete", "Rollback to 1"]


def test_scaling_without_reuse_values_falls_back_to_the_chart_image(localhelm_dir: Path) -> None:
    """Why the example's scale action passes --reuse-values: Helm semantics, reproduced."""
    ok(upgrade(localhelm_dir, "--create-namespace", "--install", "--set", f"image={SLOW}", "--wait"))
    ok(upgrade(localhelm_dir, "--set", "replicaCount=2", "--wait"))
    assert [r["image"] for r in status(localhelm_dir)["replicas"]] == [GOOD, GOOD]


def test_record_mode_only_records_the_argv(localhelm_dir: Path) -> None:
    argv = [
        "upgrade",
        "--create-namespace",
        "--install",
        "-n",
        NS,
        "helloservice",
        "/keptn/charts/helloservice.tgz",
        "--set",
        f"image={GOOD}",
        "--wait",
    ]
    result = run_localhelm(localhelm_dir, *argv, mode="record")
    ok(result)
    lines = [json.loads(line) for line in (localhelm_dir / "argv.jsonl").read_text().splitlines()]
    assert [entry["argv"] for entry in lines] == [argv]
    assert not (localhelm_dir / "releases").exists()
    assert not processes_of(localhelm_dir)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upgrade", "-n", NS, "helloservice", str(CHART)], '"helloservice" has no deployed releases'),
        (
            ["upgrade", "--install", "-n", NS, "helloservice", str(CHART)],
            'namespaces "fulltour-qa" not found',
        ),
        (
            ["upgrade", "--install", "--create-namespace", "-n", NS, "helloservice", "missing.tgz"],
            "path 'missing.tgz' not found",
        ),
        (
            [
                "upgrade",
                "--install",
                "--create-namespace",
                "-n",
                NS,
                "helloservice",
                str(CHART),
                "--set",
                "image",
            ],
            "has no value",
        ),
        (
            [
                "upgrade",
                "--install",
                "--create-namespace",
                "-n",
                NS,
                "helloservice",
                str(CHART),
                "--set",
                "replicaCount=-1",
            ],
            "not a non-negative integer",
        ),
        (["rollback", "-n", NS, "helloservice"], "not found"),
    ],
)
def test_mistakes_fail_with_helm_like_messages(localhelm_dir: Path, args: list[str], message: str) -> None:
    result = run_localhelm(localhelm_dir, *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert not processes_of(localhelm_dir)


def test_a_taken_service_port_fails_the_install_and_leaves_it_cleanable(localhelm_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = upgrade(
            localhelm_dir, "--install", "--create-namespace", "--local-service-port", str(port), "--wait"
        )
    assert result.returncode == 1
    # which port, and who holds it: this test's own process
    assert (
        f"port {port} on 127.0.0.1 is taken by pid {os.getpid()} ({psutil.Process().name()})" in result.stderr
    )
    assert localhelm.cleanup(localhelm_dir) == 1  # the replica that did start
    assert not processes_of(localhelm_dir)


def test_cleanup_stops_releases_and_processes_whose_state_was_lost(localhelm_dir: Path) -> None:
    install(localhelm_dir)
    ok(
        upgrade(
            localhelm_dir,
            "--create-namespace",
            "--install",
            "--set",
            "replicaCount=2",
            "--wait",
            namespace="fulltour-production",
        )
    )
    assert len(processes_of(localhelm_dir)) == 2 + 3  # replicas plus one Service proxy per release
    (localhelm_dir / "releases" / NS / "helloservice.json").unlink()  # as if a command crashed mid-way
    ok(run_localhelm(localhelm_dir, "cleanup"))
    assert not processes_of(localhelm_dir)
    assert not list((localhelm_dir / "releases").glob("*/*.json"))


def test_state_directory_is_found_above_a_job_working_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    job_dir = data_dir / "jobs" / "job-1" / "keptn"
    job_dir.mkdir(parents=True)
    assert localhelm.state_dir_from({}, job_dir) is None
    (data_dir / "localhelm").mkdir()
    assert localhelm.state_dir_from({}, job_dir) == data_dir / "localhelm"
    assert localhelm.state_dir_from({localhelm.ENV_DIR: "/elsewhere"}, job_dir) == Path("/elsewhere")


# --- the local profile, end to end with real Prometheus and locust ----------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def prometheus(localhelm_dir: Path, prometheus_factory: PrometheusFactory) -> str:
    """A real Prometheus scraping localhelm's file_sd targets every second (the demo's config)."""
    scrape = localhelm.prometheus_scrape_config(localhelm_dir, scrape_interval="1s")
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]}
    return prometheus_factory.start(config=yaml.safe_dump(config)).url


def instant(prometheus: str, query: str, at: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    _, body = get(f"{prometheus}/api/v1/query?{params}")
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def load(url: str, seconds: float) -> int:
    """Four users requesting the main page for `seconds`; returns how many requests were answered."""
    deadline = time.monotonic() + seconds

    def user() -> int:
        done = 0
        while time.monotonic() < deadline:
            assert get(url + "/")[0] == 200
            done += 1
            time.sleep(0.1)
        return done

    with ThreadPoolExecutor(4) as pool:
        return sum(f.result() for f in [pool.submit(user) for _ in range(4)])


def gate(prometheus: str, stage: str, start: float, end: float) -> Any:
    """Evaluate the local profile's SLIs and SLO the way the reconciler's quality gate does."""
    local = UPSTREAM / "_local" / stage / "helloservice"
    queries = load_sli((local / "prometheus" / "sli.yaml").read_bytes()).indicators
    slo = load_slo((local / "slo.yaml").read_bytes())
    ctx = QueryContext(
        project="fulltour",
        stage=stage,
        service="helloservice",
        start=datetime.fromtimestamp(start, UTC),
        end=datetime.fromtimestamp(end, UTC),
    )
    values = []
    for objective in slo.objectives if slo else []:
        result = instant(prometheus, substitute(queries[objective.sli], ctx), end)
        assert len(result) == 1, f"{objective.sli}: expected exactly one sample, got {result}"
        values.append(SLIValue(metric=objective.sli, value=float(result[0]["value"][1]), success=True))
    return evaluate(slo, SLIAnswer(indicator_values=values))


def wait_until(prometheus: str, query: str, expected: float, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        result = instant(prometheus, query, time.time())
        if result and float(result[0]["value"][1]) == expected:
            return
        assert time.monotonic() < deadline, f"{query} did not reach {expected} within {seconds} s: {result}"
        time.sleep(0.25)


JOB = 'job="helloservice-fulltour-qa"'


def scraped(version: str) -> str:
    """Main-page requests Prometheus has seen from the replicas serving `version`."""
    return (
        f'sum(http_server_request_duration_seconds_count{{{JOB},route="/"}} '
        f'* on(instance) group_left helloservice_build_info{{{JOB},version="{version}"}})'
    )


def test_local_profile_gate_passes_the_good_build_and_fails_the_slow_one(
    localhelm_dir: Path, prometheus: str
) -> None:
    service = free_port()
    install(localhelm_dir, "--set", "replicaCount=2", "--local-service-port", str(service))
    url = f"http://127.0.0.1:{service}"
    wait_until(prometheus, f'count(helloservice_build_info{{{JOB},version="v0.1.1"}})', 2)
    start = time.time()
    wait_until(prometheus, scraped("v0.1.1"), load(url, 2))
    good = gate(prometheus, "qa", start, time.time())
    assert (good.result, good.score) == ("pass", 100.0)

    ok(upgrade(localhelm_dir, "--reuse-values", "--set", f"image={SLOW}", "--wait"))
    wait_until(prometheus, f'count(helloservice_build_info{{{JOB},version="v0.1.2"}})', 2)
    start = time.time()
    wait_until(prometheus, scraped("v0.1.2"), load(url, 2))
    slow = gate(prometheus, "qa", start, time.time())
    # 75 % would be a warning, but response time is a key objective in the local profile
    assert (slow.result, slow.score) == ("fail", 75.0)


def test_local_job_config_deploys_and_load_tests_with_its_own_arguments(
    localhelm_dir: Path, tmp_path: Path
) -> None:
    """The local profile's je-deployment and je-test tasks, run as the local runner would."""
    config = load_jobconfig(
        (UPSTREAM / "_local" / "qa" / "helloservice" / "job" / "config.yaml").read_bytes()
    )
    deploy, test = (config.actions[0].tasks[0], config.actions[1].tasks[0])
    staging = tmp_path / "keptn"  # what the runner stages for /keptn
    (staging / "charts").mkdir(parents=True)
    shutil.copy(UPSTREAM / "qa" / "helloservice" / "charts" / "helloservice.tgz", staging / "charts")
    (staging / "locust").mkdir()
    for name in ("basic.py",):
        shutil.copy(UPSTREAM / "qa" / "helloservice" / "locust" / name, staging / "locust")
    shutil.copy(UPSTREAM / "_local" / "qa" / "helloservice" / "locust" / "locust.conf", staging / "locust")
    port = free_port()  # not the profile's fixed port: other test runs may hold it
    env = {"KEPTN_PROJECT": "fulltour", "KEPTN_STAGE": "qa", "KEPTN_SERVICE": "helloservice", "IMAGE": GOOD}

    def expand(word: str) -> str:
        word = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], word).replace("/keptn", str(staging))
        return word.replace("18091", str(port))

    deploy_args = [expand(a) for a in deploy.args]
    assert deploy.cmd == ["python", "-m", "reconciler.demo.localhelm"]
    ok(run_localhelm(localhelm_dir, *deploy_args, cwd=staging))
    assert status(localhelm_dir)["service_url"] == f"http://127.0.0.1:{port}"

    locust_args = [expand(a) for a in test.args]
    assert test.cmd == ["locust"]
    run = subprocess.run(
        [sys.executable, "-m", "locust", *locust_args, "--run-time", "3s", "--csv", str(tmp_path / "result")],
        cwd=staging,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = (tmp_path / "result_stats.csv").read_text().splitlines()
    header = rows[0].split(",")
    aggregated = next(r.split(",") for r in rows[1:] if ",Aggregated," in r)
    assert int(aggregated[header.index("Request Count")]) > 0
    assert int(aggregated[header.index("Failure Count")]) == 0


# --- the local profile through the project's own job executor and local runner ------------------


def merged_local_upstream(root: Path, port: int) -> Path:
    """The branches with `_local/` laid over them; the fixed Service port swapped for a free one
    and the load test shortened, so the test neither collides with a running demo nor waits 30 s."""
    for branch in ("main", "qa", "production"):
        shutil.copytree(UPSTREAM / branch, root / branch)
        shutil.copytree(UPSTREAM / "_local" / branch, root / branch, dirs_exist_ok=True)
    config = root / "production" / "helloservice" / "job" / "config.yaml"
    config.write_text(config.read_text().replace("18092", str(port)))
    conf = root / "production" / "helloservice" / "locust" / "locust.conf"
    conf.write_text(conf.read_text().replace("run-time = 30s", "run-time = 2s"))
    return root


def production_event(task: str, event_id: str, **data: Any) -> KeptnEvent:
    return KeptnEvent(
        id=event_id,
        source="shipyard-controller",
        type=f"sh.keptn.event.{task}.triggered",
        shkeptncontext="3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10",
        data={"project": "fulltour", "stage": "production", "service": "helloservice", **data},
        time=now_text(),
    )


@pytest.mark.timeout(180)
def test_local_profile_deploys_load_tests_and_scales_through_the_local_runner(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    state = data_dir / "localhelm"  # found by localhelm from the job directories below data_dir
    state.mkdir(parents=True)
    settings = Settings(data_dir=data_dir, runner="local")
    # The runner passes PATH through; `python` in the profile must be this interpreter.
    environ = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    runner = LocalRunner(data_dir, poll_seconds=0.05, environ=environ)
    ctx = MemoryContext(
        files=DirectoryFiles(merged_local_upstream(tmp_path / "upstream", port)), settings=settings
    )
    executor = JobExecutor(runner)
    try:
        deploy = production_event(
            "je-deployment",
            "11111111-1111-4111-8111-111111111111",
            configurationChange={"values": {"image": GOOD}},
        )
        executor.run(deploy, ctx, started=False)
        answer = ctx.recorded[-1].data
        assert (answer["status"], answer["result"]) == ("succeeded", "pass"), answer["message"]
        assert status(state, "fulltour-production")["service_url"] == f"http://127.0.0.1:{port}"
        assert "v0.1.1" in get(f"http://127.0.0.1:{port}/")[1]

        before = served_requests(status(state, "fulltour-production")["replicas"][0]["port"])
        executor.run(production_event("je-test", "22222222-2222-4222-8222-222222222222"), ctx, started=False)
        answer = ctx.recorded[-1].data
        assert (answer["status"], answer["result"]) == ("succeeded", "pass"), answer["message"]
        assert served_requests(status(state, "fulltour-production")["replicas"][0]["port"]) > before

        scale = production_event(
            "action",
            "33333333-3333-4333-8333-333333333333",
            action={"name": "Scale up", "action": "scale", "value": "2"},
        )
        executor.run(scale, ctx, started=False)
        answer = ctx.recorded[-1].data
        assert (answer["status"], answer["result"]) == ("succeeded", "pass"), answer["message"]
        replicas = status(state, "fulltour-production")["replicas"]
        assert [r["image"] for r in replicas] == [GOOD, GOOD]
        assert len(targets(state, "fulltour-production")[0]["targets"]) == 2
    finally:
        localhelm.cleanup(state)
    assert not processes_of(state)
