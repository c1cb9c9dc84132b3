"""Tasks waiting for an executor's worker: a timed-out one never runs, quick ones never wait behind jobs.

Found with 200 services in one commit and a 30 s start deadline (issue 20): tasks sat in
the shared 16-thread pool, the engine finished them `StartDeadlineExceeded` ("no executor
answered"), and 195 were launched afterwards, deploying behind sequences already reported
`timedOut`; approvals and evaluations queued behind the same jobs. Real parts: the app with
its git ledger, the local runner's processes, jobs that block until the test lets them go.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.adapters.local_runner import LocalRunner
from reconciler.app import App
from reconciler.controller.loop import Controller
from reconciler.core.engine_state import REASON_START_DEADLINE
from reconciler.core.planning import Policy
from reconciler.executors.approval import ApprovalExecutor
from reconciler.executors.jobs import JobExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.shipyard import load_shipyard
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.context import MemoryContext
from tests.support.engine import StaticConfig, trigger
from tests.support.gitserver import UpstreamRepo
from tests.support.memledger import MemoryLedger

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


def job_config(go: Path) -> str:
    """A deploy that runs until the test creates `go`."""
    task = {
        "name": "deploy",
        "image": "alpine:3",
        "cmd": ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.1; done; echo deployed"],
        "maxPollDuration": 120,
    }
    action = {"name": "deploy", "events": [{"name": "sh.keptn.event.deploy.triggered"}], "tasks": [task]}
    return yaml.safe_dump({"apiVersion": "v2", "actions": [action]})


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(120)
def test_a_task_timed_out_while_queued_for_a_worker_is_never_launched(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    go = tmp_path / "go"
    services = [f"svc{i}" for i in range(6)]
    upstream_repo.commit("main", {"shipyard.yaml": SHIPYARD, "metadata.yaml": "projectName: shop\n"})
    first = {"job/config.yaml": job_config(go)}
    first.update({f"{s}/values.yaml": "image: web:1.0\n" for s in services})
    upstream_repo.commit("qa", first, base="main")  # adopted, not deployed
    settings = Settings(
        upstream=str(upstream_repo.path),
        data_dir=tmp_path / "data",
        runner="local",
        local_commands=["sh"],
        job_workers=2,
        task_start_deadline="3s",
        poll_interval=0.5,
        api_listen="",
        ledger_push="never",
    )
    app = App(settings, serve_api=False).start()
    threading.Thread(target=app.run_forever, daemon=True).start()
    try:
        upstream_repo.commit(
            "qa", {f"{s}/values.yaml": "image: web:2.0\n" for s in services}, "one commit, six services"
        )

        def events(type_: str) -> list[KeptnEvent]:
            return [e for e in app.ledger.events() if e.type == type_]

        def timed_out() -> list[KeptnEvent]:
            return [
                e
                for e in events("sh.keptn.event.deploy.finished")
                if (e.data.get("reconciler") or {}).get("reason") == REASON_START_DEADLINE
            ]

        wait_for(lambda: len(timed_out()) == 4, "the four tasks waiting for a worker to time out")
        go.touch()  # the two running deploys finish; their workers now pick up the four timed out
        wait_for(lambda: len(events("sh.keptn.event.qa.delivery.finished")) == 6, "every delivery to finish")
        app.controller.drain()
    finally:
        go.touch()
        app.stop(grace=5)

    launches = [
        json.loads(line) for line in (settings.data_dir / "jobs" / "launches.jsonl").read_text().splitlines()
    ]
    started = {e.triggeredid for e in events("sh.keptn.event.deploy.started")}
    expired = {e.triggeredid for e in timed_out()}
    assert len(launches) == 2 and {line["event"] for line in launches} == started
    assert not started & expired  # no task got a .started after the engine gave up on it
    for event in timed_out():
        message = event.data["message"]
        assert "it was queued behind " in message and "for job-executor-service (2 at a time)" in message, (
            message
        )
        assert "did not start within 3s; it will not run" in message
    ahead = sorted(int(e.data["message"].split("queued behind ")[1].split()[0]) for e in timed_out())
    assert ahead == [2, 3, 4, 5]
    results = sorted(e.data["status"] for e in events("sh.keptn.event.qa.delivery.finished"))
    assert results.count("succeeded") == 2


@pytest.mark.timeout(90)
def test_an_approval_does_not_wait_behind_long_jobs(tmp_path: Path) -> None:
    go = tmp_path / "go"
    root = tmp_path / "upstream"
    (root / "qa" / "job").mkdir(parents=True)
    (root / "qa" / "job" / "config.yaml").write_text(job_config(go))
    (root / "main").mkdir()
    shipyard = SHIPYARD + (
        "        - name: release\n          tasks:\n            - name: approval\n"
        "              properties: {pass: automatic, warning: automatic}\n"
    )
    settings = Settings(data_dir=tmp_path / "data", runner="local")
    ledger = MemoryLedger()

    class Context(MemoryContext):
        def emit(self, event: KeptnEvent) -> None:
            ledger.append(event)

    runner = LocalRunner(settings.data_dir, poll_seconds=0.05, allowed_commands=["sh"])
    ctrl = Controller(
        ledger=ledger,
        config=StaticConfig({"m": load_shipyard(shipyard)}, "m"),
        executors=[ApprovalExecutor(), JobExecutor(runner)],
        context_factory=lambda: Context(files=DirectoryFiles(root), settings=settings),
        policy=Policy(),
        max_workers=2,
    )
    loop = threading.Thread(target=ctrl.run_forever, kwargs={"idle": 0.2}, daemon=True)
    loop.start()
    try:
        for i in range(3):  # two jobs run, the third waits for a worker
            ledger.append(trigger("qa", "delivery", service=f"svc{i}", context=f"ctx-{i}"))
        wait_for(lambda: len(runner.journal.launches()) == 2, "two deploys to run")
        ledger.append(trigger("qa", "release", service="svc9", context="ctx-9", result="pass"))

        approved = wait_for(
            lambda: [e for e in ledger.events() if e.type == "sh.keptn.event.approval.finished"],
            "the approval to be answered while both job workers are busy",
            timeout=30,
        )
        assert approved[0].result == "pass"
        assert len(runner.journal.launches()) == 2  # the jobs still hold their workers
        assert not go.exists()
    finally:
        go.touch()
        wait_for(lambda: len(runner.journal.launches()) == 3, "the third deploy to run", timeout=60)
        ctrl.stop()
        loop.join(timeout=10)
        ctrl.drain()
