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
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from reconciler.adapters.kube_runner import KubeRunner
from reconciler.adapters.local_runner import LocalRunner
from reconciler.adapters.runners import LaunchJournal
from reconciler.cli import cli
from reconciler.core.jobspec import expand
from reconciler.executors.jobs import JobExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.context import MemoryContext
from tests.support.kube import KubeDouble

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
    runner = LocalRunner(settings.data_dir, poll_seconds=0.05)
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
    runner = LocalRunner(settings.data_dir, poll_seconds=0.05)
    ctx = MemoryContext(files=DirectoryFiles(config.parents[3]), settings=settings)

    JobExecutor(runner).run(triggered("img:1"), ctx, started=False)

    [job] = [p for p in runner.jobs_dir.iterdir() if p.is_dir()]
    assert (job / "output.log").read_text() == f"fulltour-qa|db://app:{SECRET_VALUE}@db\n"
