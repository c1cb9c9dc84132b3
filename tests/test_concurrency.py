"""Concurrency: one writer per data directory, and every way in at once while sequences run.

Both tests drive real `reconciler run` processes (`tests/support/crash.py`) on a small
upstream in a bare git repository: stage `qa` with a `delivery` whose deploy is a
local job that takes a few seconds, and a `ping` sequence (an automatic approval)
that outside callers trigger.

- A second `reconciler run` on the same data directory is refused at once, naming the
  process that holds it, and changes nothing; once the holder is killed the directory
  is free again.
- While a delivery's job runs, pings arrive at the same time from separate CLI
  processes (`reconciler trigger sequence`, `reconciler send event`, appending to the
  ledger next to the running reconciler), HTTP threads (`POST /v1/event`) and inbox
  files. Every accepted event is in the ledger exactly once (by id, and no logical
  duplicate), none is lost, and every ping sequence and the delivery finish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from reconciler.demo.prometheus import free_port
from tests.support import waiting
from tests.support.crash import (
    REPO_ROOT,
    child_environment,
    duplicates,
    ledger_events,
    ledger_records,
    start_reconciler,
    stop_everything,
    stop_gracefully,
    wait_running,
)
from tests.support.gitserver import UpstreamRepo
from tests.support.shop import approval, deploy, seed_shop, sequence, shipyard, stage, task

pytestmark = pytest.mark.timeout(300)

PROJECT = "shop"
SHIPYARD = shipyard(stage("qa", sequence("delivery", task("deploy")), sequence("ping", approval())))
JOB_CONFIG = """\
apiVersion: v2
actions:
  - name: deploy
    events:
      - name: sh.keptn.event.deploy.triggered
    tasks:
      - name: slow deploy
        image: python:3.11-slim
        cmd: ["python"]
        args: ["-c", "import time; time.sleep(4)"]
"""
TOKEN = "concurrency-test-token-1f2e3d"
STEP = 90.0
"""Seconds any one wait of these tests may take."""

CLI_TRIGGERS = 4
CLI_SENDS = 4
HTTP_THREADS = 4
HTTP_EACH = 10
INBOX_FILES = 20


def seed(repo: UpstreamRepo) -> None:
    files = {"job/config.yaml": JOB_CONFIG, "api/values.yaml": "image: api:1\n"}
    seed_shop(repo, SHIPYARD, files=files, project=PROJECT)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = STEP) -> Any:
    return waiting.wait_for(predicate, timeout, what, step=0.1)


def accepted(data_dir: Path, branch: str) -> bool:
    return any(
        e.type == "reconciler.upstream.accepted" and e.data.get("branch") == branch
        for e in ledger_events(data_dir)
    )


class Reconcilers:
    """`reconciler run` processes of one test; all stopped, and their jobs with them, at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.data_dirs: set[Path] = set()

    def start(self, upstream: Path, data_dir: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        # the job is a python one-liner, not on the default local_commands
        kwargs["env"] = {"RECONCILER_LOCAL_COMMANDS": "python", **(kwargs.get("env") or {})}
        proc = start_reconciler(upstream, data_dir, self.root / "reconciler.log", **kwargs)
        self.procs.append(proc)
        self.data_dirs.add(data_dir)
        return proc

    def log(self) -> str:
        path = self.root / "reconciler.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def close(self) -> list[str]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        left: list[str] = []
        for data_dir in self.data_dirs:
            left += stop_everything(data_dir)
        return left


@pytest.fixture
def reconcilers(tmp_path: Path) -> Iterator[Reconcilers]:
    runs = Reconcilers(tmp_path)
    yield runs
    left = runs.close()
    assert not left, f"processes left running: {left}"


def test_second_reconciler_on_the_same_data_directory_is_refused_naming_the_holder(
    reconcilers: Reconcilers, upstream_repo: UpstreamRepo, tmp_path: Path
) -> None:
    seed(upstream_repo)
    data_dir = (tmp_path / "data").resolve()
    first = reconcilers.start(upstream_repo.path, data_dir)
    assert wait_running(first, data_dir, time.monotonic() + STEP), reconcilers.log()
    wait_for(lambda: accepted(data_dir, "qa"), "the upstream to be accepted")
    before = [r.commit for r in ledger_records(data_dir)]

    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "run",
            "--upstream",
            str(upstream_repo.path),
            "--data-dir",
            str(data_dir),
            "--runner",
            "local",
            "--api-listen",
            "",
        ],
        env=child_environment(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=STEP,
    )

    assert second.returncode == 1, second.stderr
    assert f"is in use by pid {first.pid}" in second.stderr, second.stderr
    assert "--data-dir" in second.stderr  # says what to do about it
    assert first.poll() is None, "the holder must keep running"
    assert [r.commit for r in ledger_records(data_dir)] == before, "the refused process wrote to the ledger"
    status = json.loads((data_dir / "status.json").read_text())
    assert status["pid"] == first.pid

    # the lock dies with its holder: after a SIGKILL the next process takes the directory at once
    first.kill()
    first.wait(timeout=30)
    third = reconcilers.start(upstream_repo.path, data_dir)
    assert wait_running(third, data_dir, time.monotonic() + STEP), reconcilers.log()
    assert stop_gracefully(third) == 0


# ----------------------------------------------------------------------------- concurrent ingress


def ping_event(n: int, origin: str) -> dict[str, Any]:
    """An outside trigger of the ping sequence, unique by its labels (the inbox derives ids from bytes)."""
    return {
        "type": "sh.keptn.event.qa.ping.triggered",
        "specversion": "1.0",
        "source": f"https://example.com/{origin}",
        "contenttype": "application/json",
        "data": {
            "project": PROJECT,
            "stage": "qa",
            "service": "api",
            "result": "pass",
            "labels": {"origin": origin, "n": str(n)},
        },
    }


def run_cli(args: list[str], data_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args, "--data-dir", str(data_dir), "-o", "json"],
        env=child_environment(),
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=STEP,
    )
    assert done.returncode == 0, f"{args}: {done.stderr}"
    receipt: dict[str, Any] = json.loads(done.stdout)
    return receipt


def post_events(url: str, origin: str, count: int) -> list[dict[str, Any]]:
    receipts = []
    with requests.Session() as session:
        for n in range(count):
            response = session.post(
                f"{url}/v1/event", json=ping_event(n, origin), headers={"x-token": TOKEN}, timeout=STEP
            )
            assert response.status_code == 200, response.text
            receipts.append(response.json())
    return receipts


def drop_inbox_files(inbox: Path, count: int) -> None:
    for n in range(count):
        tmp = inbox / f".ping-{n}.json"
        tmp.write_text(json.dumps(ping_event(n, "inbox")))
        os.replace(tmp, inbox / f"ping-{n}.json")


@dataclass
class Storm:
    """One storm's outcome: how many events the ingresses accepted, and what went wrong."""

    sent: int = 0
    recorded_once: int = 0
    problems: list[str] = field(default_factory=list)


def storm(reconcilers: Reconcilers, root: Path) -> Storm:
    """Start a reconciler and a delivery, fire every ingress at once, check the ledger after."""
    repo = UpstreamRepo(root / "upstream.git")
    seed(repo)
    data_dir = (root / "data").resolve()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = reconcilers.start(
        repo.path, data_dir, api_listen=f"127.0.0.1:{port}", env={"RECONCILER_API_TOKEN": TOKEN}
    )
    assert wait_running(proc, data_dir, time.monotonic() + STEP), reconcilers.log()
    wait_for(lambda: accepted(data_dir, "qa"), "the upstream to be accepted")

    # a delivery whose job runs through the whole storm
    deploy(repo, "2.0")
    wait_for(
        lambda: any(e.type == "sh.keptn.event.deploy.started" for e in ledger_events(data_dir)),
        "the deploy job to start",
    )
    files = root / "events"
    files.mkdir()
    for n in range(CLI_SENDS):
        (files / f"send-{n}.json").write_text(json.dumps(ping_event(n, "cli-send")))

    Receipts = list[dict[str, Any]]

    def cli_trigger(n: int) -> Receipts:
        ping = ["trigger", "sequence", "ping", "--stage", "qa", "--service", "api", "--data", "result=pass"]
        return [run_cli([*ping, "--labels", f"origin=cli-trigger,n={n}"], data_dir)]

    def cli_send(n: int) -> Receipts:
        return [run_cli(["send", "event", "-f", str(files / f"send-{n}.json")], data_dir)]

    def http(t: int) -> Receipts:
        return post_events(url, f"http-{t}", HTTP_EACH)

    def inbox() -> Receipts:
        drop_inbox_files(data_dir / "inbox", INBOX_FILES)
        return []  # the inbox writes its receipts next to the files it took

    jobs: list[Callable[[], Receipts]] = [
        *(partial(cli_trigger, n) for n in range(CLI_TRIGGERS)),
        *(partial(cli_send, n) for n in range(CLI_SENDS)),
        *(partial(http, t) for t in range(HTTP_THREADS)),
        inbox,
    ]
    gate = threading.Barrier(len(jobs))

    def at_once(job: Callable[[], Receipts]) -> Receipts:
        gate.wait(timeout=STEP)
        return job()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(at_once, job) for job in jobs]
        receipts: Receipts = [r for f in futures for r in f.result(timeout=3 * STEP)]

    inbox_receipts = wait_for(
        lambda: (
            found
            if len(found := sorted((data_dir / "inbox" / "done").glob("*.receipt.json"))) == INBOX_FILES
            else None
        ),
        "every inbox file to be taken",
    )
    receipts += [json.loads(p.read_text()) for p in inbox_receipts]
    out = Storm(sent=len(receipts))
    expected = CLI_TRIGGERS + CLI_SENDS + HTTP_THREADS * HTTP_EACH + INBOX_FILES
    if out.sent != expected:
        out.problems.append(f"{out.sent} receipts for {expected} events sent")
    if len({r["id"] for r in receipts}) != out.sent:
        out.problems.append("two ingresses were given the same event id")
    contexts = {r["keptnContext"] for r in receipts}
    if len(contexts) != out.sent:
        out.problems.append("two pings were given the same context")
    if list((data_dir / "inbox" / "rejected").iterdir()):
        out.problems.append("inbox files were rejected")
    if [p for p in (data_dir / "inbox").iterdir() if p.is_file()]:
        out.problems.append("inbox files left behind")

    # every ping runs to its end, and the delivery too
    def all_finished() -> bool:
        evs = ledger_events(data_dir)
        finished = {e.shkeptncontext for e in evs if e.type == "sh.keptn.event.qa.ping.finished"}
        return contexts <= finished and any(e.type == "sh.keptn.event.qa.delivery.finished" for e in evs)

    wait_for(all_finished, "every ping sequence and the delivery to finish")
    code = stop_gracefully(proc)
    if code != 0:
        out.problems.append(f"reconciler exited with {code} on SIGTERM")

    records = ledger_records(data_dir)
    out.problems += duplicates(records)
    recorded = [r.event for r in records if r.event is not None]
    ids = Counter(e.id for e in recorded)
    out.recorded_once = sum(1 for r in receipts if ids[r["id"]] == 1)
    missing = [r["id"] for r in receipts if r["id"] not in ids]
    if missing:
        out.problems.append(f"accepted but not in the ledger: {missing}")
    triggers = [e for e in recorded if e.type == "sh.keptn.event.qa.ping.triggered"]
    if len(triggers) != out.sent:
        out.problems.append(f"{len(triggers)} ping triggers recorded for {out.sent} accepted")
    for context in sorted(contexts):
        story = [e for e in recorded if e.shkeptncontext == context]
        kinds = [e.type.removeprefix("sh.keptn.event.") for e in story]
        if kinds != PING_STORY or story[-1].result != "pass":
            out.problems.append(f"context {context}: {kinds}, result {story[-1].result if story else None}")
    types = [e.type for e in recorded]
    if types.index("sh.keptn.event.qa.ping.triggered") > types.index("sh.keptn.event.deploy.finished"):
        out.problems.append("the storm came only after the delivery's job: this run tested less than it says")
    delivery = [e.result for e in recorded if e.type == "sh.keptn.event.qa.delivery.finished"]
    if delivery != ["pass"]:
        out.problems.append(f"delivery results {delivery}, expected one pass")
    launches = (data_dir / "jobs" / "launches.jsonl").read_text().splitlines()
    if len(launches) != 1:
        out.problems.append(f"the deploy job was launched {len(launches)} times")
    return out


PING_STORY = [
    "qa.ping.triggered",
    "qa.ping.started",
    "approval.triggered",
    "approval.started",
    "approval.finished",
    "qa.ping.finished",
]


def test_events_from_cli_processes_http_and_inbox_at_once_are_each_recorded_once_while_sequences_run(
    reconcilers: Reconcilers, tmp_path: Path
) -> None:
    result = storm(reconcilers, tmp_path / "storm")
    assert not result.problems, "\n".join(result.problems)
    assert (
        result.recorded_once
        == result.sent
        == CLI_TRIGGERS + CLI_SENDS + HTTP_THREADS * HTTP_EACH + INBOX_FILES
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_ten_ingress_storms_lose_and_duplicate_nothing(reconcilers: Reconcilers, tmp_path: Path) -> None:
    count = max(10, int(os.environ.get("RECONCILER_STORMS", "10")))
    rows: list[dict[str, Any]] = []
    for n in range(count):
        try:
            result = storm(reconcilers, tmp_path / f"storm-{n:02d}")
        except AssertionError as exc:  # a wait that timed out: a failed storm, keep going
            result = Storm(problems=[str(exc)])
        finally:
            left = reconcilers.close()
            reconcilers.procs.clear()
            reconcilers.data_dirs.clear()
        if left:
            result.problems.append(f"processes left running: {left}")
        rows.append(
            {
                "storm": n,
                "sent": result.sent,
                "recorded_once": result.recorded_once,
                "problems": result.problems,
            }
        )
        print(
            f"storm {n}: {result.recorded_once}/{result.sent} recorded once",
            *result.problems,
            sep="\n    ",
            flush=True,
        )
    report = {
        "command": "RECONCILER_LONG_TESTS=1 python -m pytest tests/test_concurrency.py -q -s -k ten_ingress",
        "storms": count,
        "passed": sum(1 for r in rows if not r["problems"]),
        "events_sent": sum(int(r["sent"]) for r in rows),
        "events_recorded_once": sum(int(r["recorded_once"]) for r in rows),
        "per_storm": {
            "cli_trigger_processes": CLI_TRIGGERS,
            "cli_send_processes": CLI_SENDS,
            "http_threads": HTTP_THREADS,
            "posts_per_thread": HTTP_EACH,
            "inbox_files": INBOX_FILES,
        },
        "rows": rows,
    }
    path = Path(
        os.environ.get(
            "RECONCILER_STORM_REPORT", str(REPO_ROOT / "docs" / "reliability" / "ingress-storms.json")
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"ingress storms: {report['passed']}/{count} passed, {report['events_recorded_once']}/"
        f"{report['events_sent']} events recorded exactly once; report {path}",
        flush=True,
    )
    assert report["passed"] == count, [r for r in rows if r["problems"]]
