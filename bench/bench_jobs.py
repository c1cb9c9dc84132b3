"""Job executor figures: spec building, and the local runner's overhead per task.

    python bench/bench_jobs.py [--tasks 20]

Prints: time to build a TaskSpec plus its Job and ConfigMap for the tutorial's helm
task (a 4 KiB chart), and wall time from launch to result of a local task that
runs `true` (supervisor start, claim, process, result file), sequentially.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from reconciler.adapters.local_runner import LocalRunner
from reconciler.base.clock import utcnow
from reconciler.core.jobmatching import MatchedAction
from reconciler.core.jobspec import JobDefaults, build_task_spec, files_configmap, job_manifest
from reconciler.formats.events import KeptnEvent, format_time
from reconciler.formats.jobconfig import load_jobconfig

CONFIG = {
    "apiVersion": "v2",
    "actions": [
        {
            "name": "Deploy using helm",
            "events": [{"name": "sh.keptn.event.deployment.triggered"}],
            "tasks": [
                {
                    "name": "Run helm",
                    "image": "alpine/helm:3.9.0",
                    "files": ["charts"],
                    "cmd": ["helm"],
                    "args": [
                        "upgrade",
                        "--install",
                        "-n",
                        "$(KEPTN_PROJECT)-$(KEPTN_STAGE)",
                        "$(KEPTN_SERVICE)",
                        "/keptn/charts/$(KEPTN_SERVICE).tgz",
                        "--set",
                        "image=$(IMAGE)",
                        "--wait",
                    ],
                    "env": [
                        {
                            "name": "IMAGE",
                            "value": "$.data.configurationChange.values.image",
                            "valueFrom": "event",
                        }
                    ],
                },
                {"name": "True", "image": "busybox", "cmd": ["true"]},
            ],
        }
    ],
}


def event(n: int) -> KeptnEvent:
    return KeptnEvent(
        id=f"bench-{n:06d}-0000-0000-0000-000000000000",
        source="bench",
        type="sh.keptn.event.deployment.triggered",
        shkeptncontext="c",
        data={
            "project": "fulltour",
            "stage": "qa",
            "service": "helloservice",
            "configurationChange": {"values": {"image": "img:1"}},
        },
        time=format_time(utcnow()),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    config = load_jobconfig(yaml.safe_dump(CONFIG))
    matched = MatchedAction(0, config.actions[0])
    chart = bytes(range(256)) * 16

    rounds = 2000
    start = time.perf_counter()
    for n in range(rounds):
        spec = build_task_spec(
            event=event(n),
            matched=matched,
            task_index=0,
            defaults=JobDefaults(),
            file_data={"helloservice/charts/helloservice.tgz": chart},
        )
        job_manifest(spec)
        files_configmap(spec)
    per_spec = (time.perf_counter() - start) / rounds
    print(f"spec + Job + ConfigMap for the helm task: {per_spec * 1e6:.0f} µs")

    with tempfile.TemporaryDirectory() as tmp:
        runner = LocalRunner(Path(tmp), poll_seconds=0.02, allowed_commands=["true"])
        walls = []
        for n in range(args.tasks):
            spec = build_task_spec(
                event=event(n), matched=matched, task_index=1, defaults=JobDefaults(), file_data={}
            )
            t0 = time.perf_counter()
            handle = runner.launch(spec)
            outcome = runner.wait(handle, spec)
            walls.append(time.perf_counter() - t0)
            assert outcome.succeeded, outcome.message
        walls.sort()
        print(
            f"local task `true`, launch to result ({args.tasks} sequential): median "
            f"{statistics.median(walls) * 1000:.0f} ms, max {walls[-1] * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
