"""What `reconciler job render` previews is what the job executor hands its runner.

Both go through `reconciler.core.jobspec.build_action_specs`; these tests hold the
two ends together: for every action of example-upstream (cluster and local
profiles) the Job and ConfigMap render prints equal the ones built from the spec
the runner is given, and the image allow-list refuses at launch, not only in render.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.local_runner import LocalRunner
from reconciler.adapters.runner import JobHandle, JobOutcome
from reconciler.cli.job import render_actions
from reconciler.core.jobspec import TaskSpec, files_configmap, job_manifest
from reconciler.demo.scenario import build_source
from reconciler.executors.jobs import JobExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.jobconfig import load_jobconfig
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.conftest import REPO_ROOT
from tests.support.context import MemoryContext
from tests.support.events import now_text

EXAMPLE = REPO_ROOT / "example-upstream"


@dataclass
class RecordingRunner:
    """A runner that records the specs it is given and reports each job as done."""

    name: str = "recording"
    launched: list[TaskSpec] = field(default_factory=list)

    def secret_keys(self, namespace: str, secret: str) -> list[str] | None:
        return None

    def launch(self, spec: TaskSpec) -> JobHandle:
        self.launched.append(spec)
        return JobHandle(spec.job_name, spec.namespace, self.name, datetime.now(UTC))

    def wait(self, handle: JobHandle, spec: TaskSpec) -> JobOutcome:
        return JobOutcome(True, "Completed", "", "", datetime.now(UTC), 0)

    def logs(self, handle: JobHandle) -> str:
        return ""

    def cleanup(self, handle: JobHandle) -> None:
        pass


def _set(data: dict[str, Any], jsonpath: str, value: Any) -> None:
    """`$.data.action.action` -> data["action"]["action"] = value."""
    parts = jsonpath.removeprefix("$.").split(".")
    assert parts[0] == "data", jsonpath
    target = data
    for part in parts[1:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _events_for(config_path: Path, stage: str) -> list[tuple[str, KeptnEvent]]:
    """One triggered event per (action, event matcher) of a job config."""
    config = load_jobconfig(config_path.read_bytes(), str(config_path))
    out = []
    for a, action in enumerate(config.actions):
        for m, matcher in enumerate(action.events):
            data: dict[str, Any] = {
                "project": "fulltour",
                "stage": stage,
                "service": "helloservice",
                "configurationChange": {"values": {"image": "ghcr.io/podtato-head/podtatoserver:v0.1.1"}},
                "action": {"action": "scale", "value": 2},
                "labels": {"buildId": "build-17"},
            }
            if matcher.jsonpath is not None:
                _set(data, matcher.jsonpath.property, matcher.jsonpath.match)
            event = KeptnEvent(
                id=f"7c1e2a9d-8a4b-4c55-9d1e-0f2a3b4c5{a:02d}{m:01d}",
                source="shipyard-controller",
                type=matcher.name,
                shkeptncontext="3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10",
                gitcommitid="0123456789abcdef0123456789abcdef01234567",
                data=data,
                time=now_text(),
            )
            out.append((action.name, event))
    return out


def _profiles(tmp_path: Path) -> list[tuple[str, Path]]:
    """(name, branch-directory tree): the cluster profile as committed, and the demo's local one."""
    return [("cluster", EXAMPLE), ("local", build_source(EXAMPLE, tmp_path / "local"))]


def test_render_equals_what_the_runner_is_given_for_every_example_action(tmp_path: Path) -> None:
    compared = 0
    for profile, root in _profiles(tmp_path):
        files = DirectoryFiles(root)
        for stage in ("qa", "production"):
            config_path = root / stage / "helloservice" / "job" / "config.yaml"
            for action_name, event in _events_for(config_path, stage):
                rendered = render_actions(
                    config_path.read_bytes(),
                    str(config_path),
                    event.to_json().encode(),
                    "event.json",
                    config_path.parent.parent,
                    namespace=None,
                    secret_keys={},
                )
                runner = RecordingRunner()
                ctx = MemoryContext(files=files, settings=Settings(data_dir=tmp_path / "data"))
                JobExecutor(runner).run(event, ctx, started=False)
                assert ctx.recorded[-1].data["result"] == "pass", (
                    profile,
                    action_name,
                    ctx.recorded[-1].data,
                )
                tasks = [t for a in rendered["actions"] for t in a["tasks"]]
                where = f"{profile} {stage} {action_name!r} for {event.type}"
                assert len(tasks) == len(runner.launched), where
                for task, spec in zip(tasks, runner.launched, strict=True):
                    assert task["job"] == job_manifest(spec), where
                    assert task.get("configMap") == files_configmap(spec), where
                    assert json.dumps(task, sort_keys=True) == json.dumps(
                        {
                            **spec.render(),
                            "job": task["job"],
                            **({"configMap": task["configMap"]} if "configMap" in task else {}),
                        },
                        sort_keys=True,
                    ), where
                    compared += 1
    # qa: deploy + test; production: deploy, test, scale (two matchers), rollback; in two profiles
    assert compared == 14


def test_an_image_off_the_allow_list_is_refused_at_launch_not_only_in_render(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", runner="local", allowed_images=["ghcr.io/acme/*"])
    runner = LocalRunner(settings.data_dir, poll_seconds=0.05)
    ctx = MemoryContext(files=DirectoryFiles(EXAMPLE), settings=settings)
    config_path = EXAMPLE / "qa" / "helloservice" / "job" / "config.yaml"
    _, event = _events_for(config_path, "qa")[0]

    JobExecutor(runner).run(event, ctx, started=False)

    finished = ctx.recorded[-1]
    assert finished.type == "sh.keptn.event.je-deployment.finished"
    assert finished.data["result"] == "fail"
    assert (
        "Forbidden: Image alpine/helm:3.9.0 does not match configured image allowlist"
        in finished.data["message"]
    )
    assert finished.data["reconciler"] == {"reason": "ImageForbidden"}
    assert runner.journal.launches() == []
    assert not (settings.data_dir / "jobs").exists() or not any(
        p.is_dir() for p in (settings.data_dir / "jobs").iterdir()
    )


@pytest.mark.parametrize("allowed", [["docker.io/alpine/helm:*", "locustio/*"], ["*"]])
def test_images_on_the_allow_list_reach_the_runner(tmp_path: Path, allowed: list[str]) -> None:
    runner = RecordingRunner()
    settings = Settings(data_dir=tmp_path / "data", allowed_images=allowed)
    ctx = MemoryContext(files=DirectoryFiles(EXAMPLE), settings=settings)
    config_path = EXAMPLE / "qa" / "helloservice" / "job" / "config.yaml"
    _, event = _events_for(config_path, "qa")[0]

    JobExecutor(runner).run(event, ctx, started=False)

    assert [s.image for s in runner.launched] == ["alpine/helm:3.9.0"]
