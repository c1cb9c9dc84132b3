"""The Kubernetes runner through the official client against an API-server double on 127.0.0.1.

The double has no controller; each test plays the Job controller (creates the pod,
moves it through states, marks the Job Complete or Failed) and checks what the
task's `.finished` event tells a user.
"""

from __future__ import annotations

import base64
import errno
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from reconciler.adapters.kube_runner import KubeRunner
from reconciler.adapters.runner import LaunchJournal
from reconciler.core.jobmatching import answering_action
from reconciler.core.outcomes import started_event
from reconciler.executors.jobs import JobExecutor, lookup_config
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.context import MemoryContext
from tests.support.events import now_text
from tests.support.kube import KubeDouble
from tests.support.launches import DiesBeforeRecording

NS = "keptn-jobs"

HELM_CONFIG = """\
apiVersion: v2
actions:
  - name: "Deploy using helm"
    events:
      - name: "sh.keptn.event.deployment.triggered"
    tasks:
      - name: "Run helm"
        files: [charts]
        env:
          - {name: IMAGE, value: "$.data.configurationChange.values.image", valueFrom: event}
        image: "alpine/helm:3.9.0"
        serviceAccount: "jes-deploy-using-helm"
        cmd: ["helm"]
        args: ["upgrade", "--install", "-n", "$(KEPTN_PROJECT)-$(KEPTN_STAGE)", "$(KEPTN_SERVICE)",
               "/keptn/charts/$(KEPTN_SERVICE).tgz", "--set", "image=$(IMAGE)", "--wait"]
        maxPollDuration: MAXPOLL
      - name: "Show release"
        image: "alpine/helm:3.9.0"
        cmd: ["helm"]
        args: ["status", "$(KEPTN_SERVICE)"]
  - name: "Run tests"
    events:
      - name: "sh.keptn.event.test.triggered"
    tasks:
      - name: "Load test"
        image: "locustio/locust:2.8.6"
        cmd: ["locust"]
        env:
          - {name: registry, valueFrom: secret}
"""

CHART = bytes(range(256)) * 8


def upstream(root: Path, max_poll: int = 120) -> DirectoryFiles:
    service = root / "qa" / "helloservice"
    (service / "job").mkdir(parents=True)
    (service / "charts").mkdir()
    (service / "job" / "config.yaml").write_text(HELM_CONFIG.replace("MAXPOLL", str(max_poll)))
    (service / "charts" / "helloservice.tgz").write_bytes(CHART)
    (root / "main").mkdir()
    return DirectoryFiles(root)


def triggered(task: str = "deployment", event_id: str = "6de83495-4f83-481c-8dbe-fcceb2e0243b") -> KeptnEvent:
    return KeptnEvent(
        id=event_id,
        source="shipyard-controller",
        type=f"sh.keptn.event.{task}.triggered",
        shkeptncontext="3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10",
        gitcommitid="0123456789abcdef0123456789abcdef01234567",
        data={
            "project": "fulltour",
            "stage": "qa",
            "service": "helloservice",
            "labels": {"image": "ghcr.io/podtato-head/podtatoserver", "version": "v0.1.1"},
            "configurationChange": {"values": {"image": "ghcr.io/podtato-head/podtatoserver:v0.1.1"}},
        },
        time=now_text(),
    )


def setup(
    kube: KubeDouble, tmp_path: Path, max_poll: int = 120
) -> tuple[JobExecutor, MemoryContext, KubeRunner]:
    settings = Settings(data_dir=tmp_path / "data", job_namespace=NS)
    runner = KubeRunner(
        kube.api_client(), journal=LaunchJournal(settings.data_dir), wake_seconds=0.2, grace_seconds=0.5
    )
    ctx = MemoryContext(files=upstream(tmp_path / "upstream", max_poll), settings=settings)
    return JobExecutor(runner), ctx, runner


def finished(ctx: MemoryContext) -> dict[str, Any]:
    assert ctx.types()[-1].endswith(".finished"), ctx.types()
    return ctx.recorded[-1].data


def assert_valid(objects: list[dict[str, Any]]) -> None:
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)


@pytest.mark.timeout(60)
def test_successful_jobs_finish_the_task_with_each_tasks_logs(kube: KubeDouble, tmp_path: Path) -> None:
    executor, ctx, _ = setup(kube, tmp_path)
    logs = {
        "Run helm": 'Release "helloservice" has been upgraded. Happy Helming!\n',
        "Show release": "STATUS: deployed\n",
    }

    answers_when_jobs_appeared: list[list[str]] = []

    def controller(job: dict[str, Any]) -> None:
        answers_when_jobs_appeared.append(ctx.types())
        task = job["spec"]["template"]["metadata"]["labels"]["keptn.sh/jes-task"].replace("_", " ")
        kube.succeed(job, logs=logs[task])

    kube.job_controller(controller)
    event = triggered()
    assert executor.claims(event, ctx)
    executor.run(event, ctx, started=False)

    assert ctx.types() == ["sh.keptn.event.deployment.started", "sh.keptn.event.deployment.finished"]
    assert answers_when_jobs_appeared[0] == ["sh.keptn.event.deployment.started"]
    data = finished(ctx)
    assert (data["status"], data["result"]) == ("succeeded", "pass")
    assert "labels" not in data  # as job-executor-service: success answers carry no labels
    message = data["message"]
    assert message.startswith("Task 'Run helm' finished successfully!\n\nLogs:\nContainer job of pod ")
    assert "Happy Helming!" in message
    assert (
        "Task 'Show release' finished successfully!\n\nLogs:\n" in message and "STATUS: deployed" in message
    )
    assert message.index("Run helm") < message.index("Show release")

    jobs = kube.created("Job")
    assert [j["metadata"]["name"][-7:] for j in jobs] == ["000-001", "000-002"]
    labels = jobs[0]["metadata"]["labels"]
    assert (labels["keptn.sh/project"], labels["keptn.sh/stage"], labels["keptn.sh/service"]) == (
        "fulltour",
        "qa",
        "helloservice",
    )
    [cm] = kube.created("ConfigMap")
    assert base64.b64decode(next(iter(cm["binaryData"].values()))) == CHART
    stored = {c["metadata"]["name"]: c for c in kube.configmaps(NS)}[cm["metadata"]["name"]]
    owner = stored["metadata"]["ownerReferences"][0]
    job_uid = {j["metadata"]["name"]: j["metadata"]["uid"] for j in kube.jobs(NS)}[
        jobs[0]["metadata"]["name"]
    ]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", jobs[0]["metadata"]["name"], job_uid)
    assert_valid(kube.created())


@pytest.mark.timeout(60)
def test_a_failed_job_ends_the_action_with_its_reason_and_log_tail(kube: KubeDouble, tmp_path: Path) -> None:
    executor, ctx, _ = setup(kube, tmp_path)
    kube.job_controller(
        lambda job: kube.fail(job, logs="Error: INSTALLATION FAILED: chart requires kubeVersion\n")
    )
    executor.run(triggered(), ctx, started=False)

    data = finished(ctx)
    assert (data["status"], data["result"]) == ("errored", "fail")
    assert data["labels"]["version"] == "v0.1.1"
    name = kube.created("Job")[0]["metadata"]["name"]
    assert data["message"].startswith(
        f"Error while creating job: job {name} failed. Reason: BackoffLimitExceeded, "
        "Message: Job has reached the specified backoff limit"
    )
    assert "terminated with an error (Reason: Error, ExitCode: 1)" in data["message"]
    assert "INSTALLATION FAILED" in data["message"]
    assert len(kube.created("Job")) == 1  # the second task never started
    assert_valid(kube.created())


@pytest.mark.timeout(60)
def test_an_image_pull_error_fails_the_task_at_once_and_removes_the_job(
    kube: KubeDouble, tmp_path: Path
) -> None:
    executor, ctx, _ = setup(kube, tmp_path, max_poll=3600)
    kube.job_controller(
        lambda job: kube.waiting(
            job, "ErrImagePull", "pull access denied for alpine/helm, repository does not exist"
        )
    )
    executor.run(triggered(), ctx, started=False)

    data = finished(ctx)
    assert data["status"] == "errored"
    assert "Reason: ErrImagePull, Message: pull access denied for alpine/helm" in data["message"]
    assert kube.jobs(NS) == []


@pytest.mark.timeout(60)
def test_a_missing_service_account_fails_the_task_at_once(kube: KubeDouble, tmp_path: Path) -> None:
    executor, ctx, _ = setup(kube, tmp_path, max_poll=3600)
    kube.job_controller(
        lambda job: kube.event(
            job,
            "FailedCreate",
            'Error creating: pods "x" is forbidden: error looking up service account keptn-jobs/jes-deploy-using-helm: '
            'serviceaccount "jes-deploy-using-helm" not found',
        )
    )
    executor.run(triggered(), ctx, started=False)

    message = finished(ctx)["message"]
    assert "Reason: FailedCreate" in message and 'serviceaccount "jes-deploy-using-helm" not found' in message


@pytest.mark.timeout(60)
def test_a_job_still_running_at_max_poll_duration_times_out_and_is_stopped(
    kube: KubeDouble, tmp_path: Path
) -> None:
    executor, ctx, _ = setup(kube, tmp_path, max_poll=1)
    kube.job_controller(lambda job: kube.running(job, logs="waiting for deployment helloservice\n"))
    executor.run(triggered(), ctx, started=False)

    data = finished(ctx)
    name = kube.created("Job")[0]["metadata"]["name"]
    assert data["message"].startswith(
        f"Error while creating job: polling for job {name} timing out after 1s: max poll count reached for job"
    )
    assert "waiting for deployment helloservice" in data["message"]
    assert kube.jobs(NS) == []


@pytest.mark.timeout(60)
def test_a_restarted_reconciler_adopts_the_job_instead_of_creating_another(
    kube: KubeDouble, tmp_path: Path
) -> None:
    executor, ctx, runner = setup(kube, tmp_path)
    event = triggered()
    # The first reconciler answered .started and created the first Job, then died.
    ctx.emit(started_event(event, executor.name, now=ctx.now()))
    found = lookup_config(event, ctx)
    assert found.config is not None
    matched = answering_action(found.config, event)
    assert matched is not None
    specs = executor.specs(event, ctx, found, matched, runner)
    runner.journal = DiesBeforeRecording(ctx.settings.data_dir)
    with pytest.raises(SystemExit):  # ... and it died between creating the Job and recording it
        runner.launch(specs[0])

    # A new process: new runner, new executor; the controller now runs the Jobs.
    executor2 = JobExecutor(
        KubeRunner(
            kube.api_client(),
            journal=LaunchJournal(ctx.settings.data_dir),
            wake_seconds=0.2,
            grace_seconds=0.5,
        )
    )
    kube.job_controller(lambda job: kube.succeed(job, logs="ok\n"))
    executor2.run(event, ctx, started=True)

    assert ctx.types() == ["sh.keptn.event.deployment.started", "sh.keptn.event.deployment.finished"]
    assert finished(ctx)["result"] == "pass"
    names = [j["metadata"]["name"] for j in kube.created("Job")]
    assert len(names) == len(set(names)) == 2  # one Job per task, the first one adopted
    # the adopter recorded the Job its creator could not: each created Job is in the journal once
    assert sorted(line["job"] for line in LaunchJournal(ctx.settings.data_dir).launches()) == sorted(names)


@pytest.mark.timeout(60)
def test_secret_keys_become_secret_references_and_a_missing_secret_fails_clearly(
    kube: KubeDouble, tmp_path: Path
) -> None:
    executor, ctx, _ = setup(kube, tmp_path)
    executor.run(triggered("test", "11111111-2222-3333-4444-555555555555"), ctx, started=False)
    assert ctx.types() == ["sh.keptn.event.test.started", "sh.keptn.event.test.finished"]
    assert finished(ctx)["message"] == (
        "Error while creating job: secret 'registry' not found in namespace 'keptn-jobs'"
    )
    assert kube.created("Job") == []

    kube.core.create_namespaced_secret(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "registry", "namespace": NS},
            "data": {
                "USER": base64.b64encode(b"bot").decode(),
                "TOKEN": base64.b64encode(b"s3cr3t-t0ken").decode(),
            },
        },
    )
    kube.job_controller(lambda job: kube.succeed(job, logs="logged in with s3cr3t-t0ken\n"))
    event = triggered("test", "66666666-2222-3333-4444-555555555555")
    executor.run(event, ctx, started=False)
    data = finished(ctx)
    assert data["result"] == "pass"
    assert "logged in with ***" in data["message"]  # a Secret value printed by the job is redacted
    assert set(data["test"]) == {"start", "end"}
    env = kube.created("Job")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {
        "TOKEN": {"name": "registry", "key": "TOKEN"},
        "USER": {"name": "registry", "key": "USER"},
    }
    assert "s3cr3t" not in str(kube.created("Job"))
    assert_valid(kube.created("Job"))


@pytest.mark.timeout(60)
def test_an_unreachable_cluster_fails_the_task_saying_so(tmp_path: Path) -> None:
    import socket

    from kubernetes import client

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.retries = 0
    settings = Settings(data_dir=tmp_path / "data", job_namespace=NS)
    ctx = MemoryContext(files=upstream(tmp_path / "upstream"), settings=settings)
    JobExecutor(KubeRunner(client.ApiClient(cfg))).run(triggered(), ctx, started=False)

    data = finished(ctx)
    assert data["status"] == "errored"
    assert data["message"].startswith("Error while connecting to cluster: ")
    # the address tried and the OS's reason, in our words rather than urllib3's pool wording
    assert f"http://127.0.0.1:{port}: {os.strerror(errno.ECONNREFUSED).lower()}" in data["message"]
