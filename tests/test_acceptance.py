"""The acceptance test: `reconciler demo`, exactly as a newcomer runs it (shorter load tests).

Asserts what the tutorial promises: the good build passes qa and is promoted through
production with the event sequence of the spec's worked example; the slow build fails
the qa gate and production is not touched; the fake problem scales production to two
replicas; the ledger is the audit trail; nothing the demo started is left running.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from reconciler.core.engine_state import replay
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import Ledger

pytestmark = pytest.mark.timeout(900)
REPO_ROOT = Path(__file__).resolve().parent.parent


def survivors(marker: str) -> list[str]:
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info.get("cmdline") or [])
        except psutil.Error:
            continue
        if marker in cmdline:
            out.append(f"{proc.pid}: {cmdline[:160]}")
    return out


def tasks_of(events: list[KeptnEvent], context: str, stage: str) -> list[str]:
    """Task and sequence event types of one stage in one context, in ledger order."""
    return [
        e.type.removeprefix("sh.keptn.event.")
        for e in events
        if e.shkeptncontext == context
        and e.stage == stage
        and e.type.startswith("sh.keptn.event.")
        and ".get-sli." not in e.type
    ]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    repo_root = REPO_ROOT
    root = tmp_path_factory.mktemp("acceptance")
    workdir = root / "demo"
    # The profile's pinned Service ports are taken (by this test: it pins ports it holds in a
    # copy of the profile, rather than holding 18091/18092 that another run may be using);
    # the demo must choose its own.
    example = root / "example-upstream"
    shutil.copytree(repo_root / "example-upstream", example)
    with contextlib.ExitStack() as held:
        for stage, pinned in (("qa", "18091"), ("production", "18092")):
            holder = held.enter_context(socket.socket())
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            config = example / "_local" / stage / "helloservice" / "job" / "config.yaml"
            config.write_text(config.read_text().replace(pinned, str(holder.getsockname()[1])))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "reconciler",
                "demo",
                "--workdir",
                str(workdir),
                "--load-time",
                "15s",  # Prometheus finds a new release within ~5 s; the rest of the run feeds the gate
                "--example",
                str(example),
            ],
            capture_output=True,
            text=True,
            timeout=840,
            cwd=str(repo_root),
        )
    return workdir, proc


def test_demo_plays_the_tutorial_and_the_ledger_tells_the_story(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    workdir, proc = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((workdir / "result.json").read_text())
    events = list(Ledger(workdir / "data" / "ledger.git", "reconciler-ledger").events())
    good, slow, remediation = (result["contexts"][k] for k in ("good", "slow", "remediation"))

    # the good build, as the spec's worked example orders it (our sequence .started added)
    assert tasks_of(events, good, "qa") == [
        "qa.delivery.triggered",
        "qa.delivery.started",
        "je-deployment.triggered",
        "je-deployment.started",
        "je-deployment.finished",
        "je-test.triggered",
        "je-test.started",
        "je-test.finished",
        "evaluation.triggered",
        "evaluation.started",
        "evaluation.finished",
        "qa.delivery.finished",
    ]
    assert tasks_of(events, good, "production") == [
        "production.delivery.triggered",
        "production.delivery.started",
        "approval.triggered",
        "approval.started",
        "approval.finished",
        "je-deployment.triggered",
        "je-deployment.started",
        "je-deployment.finished",
        "je-test.triggered",
        "je-test.started",
        "je-test.finished",
        "evaluation.triggered",
        "evaluation.started",
        "evaluation.finished",
        "production.delivery.finished",
    ]
    by = {(e.shkeptncontext, e.type): e for e in events}
    trigger = by[(good, "sh.keptn.event.qa.delivery.triggered")]
    assert trigger.data["configurationChange"]["values"]["image"].endswith(":v0.1.1")
    assert trigger.gitcommitid  # commit-to-deploy pinned the commit
    prod_deploy = by[(good, "sh.keptn.event.je-deployment.triggered")]  # the last one in the context
    assert prod_deploy.stage == "production"
    assert prod_deploy.data["configurationChange"]["values"]["image"].endswith(":v0.1.1")

    qa_eval = next(
        e
        for e in events
        if e.shkeptncontext == good and e.stage == "qa" and e.type == "sh.keptn.event.evaluation.finished"
    )
    assert qa_eval.result == "pass"
    slow_eval = by[(slow, "sh.keptn.event.evaluation.finished")]
    assert slow_eval.result == "fail"
    assert "HTTP Response Time" in slow_eval.data["message"]
    # production untouched by the slow build
    assert not [e for e in events if e.shkeptncontext == slow and e.stage == "production"]
    assert by[(slow, "sh.keptn.event.qa.delivery.finished")].result == "fail"

    # remediation: scale to 2, locust, evaluation, finished
    assert tasks_of(events, remediation, "production") == [
        "production.remediation.triggered",
        "production.remediation.started",
        "get-action.triggered",
        "get-action.started",
        "get-action.finished",
        "action.triggered",
        "action.started",
        "action.finished",
        "je-test.triggered",
        "je-test.started",
        "je-test.finished",
        "evaluation.triggered",
        "evaluation.started",
        "evaluation.finished",
        "production.remediation.finished",
    ]
    action = by[(remediation, "sh.keptn.event.action.triggered")].data["action"]
    assert (action["action"], str(action["value"])) == ("scale", "2")
    assert result["production_replicas"] == 2

    # the team chat's stand-in got the news as it happened: the good build's two deliveries, the
    # slow build's failed gate naming its objective and its failed delivery, the remediation
    news = result["notifications"]
    for prefix in (
        "qa.delivery passed for helloservice",
        "production.delivery passed for helloservice",
        "Evaluation failed for helloservice in qa",
        "qa.delivery failed for helloservice",
        "Remediation started for helloservice in production",
        "production.remediation ",
    ):
        assert any(text.startswith(prefix) for text in news), (prefix, news)

    state = replay(events)
    assert [(e.stage, e.sequence, e.result) for e in state.executions.values()] == [
        ("qa", "delivery", "pass"),
        ("production", "delivery", "pass"),
        ("qa", "delivery", "fail"),
        ("production", "remediation", "pass"),
    ]
    # the summary a person reads
    assert "═══ Evaluations" in proc.stdout and "reconciler-ledger" in proc.stdout
    # the audit trail is also in the upstream, as a branch
    log = subprocess.run(
        ["git", "-C", str(workdir / "upstream"), "log", "--oneline", "reconciler-ledger"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(log) == len(events)


def test_demo_leaves_no_process_behind(demo_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    workdir, _ = demo_run
    assert survivors(str(workdir)) == []
