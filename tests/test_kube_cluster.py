"""The Kubernetes runner against a real cluster (opt-in: set KUBECONFIG; `-m cluster` selects only these).

The same scenarios as tests/test_kube_runner.py, with the real Job controller and
kubelet: success with logs, failure with logs, an image that cannot be pulled, a
task that outlives maxPollDuration, and adoption by a restarted runner. Each test
run uses a fresh namespace (deleted afterwards) and the `busybox` image.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.adapters.kube_runner import KubeRunner, api_client
from reconciler.adapters.runner import LaunchJournal
from reconciler.core.jobmatching import answering_action
from reconciler.executors.jobs import JobExecutor, lookup_config
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.context import MemoryContext
from tests.support.events import now_text

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs a real cluster: set KUBECONFIG"),
]

IMAGE = os.environ.get("RECONCILER_TEST_IMAGE", "busybox:1.36")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, str]]:
    from kubernetes import client

    api = api_client(Path(os.environ["KUBECONFIG"]))
    core: Any = client.CoreV1Api(api)
    namespace = f"reconciler-test-{uuid.uuid4().hex[:8]}"
    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    except client.ApiException as exc:
        pytest.skip(f"cannot create a test namespace: {exc.status} {exc.reason}")
    try:
        yield api, namespace
    finally:
        core.delete_namespace(namespace)


def setup(
    cluster: tuple[Any, str], tmp_path: Path, task: dict[str, Any]
) -> tuple[JobExecutor, MemoryContext, KubeRunner]:
    api, namespace = cluster
    root = tmp_path / "upstream"
    (root / "qa" / "helloservice" / "job").mkdir(parents=True)
    (root / "main").mkdir()
    config = {
        "apiVersion": "v2",
        "actions": [{"name": "Deploy", "events": [{"name": "deployment.triggered"}], "tasks": [task]}],
    }
    (root / "qa" / "helloservice" / "job" / "config.yaml").write_text(yaml.safe_dump(config))
    settings = Settings(data_dir=tmp_path / "data", job_namespace=namespace)
    runner = KubeRunner(api, journal=LaunchJournal(settings.data_dir), wake_seconds=2.0, grace_seconds=15.0)
    return JobExecutor(runner), MemoryContext(files=DirectoryFiles(root), settings=settings), runner


def triggered() -> KeptnEvent:
    return KeptnEvent(
        id=str(uuid.uuid4()),
        source="shipyard-controller",
        type="sh.keptn.event.deployment.triggered",
        shkeptncontext=str(uuid.uuid4()),
        gitcommitid="0" * 40,
        data={"project": "fulltour", "stage": "qa", "service": "helloservice"},
        time=now_text(),
    )


def task(**extra: Any) -> dict[str, Any]:
    return {"name": "Task", "image": IMAGE, "cmd": ["sh", "-c"], "maxPollDuration": 120, **extra}


@pytest.mark.timeout(300)
def test_cluster_success_with_logs(cluster: tuple[Any, str], tmp_path: Path) -> None:
    executor, ctx, _ = setup(cluster, tmp_path, task(args=["echo deployed $(KEPTN_SERVICE)"]))
    executor.run(triggered(), ctx, started=False)
    data = ctx.recorded[-1].data
    assert data["result"] == "pass", data["message"]
    assert "deployed helloservice" in data["message"]


@pytest.mark.timeout(300)
def test_cluster_failure_with_logs(cluster: tuple[Any, str], tmp_path: Path) -> None:
    executor, ctx, _ = setup(cluster, tmp_path, task(args=["echo broken chart; exit 3"]))
    executor.run(triggered(), ctx, started=False)
    data = ctx.recorded[-1].data
    assert data["status"] == "errored" and "broken chart" in data["message"]
    assert "failed. Reason: BackoffLimitExceeded" in data["message"]


@pytest.mark.timeout(300)
def test_cluster_image_pull_error_fails_fast(cluster: tuple[Any, str], tmp_path: Path) -> None:
    bad = task(image="registry.invalid/reconciler/nope:0", args=["true"], maxPollDuration=3600)
    executor, ctx, _ = setup(cluster, tmp_path, bad)
    executor.run(triggered(), ctx, started=False)
    message = ctx.recorded[-1].data["message"]
    assert "Reason: ErrImagePull" in message or "Reason: ImagePullBackOff" in message


@pytest.mark.timeout(300)
def test_cluster_timeout_stops_the_job(cluster: tuple[Any, str], tmp_path: Path) -> None:
    executor, ctx, _ = setup(cluster, tmp_path, task(args=["echo waiting; sleep 600"], maxPollDuration=10))
    executor.run(triggered(), ctx, started=False)
    assert "timing out after 10s: max poll count reached for job" in ctx.recorded[-1].data["message"]


@pytest.mark.timeout(300)
def test_cluster_restart_adopts_the_job(cluster: tuple[Any, str], tmp_path: Path) -> None:
    api, _ = cluster
    executor, ctx, runner = setup(cluster, tmp_path, task(args=["sleep 5; echo once"]))
    event = triggered()
    found = lookup_config(event, ctx)
    assert found.config is not None
    matched = answering_action(found.config, event)
    assert matched is not None
    [spec] = executor.specs(event, ctx, found, matched, runner)
    first = runner.launch(spec)
    again = KubeRunner(
        api, journal=LaunchJournal(ctx.settings.data_dir), wake_seconds=2.0, grace_seconds=15.0
    )
    JobExecutor(again).run(event, ctx, started=True)
    assert "once" in ctx.recorded[-1].data["message"]
    assert [line["job"] for line in LaunchJournal(ctx.settings.data_dir).launches()] == [first.name]
