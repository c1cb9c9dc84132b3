"""The small "shop" upstream the whole-reconciler tests share: a shipyard built from stages,
sequences and tasks, a deploy job that records each run in a file, and the seed commits.

    SHIPYARD = shipyard(
        stage("qa", sequence("delivery", task("deploy"), task("evaluation", timeframe="5m"))),
        stage("production", sequence("delivery", task("deploy"), triggered_on="qa.delivery.finished")),
    )
    seed_shop(repo, SHIPYARD, stages=("qa", "production"), files={"web/job/config.yaml": job})
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.support.gitserver import UpstreamRepo

PROJECT = "shop"


def task(name: str, **properties: str) -> str:
    """One task of a sequence; `properties` as Keptn's `properties:` block (flow style)."""
    line = f"            - name: {name}\n"
    if properties:
        inner = ", ".join(f"{k}: {v}" for k, v in properties.items())
        line += f"              properties: {{{inner}}}\n"
    return line


def sequence(name: str, *tasks: str, triggered_on: str | None = None) -> str:
    text = f"        - name: {name}\n"
    if triggered_on:
        text += f"          triggeredOn: [{{event: {triggered_on}}}]\n"
    return text + "          tasks:\n" + "".join(tasks)


def stage(name: str, *sequences: str) -> str:
    return f"    - name: {name}\n      sequences:\n" + "".join(sequences)


def shipyard(*stages: str) -> str:
    return (
        "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata: {name: shipyard-shop}\n"
        "spec:\n  stages:\n" + "".join(stages)
    )


def approval(**strategy: str) -> str:
    return task("approval", **(strategy or {"pass": "automatic", "warning": "automatic"}))


def recording_job(runs: Path, line: str = "$(IMAGE)", *, python: str = sys.executable) -> str:
    """A job/config.yaml whose deploy task is a local python one-liner appending `line` to `runs`
    (so a test counts executions); `$(IMAGE)` is the delivered image."""
    args = json.dumps(
        ["-c", "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))", str(runs), line]
    )
    return (
        "apiVersion: v2\nactions:\n  - name: deploy\n    events:\n"
        "      - name: sh.keptn.event.deploy.triggered\n    tasks:\n      - name: record\n"
        f"        image: python:3.11-slim\n        cmd: [{json.dumps(python)}]\n        args: {args}\n"
        '        env:\n          - {name: IMAGE, value: "$.data.configurationChange.values.image", valueFrom: event}\n'
        "        maxPollDuration: 60\n"
    )


def seed_shop(
    repo: UpstreamRepo,
    shipyard_yaml: str,
    *,
    stages: Iterable[str] = ("qa",),
    files: Mapping[str, str] | None = None,
    project: str = PROJECT,
) -> None:
    """`main` with the shipyard and metadata, then each stage branch with `files` (default: the
    `web` service at image web:1.0)."""
    repo.commit(
        "main", {"shipyard.yaml": shipyard_yaml, "metadata.yaml": f"projectName: {project}\n"}, "shipyard"
    )
    content = {"web/values.yaml": "image: web:1.0\n", **(files or {})}
    for name in stages:
        repo.commit(name, dict(content), f"{name}: services", base="main")


def deploy(repo: UpstreamRepo, version: str, *, stage: str = "qa", service: str = "web") -> str:
    """Commit-to-deploy: a new image in the service's values.yaml; returns the commit."""
    return repo.commit(
        stage, {f"{service}/values.yaml": f"image: {service}:{version}\n"}, f"deploy {service} {version}"
    )
