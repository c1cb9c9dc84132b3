"""Whoever can push a stage branch or send an event must not own the host or read secrets.

Found by attacking `reconciler run --runner local` (issue 20): an event value
`$(DB_PASSWORD)` reached a job as the Secret's value (both runners expand `$(VAR)`
in env values, as the kubelet does); a job config could run any command as the
reconciler's user, read its token from `/proc/<pid>/environ` and write the ledger.
Each test here is one of those findings, with real processes (and the Kubernetes
API double for Jobs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pygit2
import pytest
import structlog
import yaml
from click.testing import CliRunner

from reconciler.adapters.kube_runner import KubeRunner
from reconciler.adapters.local_runner import LocalRunner, job_user_notes
from reconciler.adapters.runner import LaunchJournal
from reconciler.app import App
from reconciler.cli import cli
from reconciler.core.jobspec import expand, job_name
from reconciler.core.localcommands import DEFAULT_LOCAL_COMMANDS
from reconciler.core.validation import validate_served as validate
from reconciler.demo.scenario import build_source
from reconciler.executors.jobs import JobExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.runtime.environment import Environment, local_runner
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.conftest import REPO_ROOT
from tests.support.context import MemoryContext
from tests.support.events import now_text
from tests.support.gitserver import UpstreamRepo
from tests.support.kube import KubeDouble

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to the job user needs root")

SECRET_VALUE = "hunter2-db-password"
NS = "keptn-jobs"


def upstream(
    root: Path, tasks: list[dict[str, Any]], event: str = "sh.keptn.event.deployment.triggered"
) -> Path:
    service = root / "qa" / "helloservice"
    (service / "job").mkdir(parents=True)
    config = {
        "apiVersion": "v2",
        "actions": [{"name": "Deploy", "events": [{"name": event}], "tasks": tasks}],
    }
    (service / "job" / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "main").mkdir()
    return service / "job" / "config.yaml"


def triggered(image: str, event_id: str = "7c1e2a9d-8a4b-4c55-9d1e-0f2a3b4c5d6e", **data: Any) -> KeptnEvent:
    return KeptnEvent(
        id=event_id,
        source="shipyard-controller",
        type="sh.keptn.event.deployment.triggered",
        shkeptncontext="3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10",
        gitcommitid="0123456789abcdef0123456789abcdef01234567",
        data={
            "project": "fulltour",
            "stage": "qa",
            "service": "helloservice",
            "configurationChange": {"values": {"image": image}},
            "labels": {"note": image},
            **data,
        },
        time=now_text(),
    )


def secret_task(cmd: list[str], args: list[str]) -> dict[str, Any]:
    """A task with a Secret-backed env (DB_PASSWORD) listed before an event value (IMAGE)."""
    return {
        "name": "Deploy",
        "image": "alpine/helm:3.9.0",
        "env": [
            {"name": "db", "valueFrom": "secret"},
            {"name": "IMAGE", "value": "$.data.configurationChange.values.image", "valueFrom": "event"},
        ],
        "cmd": cmd,
        "args": args,
    }


def kubelet_env(container: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: in order, each value `$(VAR)`-expanded
    against the variables before it (Secret references resolved)."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            env[entry["name"]] = expand(entry["value"], env)
    return env


# --- $(VAR) in values that come from the event -------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("image", ["$(DB_PASSWORD)", "$$(DB_PASSWORD)", "x$(DB_PASSWORD)$"])
def test_a_secret_named_reference_in_an_event_value_reaches_a_local_job_as_a_literal(
    tmp_path: Path, image: str
) -> None:
    config = upstream(
        tmp_path / "upstream",
        [
            secret_task(
                ["sh", "-c", 'printf "arg=%s\\nenv=%s\\nlabel=%s\\n" "$0" "$IMAGE" "$LABELS_NOTE"'],
                ["image=$(IMAGE)"],
            )
        ],
    )
    settings = Settings(data_dir=tmp_path / "data", runner="local")
    (settings.data_dir / "secrets" / "db").mkdir(parents=True)
    (settings.data_dir / "secrets" / "db" / "DB_PASSWORD").write_text(SECRET_VALUE)
    runner = LocalRunner(settings.data_dir, poll_seconds=0.05, allowed_commands=["sh"])
    ctx = MemoryContext(files=DirectoryFiles(config.parents[3]), settings=settings)

    JobExecutor(runner).run(triggered(image), ctx, started=False)

    assert ctx.recorded[-1].data["result"] == "pass", ctx.recorded[-1].data["message"]
    [job] = [p for p in runner.jobs_dir.iterdir() if p.is_dir()]
    output = (job / "output.log").read_text()
    assert output.splitlines() == [f"arg=image={image}", f"env={image}", f"label={image}"]
    record = json.loads((job / "spec.json").read_text())
    assert record["argv"][-1] == f"image={image}"
    assert SECRET_VALUE not in output and SECRET_VALUE not in json.dumps(record["argv"])


@pytest.mark.parametrize("image", ["$(DB_PASSWORD)", "$$(DB_PASSWORD)", "x$(DB_PASSWORD)$"])
def test_job_render_shows_the_escaped_event_value_the_kubelet_reads_as_a_literal(
    tmp_path: Path, image: str
) -> None:
    config = upstream(tmp_path / "upstream", [secret_task(["helm"], ["upgrade", "--set", "image=$(IMAGE)"])])
    event_file = tmp_path / "event.json"
    event_file.write_text(triggered(image).to_json())

    result = CliRunner().invoke(
        cli,
        [
            "job",
            "render",
            "--config",
            str(config),
            "--event",
            str(event_file),
            "--secret-keys",
            "db=DB_PASSWORD",
        ],
    )

    assert result.exit_code == 0, result.output
    [task] = json.loads(result.output)["actions"][0]["tasks"]
    [container] = task["job"]["spec"]["template"]["spec"]["containers"]
    values = {e["name"]: e.get("value") for e in container["env"]}
    assert values["IMAGE"] == image.replace("$", "$$")
    assert values["LABELS_NOTE"] == image.replace("$", "$$")
    env = kubelet_env(container, {("db", "DB_PASSWORD"): SECRET_VALUE})
    assert env["IMAGE"] == image and env["LABELS_NOTE"] == image
    assert [expand(a, env) for a in container["args"]][-1] == f"image={image}"
    assert task["expanded"]["args"][-1] == f"image={image}"  # render's own preview agrees


@pytest.mark.timeout(60)
def test_a_secret_named_reference_in_an_event_value_reaches_a_kubernetes_job_as_a_literal(
    kube: KubeDouble, tmp_path: Path
) -> None:
    config = upstream(tmp_path / "upstream", [secret_task(["helm"], ["upgrade", "--set", "image=$(IMAGE)"])])
    kube.core.create_namespaced_secret(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": NS},
            "data": {"DB_PASSWORD": "aHVudGVyMi1kYi1wYXNzd29yZA=="},
        },
    )
    settings = Settings(data_dir=tmp_path / "data", job_namespace=NS)
    runner = KubeRunner(
        kube.api_client(), journal=LaunchJournal(settings.data_dir), wake_seconds=0.2, grace_seconds=0.5
    )
    ctx = MemoryContext(files=DirectoryFiles(config.parents[3]), settings=settings)
    kube.job_controller(lambda job: kube.succeed(job, logs="deployed\n"))

    JobExecutor(runner).run(triggered("$(DB_PASSWORD)"), ctx, started=False)

    assert ctx.recorded[-1].data["result"] == "pass", ctx.recorded[-1].data["message"]
    [job] = kube.created("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = kubelet_env(container, {("db", "DB_PASSWORD"): SECRET_VALUE})
    assert env["IMAGE"] == "$(DB_PASSWORD)"
    assert [expand(a, env) for a in container["args"]] == ["upgrade", "--set", "image=$(DB_PASSWORD)"]
    assert env["KEPTN_SERVICE"] == "helloservice"


@pytest.mark.timeout(60)
def test_references_the_job_config_writes_are_still_expanded_like_in_a_pod(tmp_path: Path) -> None:
    """Only event values are literal: `$(VAR)` in the config's own strings works as in Kubernetes."""
    task = secret_task(["sh", "-c", 'printf "%s|%s\\n" "$0" "$CONN"'], ["$(KEPTN_PROJECT)-$(KEPTN_STAGE)"])
    task["env"].append({"name": "CONN", "value": "db://app:$(DB_PASSWORD)@db", "valueFrom": "string"})
    config = upstream(tmp_path / "upstream", [task])
    settings = Settings(data_dir=tmp_path / "data", runner="local")
    (settings.data_dir / "secrets" / "db").mkdir(parents=True)
    (settings.data_dir / "secrets" / "db" / "DB_PASSWORD").write_text(SECRET_VALUE)
    runner = LocalRunner(settings.data_dir, poll_seconds=0.05, allowed_commands=["sh"])
    ctx = MemoryContext(files=DirectoryFiles(config.parents[3]), settings=settings)

    JobExecutor(runner).run(triggered("img:1"), ctx, started=False)

    [job] = [p for p in runner.jobs_dir.iterdir() if p.is_dir()]
    assert (job / "output.log").read_text() == f"fulltour-qa|db://app:{SECRET_VALUE}@db\n"


# --- host code execution through the local runner --------------------------------------------------

HOSTILE = ["sh", "-c", "cat /proc/$PPID/environ; echo pwned > /tmp/reconciler-pwned"]


def local_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings as an operator leaves them (only the data directory and the runner chosen)."""
    options: dict[str, Any] = {
        "data_dir": data_dir,
        "runner": "local",
        "local_commands": list(DEFAULT_LOCAL_COMMANDS),
        "local_job_user": "nobody",
        **overrides,
    }
    return Settings(**options)


@pytest.mark.timeout(60)
def test_a_command_off_the_default_allow_list_is_refused_at_launch(tmp_path: Path) -> None:
    config = upstream(
        tmp_path / "upstream",
        [{"name": "Deploy", "image": "alpine:3", "cmd": HOSTILE[:2], "args": HOSTILE[2:]}],
    )
    settings = local_settings(tmp_path / "data")
    runner = local_runner(settings)
    ctx = MemoryContext(files=DirectoryFiles(config.parents[3]), settings=settings)

    JobExecutor(runner).run(triggered("img:1"), ctx, started=False)

    finished = ctx.recorded[-1]
    assert (finished.type, finished.data["result"]) == ("sh.keptn.event.deployment.finished", "fail")
    assert finished.data["message"].startswith(
        "Error while creating job: command \"sh -c 'cat /proc/$PPID/environ; echo pwned > /tmp/reconciler-pwned'\" "
        "of task 'Deploy' is not on the local runner's allow-list (local_commands: "
        "python -m reconciler.demo.localhelm; locust)"
    )
    assert runner.journal.launches() == []
    assert not runner.jobs_dir.exists() or not [p for p in runner.jobs_dir.iterdir() if p.is_dir()]


def notes_of(settings: Settings, euid: int | None = None) -> list[str]:
    return job_user_notes(settings.local_job_user, settings.data_dir, euid=euid)


def test_the_demos_commands_are_what_the_default_allow_list_allows(tmp_path: Path) -> None:
    merged = build_source(REPO_ROOT / "example-upstream", tmp_path / "local")
    result = validate(DirectoryFiles(merged), "main", None, list(DEFAULT_LOCAL_COMMANDS))
    assert result.ok, "\n".join(str(p) for p in result.errors)


def test_validate_names_each_task_a_local_runner_refuses(tmp_path: Path) -> None:
    task = {
        "name": "Deploy",
        "image": "alpine:3",
        "cmd": HOSTILE[:2],
        "args": HOSTILE[2:],
        "env": [
            {"name": "LD_PRELOAD", "value": "/keptn/evil.so", "valueFrom": "string"},
            {"name": "PYTHONUNBUFFERED", "value": "1", "valueFrom": "string"},
        ],
    }
    config = upstream(
        tmp_path / "upstream", [task, {"name": "Test", "image": "locustio/locust:2.8.6", "cmd": ["locust"]}]
    )
    (config.parents[3] / "main" / "shipyard.yaml").write_text(
        "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata: {name: s}\nspec:\n  stages:\n"
        "    - name: qa\n      sequences:\n        - name: delivery\n          tasks:\n            - name: deployment\n"
    )
    root = str(config.parents[3])

    local = CliRunner().invoke(cli, ["validate", "--runner", "local", root])
    assert local.exit_code == 1, local.output
    lines = local.output.splitlines()
    text = config.read_text().splitlines()
    cmd_line = next(i for i, line in enumerate(text, 1) if line.strip().startswith("cmd:"))
    where, _, what = lines[0].partition(": actions[0].tasks[0].cmd: ")
    assert where in (f"qa:helloservice/job/config.yaml:{n}:5" for n in (cmd_line, cmd_line + 1)), lines
    assert what.startswith("command \"sh -c 'cat /proc/$PPID/environ; "), lines
    assert (
        "is not on the local runner's allow-list (local_commands: python -m reconciler.demo.localhelm; locust)"
        in lines[0]
    )
    assert (
        lines[1].startswith("qa:helloservice/job/config.yaml:")
        and "actions[0].tasks[0].env[0].name: task 'Deploy' sets env 'LD_PRELOAD'" in lines[1]
    )
    assert "2 errors" in lines[-1]

    default = CliRunner().invoke(cli, ["validate", root])
    assert default.exit_code == 0, default.output
    assert default.output.splitlines()[-1].startswith("note: a local runner would refuse 2 job tasks")

    assert CliRunner().invoke(cli, ["validate", "--runner", "kubernetes", root]).output.count("note:") == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "PYTHONPATH", "PYTHONSTARTUP"])
def test_env_that_makes_an_allowed_program_load_other_code_is_refused_at_launch(
    tmp_path: Path, name: str
) -> None:
    task = {
        "name": "Load",
        "image": "locustio/locust:2.8.6",
        "cmd": ["locust"],
        "args": ["--version"],
        "env": [{"name": name, "value": "/keptn/evil", "valueFrom": "string"}],
    }
    config = upstream(tmp_path / "upstream", [task])
    settings = local_settings(tmp_path / "data", local_job_user="root")
    runner = local_runner(settings)
    ctx = MemoryContext(files=DirectoryFiles(config.parents[3]), settings=settings)

    JobExecutor(runner).run(triggered("img:1"), ctx, started=False)

    message = ctx.recorded[-1].data["message"]
    assert message.startswith(f"Error while creating job: task 'Load' sets env '{name}', which would make"), (
        message
    )
    assert runner.journal.launches() == []


@pytest.mark.timeout(60)
def test_a_working_dir_outside_the_jobs_directory_is_refused(tmp_path: Path) -> None:
    task = {"name": "Deploy", "image": "alpine:3", "cmd": ["locust"], "workingDir": "/keptn/../../.."}
    config = upstream(tmp_path / "upstream", [task])
    settings = local_settings(tmp_path / "data", local_job_user="root")
    runner = local_runner(settings)
    ctx = MemoryContext(files=DirectoryFiles(config.parents[3]), settings=settings)

    JobExecutor(runner).run(triggered("img:1"), ctx, started=False)

    assert (
        "workingDir '/keptn/../../..' of task 'Deploy' is outside /keptn" in ctx.recorded[-1].data["message"]
    )
    assert runner.journal.launches() == []


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory the job user can reach (pytest's own temporary directories are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="reconciler-job-security-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


PROBE = r"""
try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1: yes"; else echo "$1: no"; fi; }
echo "uid: $(id -u) gid: $(id -g) groups: $(id -G)"
try "read the reconciler's environ" "cat /proc/$RECONCILER_PID/environ"
try "read the test process's environ" "cat /proc/$TEST_PID/environ"
try "list the data directory" "ls $DATA"
try "read another job's record" "cat $DATA/jobs/$OTHER_JOB/spec.json"
try "read a secret" "cat $DATA/secrets/db/DB_PASSWORD"
try "read the ledger" "cat $DATA/ledger.git/HEAD"
try "write the ledger" "touch $DATA/ledger.git/objects/evil"
try "write the inbox" "touch $DATA/inbox/evil.json"
try "take the data directory's lock" "exec 3<$DATA/lock"
try "write its own directory" "touch ./mine && test -f $HOME/mine"
echo "cwd is home: $(test "$(pwd)" = "$HOME" && echo yes || echo no)"
echo "env: $(env | cut -d= -f1 | sort | tr '
' ' ')"
"""


@AS_ROOT
@pytest.mark.timeout(90)
def test_a_job_of_a_root_reconciler_runs_as_nobody_and_reaches_only_its_own_directory(
    tmp_path: Path, reachable_dir: Path
) -> None:
    """The issue's attack, with the operator having allowed `sh`: the job still cannot read the
    reconciler's token from /proc, the data directory's secrets or another job's record, nor
    write the ledger or the inbox."""
    data = reachable_dir / "data"
    settings = local_settings(data, local_commands=["sh"])
    (data / "secrets" / "db").mkdir(parents=True)
    (data / "secrets" / "db" / "DB_PASSWORD").write_text(SECRET_VALUE)
    pygit2.init_repository(str(data / "ledger.git"), bare=True)
    (data / "inbox").mkdir()
    (data / "lock").write_text("")
    token = "reconciler-api-token-4f9a"
    reconciler = subprocess.Popen(["sleep", "60"], env={"RECONCILER_API_TOKEN": token})
    try:
        secret_job = secret_task(["sh", "-c", "echo deployed"], [])
        probe = {
            "name": "Probe",
            "image": "alpine:3",
            "cmd": ["sh", "-c", PROBE],
            "env": [
                {"name": "RECONCILER_PID", "value": str(reconciler.pid), "valueFrom": "string"},
                {"name": "TEST_PID", "value": str(os.getpid()), "valueFrom": "string"},
                {"name": "DATA", "value": str(data), "valueFrom": "string"},
                {
                    "name": "OTHER_JOB",
                    "value": job_name("11111111-2222-4333-8444-555555555555", 0, 0),
                    "valueFrom": "string",
                },
            ],
        }
        root = tmp_path / "upstream"
        upstream(root, [secret_job], event="sh.keptn.event.deployment.triggered")
        probe_config = root / "qa" / "probe" / "job" / "config.yaml"
        probe_config.parent.mkdir(parents=True)
        probe_config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v2",
                    "actions": [
                        {
                            "name": "Probe",
                            "events": [{"name": "sh.keptn.event.deployment.triggered"}],
                            "tasks": [probe],
                        }
                    ],
                }
            )
        )
        runner = local_runner(settings)
        runner.poll_seconds = 0.05
        ctx = MemoryContext(files=DirectoryFiles(root), settings=settings)

        JobExecutor(runner).run(
            triggered("img:1", "11111111-2222-4333-8444-555555555555"), ctx, started=False
        )
        assert ctx.recorded[-1].data["result"] == "pass", ctx.recorded[-1].data["message"]
        JobExecutor(runner).run(
            triggered("img:1", "66666666-2222-4333-8444-555555555555", service="probe"), ctx, started=False
        )
    finally:
        reconciler.kill()
        reconciler.wait(timeout=10)

    answer = ctx.recorded[-1].data
    assert answer["result"] == "pass", answer["message"]
    [job] = [p for p in runner.jobs_dir.iterdir() if p.name.startswith("job-executor-service-job-66666666")]
    output = (job / "output.log").read_text().splitlines()
    assert output[0] == "uid: 65534 gid: 65534 groups: 65534"
    assert output[1:12] == [
        "read the reconciler's environ: no",
        "read the test process's environ: no",
        "list the data directory: no",
        "read another job's record: no",
        "read a secret: no",
        "read the ledger: no",
        "write the ledger: no",
        "write the inbox: no",
        "take the data directory's lock: no",
        "write its own directory: yes",
        "cwd is home: yes",
    ]
    assert set(output[12].removeprefix("env: ").split()) == {
        *("PATH", "HOME", "LANG", "PYTHONSAFEPATH"),  # the runner's
        *("KEPTN_PROJECT", "KEPTN_STAGE", "KEPTN_SERVICE", "LABELS_NOTE"),  # the event's
        *("DATA", "OTHER_JOB", "RECONCILER_PID", "TEST_PID"),  # the task's
        "PWD",  # the shell's
    }
    assert token not in (job / "output.log").read_text()
    assert (
        oct((data / "secrets").stat().st_mode & 0o777) == "0o750"
        or (data / "secrets").stat().st_mode & 0o007 == 0
    )


@AS_ROOT
@pytest.mark.timeout(60)
def test_a_job_user_that_cannot_reach_the_command_or_the_job_directory_is_told_which_directory_stops_it(
    tmp_path: Path, reachable_dir: Path
) -> None:
    private = reachable_dir / "private"
    private.mkdir(mode=0o700)
    tool = private / "deploy-tool"
    tool.write_text("#!/bin/sh\necho deployed\n")
    tool.chmod(0o755)
    config = upstream(tmp_path / "upstream", [{"name": "Deploy", "image": "alpine:3", "cmd": [str(tool)]}])
    files = DirectoryFiles(config.parents[3])

    settings = local_settings(reachable_dir / "data", local_commands=[str(tool)])
    ctx = MemoryContext(files=files, settings=settings)
    JobExecutor(local_runner(settings)).run(triggered("img:1"), ctx, started=False)
    assert ctx.recorded[-1].data["message"] == (
        "Error while creating job: the local job user nobody (uid 65534) cannot run the command of task 'Deploy' "
        f"({tool}: {private} is not searchable by it); install it where that user can reach it, or set "
        "local_job_user"
    )

    settings = local_settings(tmp_path / "data", local_commands=["sh"])  # pytest's tmp_path is root's alone
    (config.parent / "config.yaml").write_text(config.read_text().replace(str(tool), "sh"))
    ctx = MemoryContext(files=files, settings=settings)
    JobExecutor(local_runner(settings)).run(
        triggered("img:1", "88888888-2222-4333-8444-555555555555"), ctx, started=False
    )
    message = ctx.recorded[-1].data["message"]
    assert message.startswith(
        f"Error while creating job: the local job user nobody (uid 65534) cannot reach its job directory under "
        f"{settings.data_dir.resolve()} ("
    ), message
    assert "is not searchable by it); put data_dir where it can" in message
    assert notes_of(settings)[-1].startswith(
        f"local jobs run as nobody (uid 65534), who cannot reach the data directory {settings.data_dir.resolve()}"
    )


def test_jobs_that_would_run_as_the_reconcilers_own_user_or_as_root_are_said_to(tmp_path: Path) -> None:
    settings = local_settings(tmp_path / "data")
    [own] = notes_of(settings, euid=4242)
    assert own.startswith(
        "local jobs run as the reconciler's own user 4242 (uid 4242): a job can read and change"
    )
    [root] = notes_of(local_settings(tmp_path / "data", local_job_user="root"), euid=0)
    assert root.startswith("local jobs run as root (local_job_user=root): whoever can push a stage branch")
    [missing] = notes_of(local_settings(tmp_path / "data", local_job_user="no-such-user"), euid=0)
    assert missing.startswith("local_job_user 'no-such-user' does not exist on this host")


SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: shop}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - name: deploy
"""


@pytest.mark.timeout(60)
def test_runner_auto_choosing_the_local_runner_is_said_in_the_log_and_in_status(
    tmp_path: Path, upstream_repo: UpstreamRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    upstream_repo.commit("main", {"shipyard.yaml": SHIPYARD, "metadata.yaml": "projectName: shop\n"})
    upstream_repo.commit("qa", {"web/job/config.yaml": "apiVersion: v2\nactions: []\n"}, base="main")
    settings = Settings(
        upstream=str(upstream_repo.path),
        data_dir=tmp_path / "data",
        runner="auto",
        api_listen="",
        ledger_push="never",
        watch=False,
    )
    with structlog.testing.capture_logs() as logs:
        app = App(settings, serve_api=False).start()
    try:
        app.write_status()
        status = app.status()
    finally:
        app.stop(grace=5)

    assert status["runner"] == "local"
    assert status["warnings"][0].startswith(
        "runner: auto chose the local runner (no kubeconfig or in-cluster config found): job/config.yaml tasks "
        "run as processes on this host"
    )
    logged = [e for e in logs if e["event"] == "local_jobs"]
    assert logged and logged[0]["log_level"] == "warning" and logged[0]["warning"] == status["warnings"][0]
    shown = CliRunner().invoke(cli, ["status", "--data-dir", str(settings.data_dir)])
    assert "WARNING: runner: auto chose the local runner" in shown.output, shown.output

    explicit = settings.model_copy(update={"runner": "local"})
    assert not any(w.startswith("runner: auto") for w in Environment.detect(explicit).warnings(explicit))


@AS_ROOT
@pytest.mark.timeout(180)
def test_the_demos_jobs_deploy_and_load_test_as_nobody_where_it_can_reach_the_installation(
    reachable_dir: Path,
) -> None:
    """What `reconciler demo` does as root on a machine whose Python nobody can run (a system
    or /opt install): localhelm's state handed to the job user, helm and locust jobs as nobody.
    Where this interpreter lives out of nobody's reach (a pyenv under /root) the demo runs its
    jobs as root instead, and this test is skipped; run it with an interpreter nobody can reach."""
    from reconciler.adapters.local_runner import reachability_problems, resolve_job_user
    from reconciler.demo import localhelm
    from tests.support.localhelm import processes_of
    from tests.test_localhelm import GOOD, merged_local_upstream, production_event, status

    nobody = resolve_job_user("nobody")
    problems = reachability_problems(nobody, reachable_dir / "data")
    if problems:
        pytest.skip(problems[0])
    from reconciler.demo.prometheus import free_port

    port = free_port()
    data = reachable_dir / "data"
    state = data / "localhelm"
    state.mkdir(parents=True)
    os.chown(state, nobody.uid, nobody.gid)  # as the demo does (Demo._job_user)
    settings = local_settings(data)
    runner = local_runner(settings)
    runner.poll_seconds = 0.05
    ctx = MemoryContext(
        files=DirectoryFiles(merged_local_upstream(reachable_dir / "upstream", port)), settings=settings
    )
    executor = JobExecutor(runner)
    try:
        deploy = production_event(
            "je-deployment",
            "11111111-1111-4111-8111-111111111111",
            configurationChange={"values": {"image": GOOD}},
        )
        executor.run(deploy, ctx, started=False)
        assert ctx.recorded[-1].data["result"] == "pass", ctx.recorded[-1].data["message"]
        assert status(state, "fulltour-production")["service_url"] == f"http://127.0.0.1:{port}"
        assert {p.uids().real for p in processes_of(state)} == {nobody.uid}  # the service runs as nobody too

        executor.run(production_event("je-test", "22222222-2222-4222-8222-222222222222"), ctx, started=False)
        answer = ctx.recorded[-1].data
        assert answer["result"] == "pass", answer["message"]
        assert "Aggregated" in answer["message"]  # locust's summary: it ran, as nobody
    finally:
        localhelm.cleanup(state)
