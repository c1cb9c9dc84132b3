"""`reconciler job render`: a dry run showing the actions, tasks and Kubernetes objects for an event."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import cli

JOB_CONFIG = """\
apiVersion: v2
actions:
  - name: "Notify"
    silent: true
    events:
      - name: "sh.keptn.event.deployment.triggered"
    tasks:
      - name: "Announce"
        image: "curlimages/curl:8.5.0"
        cmd: ["curl"]
        args: ["-d", "$(KEPTN_SERVICE) $(IMAGE)", "http://chat.example/hook"]
        env:
          - name: IMAGE
            value: "$.data.configurationChange.values.image"
            valueFrom: event
  - name: "Deploy using helm"
    events:
      - name: "sh.keptn.event.deployment.triggered"
    tasks:
      - name: "Run helm"
        files:
          - /charts
        env:
          - name: IMAGE
            value: "$.data.configurationChange.values.image"
            valueFrom: event
          - name: EVENT
            value: "$"
            valueFrom: event
            as: file
          - name: registry
            valueFrom: secret
        image: "alpine/helm:3.9.0"
        serviceAccount: "jes-deploy-using-helm"
        cmd: ["helm"]
        args: ["upgrade", "--create-namespace", "--install", "-n", "$(KEPTN_PROJECT)-$(KEPTN_STAGE)",
               "$(KEPTN_SERVICE)", "/keptn/charts/$(KEPTN_SERVICE).tgz", "--set", "image=$(IMAGE)", "--wait"]
  - name: "Run tests using locust"
    events:
      - name: "sh.keptn.event.test.triggered"
    tasks:
      - name: "Run locust"
        files:
          - locust/basic.py
          - locust/locust.conf
        image: "locustio/locust:2.8.6"
        cmd: ["locust"]
        args: ["--config", "/keptn/locust/locust.conf", "-f", "/keptn/locust/basic.py",
               "--host", "http://$(KEPTN_SERVICE).$(KEPTN_PROJECT)-$(KEPTN_STAGE)", "--only-summary"]
        securityContext:
          readOnlyRootFilesystem: false
"""


def _chart() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"apiVersion: v2\nname: helloservice\nversion: 0.1.0\n"
        info = tarfile.TarInfo("helloservice/Chart.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _event(type_: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "6de83495-4f83-481c-8dbe-fcceb2e0243b",
        "source": "shipyard-controller",
        "type": type_,
        "shkeptncontext": "3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10",
        "gitcommitid": "0123456789abcdef0123456789abcdef01234567",
        "time": "2024-01-01T10:00:00.000Z",
        "data": {"project": "fulltour", "stage": "qa", "service": "helloservice", **data},
    }


@pytest.fixture
def service(tmp_path: Path) -> Path:
    root = tmp_path / "helloservice"
    (root / "job").mkdir(parents=True)
    (root / "charts").mkdir()
    (root / "locust").mkdir()
    (root / "job" / "config.yaml").write_text(JOB_CONFIG)
    (root / "charts" / "helloservice.tgz").write_bytes(_chart())
    (root / "locust" / "basic.py").write_text("from locust import HttpUser, task\n")
    (root / "locust" / "locust.conf").write_text("headless = true\nusers = 10\nrun-time = 2m\n")
    (tmp_path / "other.txt").write_text("not part of the service")
    return root


def _render(service: Path, event: dict[str, Any], *extra: str) -> Any:
    event_file = service.parent / "event.json"
    event_file.write_text(json.dumps(event))
    return CliRunner().invoke(
        cli,
        [
            "job",
            "render",
            "--config",
            str(service / "job" / "config.yaml"),
            "--event",
            str(event_file),
            *extra,
        ],
    )


def _objects(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for action in doc["actions"]:
        for task in action["tasks"]:
            out.append(task["job"])
            if "configMap" in task:
                out.append(task["configMap"])
    return out


def test_render_lists_silent_then_answering_action_with_jobs_that_pass_strict_validation(
    service: Path,
) -> None:
    event = _event(
        "sh.keptn.event.deployment.triggered",
        configurationChange={"values": {"image": "ghcr.io/podtato-head/podtatoserver:v0.1.1"}},
    )
    result = _render(service, event, "--secret-keys", "registry=USER,TOKEN")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [(a["name"], a["silent"]) for a in doc["actions"]] == [
        ("Notify", True),
        ("Deploy using helm", False),
    ]
    helm = doc["actions"][1]["tasks"][0]
    assert helm["name"] == "Run helm" and helm["image"] == "alpine/helm:3.9.0"
    assert helm["cmd"] == ["helm"]
    assert "$(KEPTN_PROJECT)-$(KEPTN_STAGE)" in helm["args"]
    assert helm["expanded"]["args"][4:7] == ["fulltour-qa", "helloservice", "/keptn/charts/helloservice.tgz"]
    assert {"name": "IMAGE", "value": "ghcr.io/podtato-head/podtatoserver:v0.1.1", "literal": True} in helm[
        "env"
    ]
    assert {"name": "TOKEN", "secretKeyRef": {"name": "registry", "key": "TOKEN"}} in helm["env"]
    assert [f["path"] for f in helm["files"]] == ["/keptn/charts/helloservice.tgz", "/keptn/env/EVENT"]
    assert helm["files"][0]["bytes"] == len(_chart())
    assert helm["job"]["kind"] == "Job" and helm["job"]["metadata"]["namespace"] == "keptn-jobs"
    objects = _objects(doc)
    assert [o["kind"] for o in objects] == ["Job", "Job", "ConfigMap"]  # Notify stages no files
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_render_of_a_test_event_runs_locust_with_its_files(service: Path) -> None:
    result = _render(
        service, _event("sh.keptn.event.test.triggered"), "--namespace", "fulltour-qa", "-o", "yaml"
    )
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.output)
    [action] = doc["actions"]
    [task] = action["tasks"]
    assert task["expanded"]["args"][-2] == "http://helloservice.fulltour-qa"
    assert task["job"]["metadata"]["namespace"] == "fulltour-qa"
    container = task["job"]["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    mounts = sorted(m["mountPath"] for m in container["volumeMounts"])
    assert mounts == ["/keptn", "/keptn/locust/basic.py", "/keptn/locust/locust.conf"]
    for obj in _objects(doc):
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_render_shows_nothing_when_no_action_matches(service: Path) -> None:
    result = _render(service, _event("sh.keptn.event.release.triggered"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"actions": []}


def test_an_invalid_config_exits_1_with_the_file_line_and_field(service: Path) -> None:
    (service / "job" / "config.yaml").write_text(
        JOB_CONFIG.replace('        cmd: ["helm"]', '        comand: ["helm"]')
    )
    result = _render(service, _event("sh.keptn.event.deployment.triggered"))
    assert result.exit_code == 1
    assert "config.yaml:" in result.output and "comand" in result.output


def test_a_refused_image_exits_1_naming_it(service: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_ALLOWED_IMAGES", "docker.io/alpine/*,docker.io/curlimages/*")
    result = _render(service, _event("sh.keptn.event.test.triggered"))
    assert result.exit_code == 1
    assert (
        "Forbidden: Image locustio/locust:2.8.6 does not match configured image allowlist." in result.output
    )


def test_a_missing_file_exits_1_naming_the_entry_and_task(service: Path) -> None:
    (service / "locust" / "locust.conf").unlink()
    result = _render(service, _event("sh.keptn.event.test.triggered"))
    assert result.exit_code == 1
    assert "could not find file or directory locust/locust.conf for task Run locust" in result.output


def test_a_bad_event_exits_1_naming_the_field(service: Path) -> None:
    bad = _event("sh.keptn.event.test.triggered")
    del bad["source"]
    result = _render(service, bad)
    assert result.exit_code == 1
    assert "source" in result.output
