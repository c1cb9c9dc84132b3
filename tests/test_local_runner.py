"""The local runner: job/config.yaml tasks as supervised processes on this host.

Real processes throughout: locust (as a subprocess, never imported) against a real
HTTP server on 127.0.0.1, shells that hang and spawn children, a supervisor that
outlives the runner that started it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.adapters.local_runner import LocalRunner, rewrite_keptn
from reconciler.adapters.runner import LaunchJournal
from reconciler.core.jobmatching import answering_action
from reconciler.core.jobspec import TaskSpec
from reconciler.executors.jobs import JobExecutor, lookup_config
from reconciler.formats.events import KeptnEvent
from reconciler.runtime.environment import Environment
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.conftest import REPO_ROOT
from tests.support.context import MemoryContext
from tests.support.events import now_text
from tests.support.launches import DiesBeforeRecording

# The tutorial's load test from example-upstream, with a locust.conf shortened for tests.
TUTORIAL_LOCUSTFILE = REPO_ROOT / "example-upstream" / "qa" / "helloservice" / "locust" / "basic.py"
LOCUST_CONF = "headless = true\nusers = 5\nspawn-rate = 5\nrun-time = 3s\n"
ANY_COMMAND = ["*"]  # these tests are about running processes, not the allow-list (test_job_security.py)


class Service:
    """A real HTTP service on 127.0.0.1 that counts the requests it answers."""

    def __init__(self) -> None:
        self.hits = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.hits += 1
                body = b"hello from helloservice\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def http_service() -> Iterator[Service]:
    service = Service()
    try:
        yield service
    finally:
        service.close()


def write_upstream(
    root: Path, actions: list[dict[str, Any]], files: dict[str, str] | None = None
) -> DirectoryFiles:
    service = root / "qa" / "helloservice"
    (service / "job").mkdir(parents=True)
    (service / "job" / "config.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "actions": actions}))
    for path, text in (files or {}).items():
        (service / path).parent.mkdir(parents=True, exist_ok=True)
        (service / path).write_text(text)
    (root / "main").mkdir()
    return DirectoryFiles(root)


def triggered(task: str, event_id: str = "7c1e2a9d-8a4b-4c55-9d1e-0f2a3b4c5d6e", **data: Any) -> KeptnEvent:
    return KeptnEvent(
        id=event_id,
        source="shipyard-controller",
        type=f"sh.keptn.event.{task}.triggered",
        shkeptncontext="3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10",
        gitcommitid="0123456789abcdef0123456789abcdef01234567",
        data={"project": "fulltour", "stage": "qa", "service": "helloservice", **data},
        time=now_text(),
    )


def make(
    tmp_path: Path, actions: list[dict[str, Any]], files: dict[str, str] | None = None
) -> tuple[JobExecutor, MemoryContext, LocalRunner]:
    settings = Settings(data_dir=tmp_path / "data", runner="local")
    runner = LocalRunner(settings.data_dir, poll_seconds=0.05, allowed_commands=ANY_COMMAND)
    ctx = MemoryContext(files=write_upstream(tmp_path / "upstream", actions, files), settings=settings)
    return JobExecutor(runner), ctx, runner


def task_action(name: str, event: str, tasks: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "events": [{"name": event}], "tasks": tasks, **extra}


def finished(ctx: MemoryContext) -> dict[str, Any]:
    assert ctx.types()[-1].endswith(".finished"), ctx.types()
    return ctx.recorded[-1].data


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.mark.timeout(120)
def test_locust_runs_the_tutorial_load_test_against_a_real_service(
    tmp_path: Path, http_service: Service
) -> None:
    locust = {
        "name": "Run locust",
        "image": "locustio/locust:2.8.6",
        "files": ["locust/basic.py", "locust/locust.conf"],
        "env": [{"name": "HOST", "value": "$.data.deployment.deploymentURIsLocal[0]", "valueFrom": "event"}],
        "cmd": ["locust"],
        "args": [
            "--config",
            "/keptn/locust/locust.conf",
            "-f",
            "/keptn/locust/basic.py",
            "--host",
            "$(HOST)",
            "--only-summary",
            "--csv",
            "/keptn/locust/result",
        ],
        "maxPollDuration": 90,
    }
    executor, ctx, _runner = make(
        tmp_path,
        [task_action("Run tests using locust", "sh.keptn.event.test.triggered", [locust])],
        {"locust/basic.py": TUTORIAL_LOCUSTFILE.read_text(), "locust/locust.conf": LOCUST_CONF},
    )
    event = triggered("test", deployment={"deploymentURIsLocal": [http_service.url]})
    assert executor.claims(event, ctx)
    executor.run(event, ctx, started=False)

    data = finished(ctx)
    assert (data["status"], data["result"]) == ("succeeded", "pass"), data["message"]
    message = data["message"]
    assert message.startswith(
        "Task 'Run locust' finished successfully!\n\nLogs:\nProcess locust of local job "
    )
    # locust's own output reached the log: its request table names the method it sent (its
    # wording around that is locust's, not ours, so no more than that)
    assert "GET" in message.split("Logs:", 1)[1]
    assert http_service.hits >= 1
    assert set(data["test"]) == {"start", "end", "locustStatsDir"}
    assert data["test"]["start"] <= data["test"]["end"]
    stats = ctx.settings.data_dir / data["test"]["locustStatsDir"] / "result_stats.csv"
    assert "Aggregated" in stats.read_text()


@pytest.mark.timeout(60)
def test_a_hanging_command_is_killed_with_its_children_at_max_poll_duration(tmp_path: Path) -> None:
    hang = {
        "name": "Hang",
        "image": "busybox:1.36",
        "cmd": ["sh", "-c"],
        "args": ["sleep 300 & echo $! > /keptn/child.pid; echo started; sleep 300"],
        "maxPollDuration": 1,
    }
    executor, ctx, runner = make(
        tmp_path, [task_action("Deploy", "sh.keptn.event.deployment.triggered", [hang])]
    )
    executor.run(triggered("deployment"), ctx, started=False)

    data = finished(ctx)
    job = runner.jobs_dir / sorted(p.name for p in runner.jobs_dir.iterdir() if p.is_dir())[0]
    assert data["message"].startswith(
        f"Error while creating job: polling for job {job.name} timing out after 1s: max poll count reached for job"
    )
    assert "started" in data["message"]
    assert data["reconciler"] == {"reason": "DeadlineExceeded"}  # the runner's reason, for machines
    child = int((job / "keptn" / "child.pid").read_text())
    supervisor = json.loads((job / "supervisor.json").read_text())
    assert not alive(child) and not alive(supervisor["pgid"])


@pytest.mark.timeout(60)
def test_a_failing_command_fails_the_action_and_later_tasks_do_not_run(tmp_path: Path) -> None:
    tasks = [
        {
            "name": "Render",
            "image": "alpine/helm:3.9.0",
            "cmd": ["sh", "-c"],
            "args": ["echo 'Error: chart requires kubeVersion' >&2; exit 3"],
        },
        {"name": "Never", "image": "alpine/helm:3.9.0", "cmd": ["touch", "/keptn/ran"]},
    ]
    executor, ctx, runner = make(
        tmp_path, [task_action("Deploy", "sh.keptn.event.deployment.triggered", tasks)]
    )
    executor.run(triggered("deployment", labels={"version": "v2"}), ctx, started=False)

    data = finished(ctx)
    assert (data["status"], data["result"]) == ("errored", "fail")
    assert data["labels"] == {"version": "v2"}
    assert "failed. Reason: Error, Message: the command exited with code 3" in data["message"]
    assert "chart requires kubeVersion" in data["message"]
    assert [line["task"] for line in runner.journal.launches()] == ["Render"]


@pytest.mark.timeout(60)
def test_env_placeholders_and_keptn_paths_resolve_like_in_a_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_API_TOKEN", "reconciler-own-secret")
    script = "\n".join(
        [
            'printf "image=%s\\n" "$IMAGE"',
            'printf "args=%s|%s|%s\\n" "$0" "$1" "$2"',
            'printf "event-file=%s\\n" "$(cat "$EVENT")"',
            'printf "chart=%s\\n" "$(cat ./charts/helloservice.tgz)"',
            'printf "pwd=%s\\n" "$(pwd)"',
            "env | sort",
        ]
    )
    task = {
        "name": "Inspect",
        "image": "alpine/helm:3.9.0",
        "files": ["charts"],
        "workingDir": "/keptn",
        "env": [
            {"name": "IMAGE", "value": "$.data.configurationChange.values.image", "valueFrom": "event"},
            {"name": "EVENT", "value": "$", "valueFrom": "event", "as": "file"},
            {"name": "CHART", "value": "/keptn/charts/$(KEPTN_SERVICE).tgz", "valueFrom": "string"},
        ],
        "cmd": ["sh", "-c", script],
        "args": ["$(KEPTN_PROJECT)-$(KEPTN_STAGE)", "$$(IMAGE)", "/keptn/charts/$(KEPTN_SERVICE).tgz"],
    }
    executor, ctx, runner = make(
        tmp_path,
        [task_action("Deploy", "sh.keptn.event.deployment.triggered", [task])],
        {"charts/helloservice.tgz": "chart-bytes"},
    )
    event = triggered(
        "deployment",
        configurationChange={"values": {"image": "ghcr.io/podtato-head/podtatoserver:v0.1.1;id"}},
    )
    executor.run(event, ctx, started=False)

    data = finished(ctx)
    message = data["message"]
    assert data["result"] == "pass", message
    staging = next(p for p in runner.jobs_dir.iterdir() if p.is_dir()) / "keptn"
    assert "image=ghcr.io/podtato-head/podtatoserver:v0.1.1;id\n" in message  # a value, never shell code
    assert f"args=fulltour-qa|$(IMAGE)|{staging}/charts/helloservice.tgz\n" in message
    assert '"id":"7c1e2a9d-8a4b-4c55-9d1e-0f2a3b4c5d6e"' in message
    assert "chart=chart-bytes\n" in message and f"pwd={staging}\n" in message
    assert f"CHART={staging}/charts/$(KEPTN_SERVICE).tgz" in message  # defined before KEPTN_SERVICE
    assert "KEPTN_PROJECT=fulltour" in message
    assert "reconciler-own-secret" not in message and "RECONCILER_API_TOKEN" not in message
    assert f"PATH={Path(sys.executable).parent}{os.pathsep}" in message  # `python` is the reconciler's
    variables = {line.split("=", 1)[0] for line in message.splitlines() if "=" in line and line[:1].isupper()}
    assert {"PATH", "HOME", "LANG", "IMAGE", "EVENT", "CHART", "KEPTN_SERVICE"} <= variables


@pytest.mark.timeout(60)
def test_secrets_come_from_the_data_directory_and_never_reach_the_ledger(tmp_path: Path) -> None:
    task = {
        "name": "Use secret",
        "image": "busybox:1.36",
        "cmd": ["sh", "-c"],
        "args": [
            'echo "token is $TOKEN"; echo "file is $(cat $USER_FILE_PATH)"; cat /keptn/secrets/files/USER'
        ],
        "env": [
            {"name": "registry", "valueFrom": "secret"},
            {"name": "files", "valueFrom": "secret", "as": "file"},
            {"name": "USER_FILE_PATH", "value": "/keptn/secrets/files/USER", "valueFrom": "string"},
        ],
    }
    executor, ctx, _runner = make(
        tmp_path, [task_action("Deploy", "sh.keptn.event.deployment.triggered", [task])]
    )
    executor.run(triggered("deployment"), ctx, started=False)
    assert finished(ctx)["message"].startswith("Error while creating job: secret 'registry' not found")

    for name, key, value in (("registry", "TOKEN", "tok-9f8e7d6c5b"), ("files", "USER", "deploy-bot-42")):
        (ctx.settings.data_dir / "secrets" / name).mkdir(parents=True, exist_ok=True)
        (ctx.settings.data_dir / "secrets" / name / key).write_text(value + "\n")
    executor.run(triggered("deployment", "8d2f3b0e-9b5c-4d66-8e2f-1a3b4c5d6e7f"), ctx, started=False)
    data = finished(ctx)
    assert data["result"] == "pass", data["message"]
    assert "token is ***" in data["message"] and "file is ***" in data["message"]
    assert "tok-9f8e7d6c5b" not in json.dumps([e.model_dump() for e in ctx.recorded])
    assert "deploy-bot-42" not in json.dumps([e.model_dump() for e in ctx.recorded])


def one_task_spec(
    tmp_path: Path, task: dict[str, Any]
) -> tuple[MemoryContext, LocalRunner, KeptnEvent, TaskSpec]:
    """A deployment task's spec as the executor builds it, for tests that launch it themselves."""
    executor, ctx, runner = make(
        tmp_path, [task_action("Deploy", "sh.keptn.event.deployment.triggered", [task])]
    )
    event = triggered("deployment")
    found = lookup_config(event, ctx)
    assert found.config is not None
    matched = answering_action(found.config, event)
    assert matched is not None
    [spec] = executor.specs(event, ctx, found, matched, runner)
    return ctx, runner, event, spec


@pytest.mark.timeout(60)
def test_a_restarted_runner_adopts_the_running_job_and_the_task_runs_once(tmp_path: Path) -> None:
    task = {
        "name": "Once",
        "image": "busybox:1.36",
        "cmd": ["sh", "-c"],
        "args": ["echo run >> ../runs.log; sleep 1; echo finished"],
    }
    ctx, runner, event, spec = one_task_spec(tmp_path, task)
    first = runner.launch(spec)  # then "the reconciler dies": nobody waits for this job

    again = LocalRunner(ctx.settings.data_dir, poll_seconds=0.05, allowed_commands=ANY_COMMAND)
    executor2 = JobExecutor(again)
    executor2.run(event, ctx, started=True)

    data = finished(ctx)
    assert data["result"] == "pass" and "finished" in data["message"]
    job_dir = runner.jobs_dir / first.name
    assert (job_dir / "runs.log").read_text() == "run\n"
    assert [line["job"] for line in LaunchJournal(ctx.settings.data_dir).launches()] == [first.name]
    assert again.launch(spec).adopted


@pytest.mark.timeout(60)
def test_a_job_whose_launcher_died_before_recording_it_is_recorded_once_by_its_adopter(
    tmp_path: Path,
) -> None:
    task = {"name": "Once", "image": "busybox:1.36", "cmd": ["sh", "-c"], "args": ["echo run >> ../runs.log"]}
    ctx, runner, event, spec = one_task_spec(tmp_path, task)
    dying = LocalRunner(
        ctx.settings.data_dir,
        poll_seconds=0.05,
        allowed_commands=ANY_COMMAND,
        journal=DiesBeforeRecording(ctx.settings.data_dir),
    )
    with pytest.raises(SystemExit):
        dying.launch(spec)

    again = LocalRunner(ctx.settings.data_dir, poll_seconds=0.05, allowed_commands=ANY_COMMAND)
    JobExecutor(again).run(event, ctx, started=True)
    assert finished(ctx)["result"] == "pass"
    assert (runner.jobs_dir / spec.job_name / "runs.log").read_text() == "run\n"
    assert again.launch(spec).adopted  # a second adoption adds no line
    assert [line["job"] for line in LaunchJournal(ctx.settings.data_dir).launches()] == [spec.job_name]


@pytest.mark.timeout(60)
def test_a_command_missing_on_this_host_fails_naming_it_and_the_image(tmp_path: Path) -> None:
    task = {
        "name": "Deploy",
        "image": "alpine/helm:3.9.0",
        "cmd": ["helm-that-is-not-installed"],
        "args": ["version"],
    }
    executor, ctx, runner = make(
        tmp_path, [task_action("Deploy", "sh.keptn.event.deployment.triggered", [task])]
    )
    executor.run(triggered("deployment"), ctx, started=False)
    assert finished(ctx)["message"] == (
        "Error while creating job: command 'helm-that-is-not-installed' of task 'Deploy' was not found on PATH; "
        "the local runner runs commands on this host and does not pull image alpine/helm:3.9.0"
    )
    assert runner.journal.launches() == []


def test_no_matching_action_is_explained_with_the_files_looked_at(tmp_path: Path) -> None:
    executor, ctx, _ = make(
        tmp_path,
        [
            task_action(
                "Notify",
                "sh.keptn.event.release.triggered",
                [{"name": "n", "image": "a:1", "cmd": ["true"]}],
                silent=True,
            )
        ],
    )
    event = triggered("release")
    assert not executor.claims(event, ctx)
    assert executor.explain_unclaimed(event, ctx) == (
        "no executor handles task 'release' (sh.keptn.event.release.triggered): it is not a built-in task and "
        "no action of qa:helloservice/job/config.yaml@0123456789ab matches it; only silent actions match (Notify)"
    )
    other = triggered("rollback")
    other.data["service"] = "otherservice"
    assert executor.explain_unclaimed(other, ctx) == (
        "no executor handles task 'rollback' (sh.keptn.event.rollback.triggered): it is not a built-in task and "
        "no job config exists (looked at qa:otherservice/job/config.yaml@0123456789ab, "
        "qa:job/config.yaml@0123456789ab, main:job/config.yaml)"
    )


def test_keptn_paths_are_rewritten_where_a_path_starts() -> None:
    staging = Path("/data/jobs/j/keptn")
    assert rewrite_keptn("/keptn/charts/x.tgz", staging) == "/data/jobs/j/keptn/charts/x.tgz"
    assert rewrite_keptn("--config=/keptn/a.conf", staging) == "--config=/data/jobs/j/keptn/a.conf"
    assert rewrite_keptn("/keptn", staging) == "/data/jobs/j/keptn"
    assert (
        rewrite_keptn("/keptnish/x /opt/keptn/x http://h/keptn/x", staging)
        == "/keptnish/x /opt/keptn/x http://h/keptn/x"
    )


def test_the_runner_is_local_without_a_cluster_and_kubernetes_with_a_kubeconfig(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    choice = Environment.detect(settings, {"HOME": str(tmp_path)}).runner
    assert choice.status() == {"runner": "local", "reason": "auto: no kubeconfig or in-cluster config found"}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    assert (
        Environment.detect(settings, {"HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}).runner.name
        == "kubernetes"
    )
    assert (
        Environment.detect(Settings(runner="local"), {"KUBECONFIG": str(kubeconfig)}).runner.name == "local"
    )


_RECONCILER = """
import sys
from pathlib import Path
from reconciler.adapters.local_runner import LocalRunner
from reconciler.executors.jobs import JobExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.context import MemoryContext

root, data, event_json = sys.argv[1:4]
settings = Settings(data_dir=Path(data), runner="local")
ctx = MemoryContext(files=DirectoryFiles(Path(root)), settings=settings)
JobExecutor(LocalRunner(settings.data_dir, allowed_commands=["*"])).run(KeptnEvent.model_validate_json(event_json), ctx, started=False)
"""


@pytest.mark.timeout(60)
def test_a_sigkilled_reconciler_leaves_the_task_running_and_the_next_one_adopts_it(tmp_path: Path) -> None:
    task = {
        "name": "Slow",
        "image": "busybox:1.36",
        "cmd": ["sh", "-c"],
        "args": ["echo run >> ../runs.log; sleep 2; echo done"],
    }
    executor, ctx, runner = make(
        tmp_path, [task_action("Deploy", "sh.keptn.event.deployment.triggered", [task])]
    )
    event = triggered("deployment")
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _RECONCILER,
            str(tmp_path / "upstream"),
            str(ctx.settings.data_dir),
            event.to_json(),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(runner.jobs_dir.glob("*/supervisor.json")):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=10)
        if first.stderr:
            first.stderr.close()
    [job_dir] = [p for p in runner.jobs_dir.iterdir() if p.is_dir()]
    assert not (job_dir / "result.json").exists()  # the task outlived the reconciler

    executor.run(event, ctx, started=True)
    data = finished(ctx)
    assert data["result"] == "pass" and "done" in data["message"], data["message"]
    assert (job_dir / "runs.log").read_text() == "run\n"
    assert len(runner.journal.launches()) == 1


@pytest.mark.timeout(60)
def test_files_and_config_are_read_at_the_events_pinned_commit(tmp_path: Path, upstream_repo: Any) -> None:
    from reconciler.upstream.files import GitFiles

    def config(command: str) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "v2",
                "actions": [
                    task_action(
                        "Deploy",
                        "sh.keptn.event.deployment.triggered",
                        [
                            {
                                "name": "Show",
                                "image": "busybox:1.36",
                                "files": ["charts"],
                                "cmd": ["sh", "-c", command],
                            }
                        ],
                    )
                ],
            }
        )

    upstream_repo.commit("main", {"shipyard.yaml": "apiVersion: spec.keptn.sh/0.2.2\n"})
    pinned = upstream_repo.commit(
        "qa",
        {
            "helloservice/job/config.yaml": config("echo pinned config; cat /keptn/charts/helloservice.tgz"),
            "helloservice/charts/helloservice.tgz": "chart v1",
        },
        base="main",
    )
    upstream_repo.commit(
        "qa",
        {
            "helloservice/job/config.yaml": config("echo newer config; cat /keptn/charts/helloservice.tgz"),
            "helloservice/charts/helloservice.tgz": "chart v2",
        },
    )
    settings = Settings(data_dir=tmp_path / "data", runner="local")
    ctx = MemoryContext(files=GitFiles(upstream_repo.path), settings=settings)
    event = triggered("deployment").model_copy(update={"gitcommitid": pinned})
    JobExecutor(LocalRunner(settings.data_dir, poll_seconds=0.05, allowed_commands=ANY_COMMAND)).run(
        event, ctx, started=False
    )

    message = finished(ctx)["message"]
    assert "pinned config\nchart v1" in message and "v2" not in message


@pytest.mark.timeout(60)
def test_a_supervisor_that_cannot_start_fails_the_task_instead_of_hanging(tmp_path: Path) -> None:
    task = {"name": "Deploy", "image": "busybox:1.36", "cmd": ["true"], "maxPollDuration": 600}
    interpreter = tmp_path / "bad-python"
    interpreter.write_text("#!/bin/sh\necho 'cannot import reconciler' >&2\nexit 1\n")
    interpreter.chmod(0o755)
    _, ctx, _ = make(tmp_path, [task_action("Deploy", "sh.keptn.event.deployment.triggered", [task])])
    JobExecutor(
        LocalRunner(
            ctx.settings.data_dir, python=str(interpreter), poll_seconds=0.05, allowed_commands=ANY_COMMAND
        )
    ).run(triggered("deployment"), ctx, started=False)
    message = finished(ctx)["message"]
    assert "Reason: Lost" in message and "cannot import reconciler" in message


def _supervise(job: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the supervisor as the runner does (isolated, without site) on a hand-made job directory."""
    job.mkdir()
    (job / "spec.json").write_text(json.dumps(spec))
    script = REPO_ROOT / "reconciler" / "adapters" / "local_supervisor.py"
    done = subprocess.run([sys.executable, "-I", "-S", str(script), str(job)], timeout=30, check=False)
    assert done.returncode == 0
    return dict(json.loads((job / "result.json").read_text()))


def test_a_job_staged_without_the_spec_twin_still_runs_from_spec_json(tmp_path: Path) -> None:
    # e.g. staged by a reconciler on another Python version, whose marshal bytes this one cannot read
    job = tmp_path / "job"
    spec = {
        "argv": ["/bin/sh", "-c", "echo ran in $PWD; exit 3"],
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": str(tmp_path),
        "created": time.time(),
        "deadline": time.time() + 30,
    }
    result = _supervise(job, spec)
    assert (result["reason"], result["exit_code"]) == ("Failed", 3)
    assert (job / "output.log").read_text() == f"ran in {tmp_path}\n"
    supervisor = json.loads((job / "supervisor.json").read_text())
    assert supervisor["pgid"] != supervisor["pid"] and not alive(supervisor["pgid"])


def test_a_command_that_cannot_start_is_reported_in_valid_json_whatever_its_name(tmp_path: Path) -> None:
    program = str(tmp_path / 'no "such" dïr' / "cmd\\x")
    spec = {
        "argv": [program],
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": str(tmp_path),
        "created": time.time(),
        "deadline": time.time() + 30,
    }
    result = _supervise(tmp_path / "job", spec)
    assert result["reason"] == "NeverRan" and result["exit_code"] is None
    assert program in result["message"]
