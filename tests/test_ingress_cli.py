"""The CLI ingress against a real data directory: the tutorial's upstream mirror and a git ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.controller.loop import Controller
from reconciler.core.planning import Policy
from reconciler.executors.approval import ApprovalExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import Ledger
from reconciler.upstream.files import GitFiles
from reconciler.upstream.snapshot import snapshot_of
from tests.support.context import MemoryContext
from tests.support.gitserver import GitDaemon, UpstreamRepo
from tests.support.ingress import GitUpstream

DATA = Path(__file__).parent / "data" / "ingress"
BRANCH = "reconciler-ledger"


def run(data_dir: Path, *args: str, input: str | None = None) -> Result:
    env = {"RECONCILER_CONFIG": "", "RECONCILER_PROJECT": "", "USER": "alice"}
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], input=input, env=env)


def ledger(data_dir: Path) -> Ledger:
    return Ledger(data_dir / "ledger.git", BRANCH)


def recorded(data_dir: Path) -> list[KeptnEvent]:
    if not (data_dir / "ledger.git").exists():
        return []
    return list(ledger(data_dir).events())


def write(tmp_path: Path, obj: Any, name: str = "event.json") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def fake_problem(**data: Any) -> dict[str, Any]:
    event = json.loads((DATA / "remediation_trigger.json").read_text())
    event["data"].update(data)
    return event


def test_tutorial_remediation_trigger_is_recorded_and_its_context_printed(
    tutorial_data_dir: Path, tmp_path: Path
) -> None:
    result = run(tutorial_data_dir, "send", "event", "-f", str(DATA / "remediation_trigger.json"))
    assert result.exit_code == 0, result.output
    context = result.stdout.strip()
    uuid.UUID(context)
    [event] = recorded(tutorial_data_dir)
    assert event.type == "sh.keptn.event.production.remediation.triggered"
    assert event.shkeptncontext == context
    assert event.source == "https://github.com/keptn/keptn/fake-problem"
    assert event.data["problem"] == {"problemTitle": "http_response_time_seconds_main_page_sum"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        (
            {**fake_problem(), "type": "sh.keptn.event.production.remediation"},
            "'remediation' is not an event kind accepted here; expected sh.keptn.event.<stage>.<sequence>.triggered",
        ),
        ({**fake_problem(), "type": "sh.keptn.event.action.triggered"}, "dispatched by the engine only"),
        (fake_problem(stage=None), "data.stage is missing or empty"),
        (
            fake_problem(project="sockshop"),
            "unknown project 'sockshop': this reconciler serves project 'fulltour'",
        ),
        (fake_problem(service="carts"), "no service 'carts' on branch 'production' (services: helloservice)"),
        ({**fake_problem(), "type": "sh.keptn.event.staging.remediation.triggered"}, "no stage 'staging'"),
    ],
    ids=[
        "malformed-json",
        "wrong-type",
        "task-trigger",
        "missing-stage",
        "unknown-project",
        "unknown-service",
        "unknown-stage",
    ],
)
def test_bad_event_file_is_refused_clearly_and_nothing_is_recorded(
    tutorial_data_dir: Path, tmp_path: Path, content: Any, expected: str
) -> None:
    if isinstance(content, dict) and "data" in content:
        content["data"] = {k: v for k, v in content["data"].items() if v is not None}
        if "staging" in content["type"]:
            content["data"]["stage"] = "staging"
    path = write(tmp_path, content)
    result = run(tutorial_data_dir, "send", "event", "-f", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert recorded(tutorial_data_dir) == []


def test_trigger_delivery_defaults_to_the_first_stage_with_keptn_cli_payload(tutorial_data_dir: Path) -> None:
    result = run(
        tutorial_data_dir,
        "trigger",
        "delivery",
        "--service",
        "helloservice",
        "--image",
        "ghcr.io/podtato-head/podtatoserver:v0.1.1",
        "--labels",
        "image=ghcr.io/podtato-head/podtatoserver,version=v0.1.1",
        "--values",
        "replicaCount=1",
        "-o",
        "json",
    )
    assert result.exit_code == 0, result.output
    receipt = json.loads(result.stdout)
    [event] = recorded(tutorial_data_dir)
    assert receipt["keptnContext"] == event.shkeptncontext and receipt["id"] == event.id
    assert event.type == "sh.keptn.event.qa.delivery.triggered"
    assert event.data["configurationChange"] == {
        "values": {"image": "ghcr.io/podtato-head/podtatoserver:v0.1.1", "replicaCount": "1"}
    }
    assert event.data["labels"] == {"image": "ghcr.io/podtato-head/podtatoserver", "version": "v0.1.1"}


def test_trigger_for_an_unknown_service_or_sequence_records_nothing(tutorial_data_dir: Path) -> None:
    bad_service = run(tutorial_data_dir, "trigger", "delivery", "--service", "nope", "--image", "x:1")
    assert bad_service.exit_code == 1 and "no service 'nope' on branch 'qa'" in bad_service.stderr
    bad_seq = run(
        tutorial_data_dir, "trigger", "sequence", "rollout", "--stage", "qa", "--service", "helloservice"
    )
    assert bad_seq.exit_code == 1 and "no sequence 'rollout' in stage 'qa'" in bad_seq.stderr
    bad_values = run(
        tutorial_data_dir, "trigger", "delivery", "--service", "helloservice", "--image", "x", "--values", "a"
    )
    assert bad_values.exit_code == 1 and "--values 'a': expected key=value" in bad_values.stderr
    assert recorded(tutorial_data_dir) == []


def test_trigger_sequence_with_data_joins_a_given_context(tutorial_data_dir: Path) -> None:
    context = str(uuid.uuid4())
    result = run(
        tutorial_data_dir,
        "trigger",
        "sequence",
        "evaluation",
        "--stage",
        "production",
        "--service",
        "helloservice",
        "--data",
        "evaluation.timeframe=5m",
        "--context",
        context,
    )
    assert result.exit_code == 0, result.output
    [event] = recorded(tutorial_data_dir)
    assert event.shkeptncontext == context == result.stdout.strip()
    assert event.data["evaluation"] == {"timeframe": "5m"}


def test_missing_mirror_says_what_to_pass(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run(tmp_path / "empty", "send", "event", "-f", str(DATA / "remediation_trigger.json"))
    assert result.exit_code == 1
    assert "no upstream mirror" in result.stderr and "--upstream PATH_OR_URL" in result.stderr


def test_upstream_option_validates_against_a_branch_directory(tmp_path: Path, example_upstream: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    result = run(
        data,
        "send",
        "event",
        "-f",
        str(DATA / "remediation_trigger.json"),
        "--upstream",
        str(example_upstream),
    )
    assert result.exit_code == 0, result.output
    assert len(recorded(data)) == 1


# -- approvals and control, with the real control loop on the same ledger ------------------------


class _Ctx(MemoryContext):
    def __init__(self, led: Ledger) -> None:
        super().__init__()
        self.led = led

    def emit(self, event: KeptnEvent) -> None:
        self.led.append(event)


def controller(data_dir: Path) -> Controller:
    led = ledger(data_dir)
    view = snapshot_of(GitFiles(data_dir / "upstream.git"))
    return Controller(
        ledger=led,
        config=view,
        executors=[ApprovalExecutor()],
        context_factory=lambda: _Ctx(led),
        policy=Policy(),
    )


def settle(ctrl: Controller) -> None:
    for _ in range(20):
        before = len(ctrl.ledger.events())
        ctrl.step()
        ctrl.drain()
        if len(ctrl.ledger.events()) == before and not ctrl.running:
            return


def manual_approval_waiting(data_dir: Path) -> tuple[Controller, str]:
    """production.delivery with approval made manual: trigger, let the loop reach the approval."""
    shipyard_events = run(
        data_dir,
        "trigger",
        "sequence",
        "delivery",
        "--stage",
        "production",
        "--service",
        "helloservice",
        "--data",
        "result=warning",
    )
    assert shipyard_events.exit_code == 0, shipyard_events.output
    ctrl = controller(data_dir)
    settle(ctrl)
    return ctrl, shipyard_events.stdout.strip()


@pytest.fixture
def manual_data_dir(tutorial_data_dir: Path) -> Path:
    """The tutorial's upstream with production's approval set to manual for warnings (a new main commit)."""
    up = GitUpstream(tutorial_data_dir / "upstream.git")
    shipyard = up.read("main", "shipyard.yaml")
    up.commit("main", {"shipyard.yaml": shipyard.replace("warning: automatic", "warning: manual")})
    return tutorial_data_dir


def test_approve_answers_the_pending_approval_as_the_user(manual_data_dir: Path) -> None:
    ctrl, context = manual_approval_waiting(manual_data_dir)
    assert recorded(manual_data_dir)[-1].type == "sh.keptn.event.approval.started"
    result = run(manual_data_dir, "approve", context, "--stage", "production", "-m", "ship it")
    assert result.exit_code == 0, result.output
    answer = recorded(manual_data_dir)[-1]
    assert answer.type == "sh.keptn.event.approval.finished" and answer.result == "pass"
    assert answer.data["approval"] == {"approver": "alice", "decision": "approved", "via": "cli"}
    assert answer.data["message"] == "ship it"
    again = run(manual_data_dir, "decline", context, "--stage", "production")
    assert again.exit_code == 1 and "no pending approval" in again.stderr
    ctrl.ledger.refresh()
    settle(ctrl)
    assert "sh.keptn.event.je-deployment.triggered" in [e.type for e in recorded(manual_data_dir)]


def test_approve_without_a_pending_approval_says_so_and_records_nothing(tutorial_data_dir: Path) -> None:
    before = recorded(tutorial_data_dir)
    result = run(tutorial_data_dir, "approve", str(uuid.uuid4()), "--stage", "production")
    assert result.exit_code == 1
    assert "no pending approval for context" in result.stderr and "pending approvals: none" in result.stderr
    assert recorded(tutorial_data_dir) == before


def test_pause_resume_abort_are_recorded_and_refused_when_they_change_nothing(manual_data_dir: Path) -> None:
    _, context = manual_approval_waiting(manual_data_dir)
    assert run(manual_data_dir, "resume", context).stderr.startswith("error: context")  # not paused
    assert run(manual_data_dir, "pause", context).exit_code == 0
    assert "already paused" in run(manual_data_dir, "pause", context).stderr
    assert run(manual_data_dir, "resume", context).exit_code == 0
    aborted = run(manual_data_dir, "abort", context, "--stage", "production", "-m", "wrong build")
    assert aborted.exit_code == 0, aborted.output
    controls = [e for e in recorded(manual_data_dir) if e.type == "reconciler.sequence.control"]
    assert [c.data["state"] for c in controls] == ["pause", "resume", "abort"]
    assert controls[-1].data == {
        "context": context,
        "stage": "production",
        "state": "abort",
        "message": "wrong build",
    }
    ctrl = controller(manual_data_dir)
    ctrl.replay()
    settle(ctrl)
    done = [e for e in recorded(manual_data_dir) if e.type == "sh.keptn.event.production.delivery.finished"]
    assert done and done[-1].status == "aborted" and done[-1].data["message"] == "wrong build"
    after = run(manual_data_dir, "abort", context)
    assert after.exit_code == 1 and "nothing to abort" in after.stderr
    unknown = run(manual_data_dir, "pause", "no-such-context")
    assert unknown.exit_code == 1 and "no sequence has context no-such-context" in unknown.stderr


def test_the_installed_command_prints_only_the_context_on_stdout(tutorial_data_dir: Path) -> None:
    env = {**os.environ, "RECONCILER_DATA_DIR": str(tutorial_data_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "send", "event", "-f", str(DATA / "remediation_trigger.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == recorded(tutorial_data_dir)[0].shkeptncontext


def test_upstream_url_is_cloned_for_validation_and_the_clone_removed(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_daemon: GitDaemon, example_upstream: Path
) -> None:
    upstream_repo.seed_from_directory(example_upstream)
    data = tmp_path / "d"
    data.mkdir()
    url = git_daemon.url("project.git")
    sent = run(data, "send", "event", "-f", str(DATA / "remediation_trigger.json"), "--upstream", url)
    assert sent.exit_code == 0, sent.output
    assert len(recorded(data)) == 1
    assert not list(Path(tempfile.gettempdir()).glob("reconciler-upstream-*/upstream.git/HEAD"))
    gone = run(
        data, "send", "event", "-f", str(DATA / "remediation_trigger.json"), "--upstream", url + "-nope"
    )
    assert gone.exit_code == 1 and "cannot read upstream" in gone.stderr
    assert len(recorded(data)) == 1


def test_a_damaged_ledger_is_one_clear_error_and_nothing_is_recorded(tutorial_data_dir: Path) -> None:
    first = run(tutorial_data_dir, "trigger", "delivery", "--service", "helloservice", "--image", "x:1")
    assert first.exit_code == 0, first.output
    # The branch points at a commit the repository does not hold (a partly copied data dir).
    ref = tutorial_data_dir / "ledger.git" / "refs" / "heads" / BRANCH
    ref.write_text("1" * 40 + "\n")
    second = run(tutorial_data_dir, "trigger", "delivery", "--service", "helloservice", "--image", "x:2")
    assert second.exit_code == 1
    assert isinstance(second.exception, SystemExit), second.exception  # no traceback
    [line] = second.stderr.strip().splitlines()
    assert line.startswith("error: nothing recorded: ") and "111111111111" in line and "backup" in line
