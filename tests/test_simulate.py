"""`reconciler simulate`: the real engine on a shipyard with scripted outcomes, through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = REPO / "example-upstream" / "main" / "shipyard.yaml"
EXAMPLES = REPO / "example-upstream" / "_simulate"

TWO_STAGES = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: shop}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - {name: deployment}
            - {name: test}
            - {name: evaluation}
    - name: production
      sequences:
        - name: delivery
          triggeredOn: [{event: qa.delivery.finished}]
          tasks:
            - {name: approval, properties: {pass: automatic, warning: manual}}
            - {name: deployment}
        - name: rollback
          triggeredOn: [{event: production.delivery.finished, selector: {match: {result: fail}}}]
          tasks: [{name: rollback}]
    - name: canary
      sequences:
        - name: probe
          triggeredOn: [{event: qa.delivery.finished, selector: {match: {evaluation.result: warning}}}]
          tasks: [{name: probe}]
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["simulate", *args], catch_exceptions=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def entry(task: str, *results: str, started_by: int | None = None, **extra: Any) -> str:
    finished = ", ".join(f"{{result: {r}, status: succeeded}}" for r in results)
    started = f"\n  started_by: {started_by}" if started_by is not None else ""
    more = "".join(f"\n  {k}: {v}" for k, v in extra.items())
    return f"- task: {task}{started}{more}\n  finished: [{finished}]\n"


def simulate_json(
    tmp_path: Path, shipyard: str | Path, trigger: str, outcomes: str, *extra: str
) -> dict[str, Any]:
    shipyard_path = shipyard if isinstance(shipyard, Path) else write(tmp_path, "shipyard.yaml", shipyard)
    outcomes_path = write(tmp_path, "outcomes.yaml", outcomes or "[]\n")
    res = invoke(
        "--shipyard",
        str(shipyard_path),
        "--trigger",
        trigger,
        "--outcomes",
        str(outcomes_path),
        "--output",
        "json",
        *extra,
    )
    assert res.exit_code == 0, res.output
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def runs(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f"{s['stage']}.{s['sequence']}", s["state"], s["result"]) for s in result["sequences"]]


def tutorial(example: str, trigger: str = "qa.delivery") -> dict[str, Any]:
    res = invoke(
        "--shipyard",
        str(TUTORIAL),
        "--trigger",
        trigger,
        "--service",
        "helloservice",
        "--outcomes",
        str(EXAMPLES / example),
        "--output",
        "json",
    )
    assert res.exit_code == 0, res.output
    data: dict[str, Any] = json.loads(res.stdout)
    return data


# --- the tutorial ---------------------------------------------------------------------------


def test_tutorial_qa_pass_runs_the_production_delivery() -> None:
    out = tutorial("qa-pass.yaml")
    assert runs(out) == [
        ("qa.delivery", "finished", "pass"),
        ("production.delivery", "finished", "pass"),
    ]
    events = out["events"]
    assert events[:4] == [
        "sh.keptn.event.qa.delivery.triggered",
        "sh.keptn.event.qa.delivery.started",
        "sh.keptn.event.je-deployment.triggered",
        "sh.keptn.event.je-deployment.started",
    ]
    qa_done = events.index("sh.keptn.event.qa.delivery.finished")
    assert events[qa_done + 1 : qa_done + 6] == [
        "sh.keptn.event.production.delivery.triggered",
        "sh.keptn.event.production.delivery.started",
        "sh.keptn.event.approval.triggered",
        "sh.keptn.event.approval.started",
        "sh.keptn.event.approval.finished",
    ]
    assert events[-1] == "sh.keptn.event.production.delivery.finished"
    assert out["waiting_for"] is None
    assert out["outcomes_used"] == 6
    assert [n["kind"] for n in out["notes"]] == ["approval"]


def test_tutorial_qa_fail_triggers_nothing_more() -> None:
    out = tutorial("qa-fail.yaml")
    assert runs(out) == [("qa.delivery", "finished", "fail")]
    assert out["events"][-1] == "sh.keptn.event.qa.delivery.finished"
    assert not any(".production." in e or "approval" in e for e in out["events"])
    assert out["waiting_for"] is None


def test_tutorial_remediation_retriggers_itself_while_its_evaluation_fails() -> None:
    out = tutorial("remediation-fail-then-warning.yaml", "production.remediation")
    assert runs(out) == [
        ("production.remediation", "finished", "fail"),
        ("production.remediation", "finished", "warning"),
    ]
    assert out["events"].count("sh.keptn.event.production.remediation.triggered") == 2
    assert out["events"].count("sh.keptn.event.get-action.triggered") == 2
    assert out["waiting_for"] is None


def test_tutorial_remediation_ends_when_its_evaluation_is_a_warning() -> None:
    out = tutorial("remediation-warning.yaml", "production.remediation")
    assert runs(out) == [("production.remediation", "finished", "warning")]
    assert out["events"].count("sh.keptn.event.production.remediation.triggered") == 1


# --- sequencing rules (spec 2.5-2.8) ----------------------------------------------------------


def test_no_selector_chains_on_pass_and_warning_but_not_on_fail(tmp_path: Path) -> None:
    qa = entry("deployment", "pass") + entry("test", "pass")
    for result, chained in (("pass", True), ("warning", True), ("fail", False)):
        out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", qa + entry("evaluation", result))
        assert ("sh.keptn.event.production.delivery.triggered" in out["events"]) is chained, result
    sy = write(tmp_path, "s.yaml", TWO_STAGES)
    for result, expected in (
        ("pass", [{"stage": "production", "sequence": "delivery"}]),
        (
            "warning",
            [{"stage": "production", "sequence": "delivery"}, {"stage": "canary", "sequence": "probe"}],
        ),
        ("fail", []),
    ):
        res = invoke(
            "--next", "--shipyard", str(sy), "--finished", "qa.delivery", "--result", result, "-o", "json"
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout) == {"triggered": expected}


def test_result_selector_starts_rollback_only_when_production_fails(tmp_path: Path) -> None:
    qa = entry("deployment", "pass") + entry("test", "pass") + entry("evaluation", "pass")
    ok = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", qa + entry("deployment", "pass"))
    assert "sh.keptn.event.production.rollback.triggered" not in ok["events"]
    bad = simulate_json(
        tmp_path, TWO_STAGES, "qa.delivery", qa + entry("deployment", "fail") + entry("rollback", "pass")
    )
    assert runs(bad)[-2:] == [
        ("production.delivery", "finished", "fail"),
        ("production.rollback", "finished", "pass"),
    ]


def test_task_result_selector_compares_the_last_task_that_ran(tmp_path: Path) -> None:
    # canary.probe listens for evaluation.result: warning; a warning from deployment does not count
    # because the sequence's last task is the evaluation, which passed.
    qa = entry("deployment", "warning") + entry("test", "pass") + entry("evaluation", "pass")
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", qa + entry("deployment", "pass"))
    assert "sh.keptn.event.canary.probe.triggered" not in out["events"]
    warned = entry("deployment", "pass") + entry("test", "pass") + entry("evaluation", "warning")
    pending = "- task: approval\n  finished: []\n"  # production's manual approval stays open
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", warned + pending + entry("probe", "pass"))
    assert ("canary.probe", "finished", "pass") in runs(out)
    # the tutorial's remediation selector names evaluation: a failed get-action ends the loop
    out = simulate_json(tmp_path, TUTORIAL, "production.remediation", entry("get-action", "fail"))
    assert runs(out) == [("production.remediation", "finished", "fail")]
    sy = str(TUTORIAL)
    for last, expected in (("evaluation", 1), ("get-action", 0)):
        res = invoke(
            "--next", "--shipyard", sy, "--finished", "production.remediation", "--result", "fail",
            "--last-task", last, "-o", "json",
        )  # fmt: skip
        assert len(json.loads(res.stdout)["triggered"]) == expected


def test_two_executors_on_one_task_the_worst_result_wins(tmp_path: Path) -> None:
    two = (
        entry("deployment", "pass", "warning", started_by=2)
        + entry("test", "pass")
        + entry("evaluation", "pass")
    )
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", two)
    assert out["events"][2:7] == [
        "sh.keptn.event.deployment.triggered",
        "sh.keptn.event.deployment.started",
        "sh.keptn.event.deployment.started",
        "sh.keptn.event.deployment.finished",
        "sh.keptn.event.deployment.finished",
    ]
    assert runs(out)[0] == ("qa.delivery", "finished", "pass")  # the last task's result, not the worst
    failing = entry("deployment", "pass", "fail", started_by=2) + entry("test", "pass")
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", failing)
    assert runs(out) == [("qa.delivery", "finished", "fail")]
    assert "sh.keptn.event.test.triggered" not in out["events"]
    assert any(n["kind"] == "unused-outcomes" for n in out["notes"])


def test_a_failed_task_stops_its_sequence_and_a_warning_does_not(tmp_path: Path) -> None:
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", entry("deployment", "fail"))
    assert out["events"][-2:] == ["sh.keptn.event.deployment.finished", "sh.keptn.event.qa.delivery.finished"]
    assert runs(out) == [("qa.delivery", "finished", "fail")]
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", entry("deployment", "warning"))
    assert out["events"][-1] == "sh.keptn.event.test.triggered"
    assert out["waiting_for"] == {"stage": "qa", "sequence": "delivery", "task": "test"}


def test_an_answer_without_result_fails_the_task(tmp_path: Path) -> None:
    script = '- task: deployment\n  finished: [{result: "", status: succeeded}]\n'
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", script)
    assert runs(out) == [("qa.delivery", "finished", "fail")]


# --- time: deadlines and delays ----------------------------------------------------------------


def test_nobody_answering_times_out_at_the_start_deadline_and_chains_nothing(tmp_path: Path) -> None:
    qa = entry("deployment", "pass") + "- task: test\n  started_by: 0\n"
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", qa)
    assert runs(out) == [("qa.delivery", "timedOut", "fail")]
    assert out["events"][-2:] == ["sh.keptn.event.test.finished", "sh.keptn.event.qa.delivery.finished"]
    (note,) = out["notes"]
    assert note["kind"] == "timeout" and note["task"] == "test" and "10m" in note["message"]
    assert not any("production" in e for e in out["events"])
    text = invoke(
        "--shipyard", str(tmp_path / "shipyard.yaml"), "--trigger", "qa.delivery",
        "--outcomes", str(tmp_path / "outcomes.yaml"),
    ).stdout  # fmt: skip
    timeout_line = next(line for line in text.splitlines() if "test.finished" in line)
    assert timeout_line.split()[0] == "+10m" and "fail/errored" in timeout_line
    assert "! timeout:" in text


def test_a_per_task_start_deadline_in_the_shipyard_wins_over_the_default(tmp_path: Path) -> None:
    quick = TWO_STAGES.replace(
        "            - {name: test}\n", "            - {name: test, startDeadline: 90s}\n"
    )
    out = simulate_json(
        tmp_path, quick, "qa.delivery", entry("deployment", "pass") + "- task: test\n  started_by: 0\n"
    )
    (note,) = out["notes"]
    assert note["kind"] == "timeout" and "within 90s" in note["message"]
    res = invoke(
        "--shipyard", str(tmp_path / "shipyard.yaml"), "--trigger", "qa.delivery",
        "--outcomes", str(tmp_path / "outcomes.yaml"),
    )  # fmt: skip
    assert next(line for line in res.stdout.splitlines() if "test.finished" in line).split()[0] == "+1m30s"


def test_an_executor_still_running_hits_the_run_deadline_from_the_settings(tmp_path: Path) -> None:
    script = "- task: deployment\n  started_by: 2\n  finished: [{source: helm, result: pass}]\n"
    shipyard = write(tmp_path, "shipyard.yaml", TWO_STAGES)
    outcomes = write(tmp_path, "outcomes.yaml", script)
    config = write(tmp_path, "reconciler.yaml", "task_run_deadline: 45m\n")
    res = invoke(
        "--shipyard", str(shipyard), "--trigger", "qa.delivery", "--outcomes", str(outcomes),
        "--config", str(config),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    line = next(
        line for line in res.stdout.splitlines() if "deployment.finished" in line and "errored" in line
    )
    assert line.split()[0] == "+45m"
    assert "still running: job-executor-service-2" in res.stdout
    assert "qa.delivery                      timedOut" in res.stdout


def test_a_triggered_after_delay_moves_the_simulated_clock(tmp_path: Path) -> None:
    delayed = TWO_STAGES.replace(
        "            - {name: test}\n", "            - {name: test, triggeredAfter: 5m}\n"
    )
    shipyard = write(tmp_path, "shipyard.yaml", delayed)
    outcomes = write(tmp_path, "outcomes.yaml", entry("deployment", "pass"))
    res = invoke("--shipyard", str(shipyard), "--trigger", "qa.delivery", "--outcomes", str(outcomes))
    assert res.exit_code == 0, res.output
    line = next(line for line in res.stdout.splitlines() if "test.triggered" in line)
    assert line.split()[0] == "+5m"
    assert "Waiting for: task test of qa.delivery" in res.stdout


# --- approvals ---------------------------------------------------------------------------------

QA_WARNING = entry("deployment", "pass") + entry("test", "pass") + entry("evaluation", "warning")


def test_a_manual_approval_waits_when_no_entry_answers_it(tmp_path: Path) -> None:
    out = simulate_json(tmp_path, TWO_STAGES, "qa.delivery", QA_WARNING)
    production = [s for s in out["sequences"] if s["stage"] == "production"]
    assert production == [
        {"stage": "production", "sequence": "delivery", "service": "service", "state": "waitingForApproval",
         "result": "", "status": ""}
    ]  # fmt: skip
    assert out["waiting_for"] == {"stage": "production", "sequence": "delivery", "task": "approval"}
    assert out["events"][-1] == "sh.keptn.event.approval.started"
    # the parallel canary.probe (dispatched after the approval) was not answered: the script ended
    assert ("canary.probe", "started", "") in runs(out)
    shipyard = tmp_path / "shipyard.yaml"
    outcomes = write(tmp_path, "outcomes.yaml", QA_WARNING + entry("probe", "pass"))
    res = invoke("--shipyard", str(shipyard), "--trigger", "qa.delivery", "--outcomes", str(outcomes))
    assert res.exit_code == 2
    assert "this approval is manual (strategy for result 'warning' is manual)" in res.stderr


def test_a_manual_approval_entry_decides_and_a_decline_starts_the_rollback(tmp_path: Path) -> None:
    decline = "- task: approval\n  finished: [{source: alice, result: fail}]\n"
    out = simulate_json(
        tmp_path,
        TWO_STAGES,
        "qa.delivery",
        QA_WARNING + decline + entry("probe", "pass") + entry("rollback", "pass"),
    )
    assert {("production.delivery", "finished", "fail"), ("production.rollback", "finished", "pass")} <= set(
        runs(out)
    )
    assert (
        "sh.keptn.event.deployment.triggered"
        not in out["events"][out["events"].index("sh.keptn.event.approval.triggered") :]
    )
    approve = "- task: approval\n  finished: [{result: pass}]\n"
    out = simulate_json(
        tmp_path,
        TWO_STAGES,
        "qa.delivery",
        QA_WARNING + approve + entry("probe", "pass") + entry("deployment", "pass"),
    )
    assert ("production.delivery", "finished", "pass") in runs(out)


def test_an_automatic_approval_takes_no_entry_and_a_stray_one_is_explained(tmp_path: Path) -> None:
    qa = entry("deployment", "pass") + entry("test", "pass") + entry("evaluation", "pass")
    shipyard = write(tmp_path, "shipyard.yaml", TWO_STAGES)
    outcomes = write(tmp_path, "outcomes.yaml", qa + "- task: approval\n  finished: [{result: pass}]\n")
    res = invoke("--shipyard", str(shipyard), "--trigger", "qa.delivery", "--outcomes", str(outcomes))
    assert res.exit_code == 2
    assert f"{outcomes}:7:9:" in res.stderr
    assert "[3].task" in res.stderr
    assert "'approval'" in res.stderr and "'deployment'" in res.stderr
    assert "answered automatically" in res.stderr


# --- the loop cap ------------------------------------------------------------------------------


def test_the_loop_cap_ends_a_remediation_that_never_recovers(tmp_path: Path) -> None:
    round_ = (
        entry("get-action", "pass")
        + entry("action", "pass")
        + entry("je-test", "pass")
        + entry("evaluation", "fail")
    )
    out = simulate_json(tmp_path, TUTORIAL, "production.remediation", round_ * 5, "--max-iterations", "2")
    assert out["events"].count("sh.keptn.event.production.remediation.triggered") == 3
    assert out["events"].count("sh.keptn.event.get-action.triggered") == 2
    assert [s["status"] for s in out["sequences"]] == ["succeeded", "succeeded", "errored"]
    cap = [n for n in out["notes"] if n["kind"] == "iteration-limit"]
    assert len(cap) == 1 and "limit 2" in cap[0]["message"]
    assert out["outcomes_used"] == 8
    assert out["notes"][-1]["kind"] == "unused-outcomes"


# --- outcomes running out, names ---------------------------------------------------------------


def test_when_outcomes_run_out_the_simulation_stops_where_the_engine_waits(tmp_path: Path) -> None:
    out = simulate_json(
        tmp_path, TUTORIAL, "qa.delivery", entry("je-deployment", "pass"), "--service", "helloservice"
    )
    assert out["events"][-1] == "sh.keptn.event.je-test.triggered"
    assert out["waiting_for"] == {"stage": "qa", "sequence": "delivery", "task": "je-test"}
    assert runs(out) == [("qa.delivery", "started", "")]
    assert out["service"] == "helloservice" and out["project"] == "shipyard-fulltour"


def test_project_comes_from_the_flag_then_the_shipyard_then_a_default(tmp_path: Path) -> None:
    assert simulate_json(tmp_path, TWO_STAGES, "qa.delivery", "[]")["project"] == "shop"
    assert simulate_json(tmp_path, TWO_STAGES, "qa.delivery", "[]", "--project", "p2")["project"] == "p2"
    anonymous = TWO_STAGES.replace("metadata: {name: shop}\n", "")
    out = simulate_json(tmp_path, anonymous, "qa.delivery", entry("deployment", "fail"))
    assert out["project"] == "simulation" and out["service"] == "service"
    assert runs(out) == [("qa.delivery", "finished", "fail")]


# --- bad input ---------------------------------------------------------------------------------


def bad(tmp_path: Path, shipyard: str, trigger: str, outcomes: str) -> Result:
    res = invoke(
        "--shipyard", str(write(tmp_path, "shipyard.yaml", shipyard)), "--trigger", trigger,
        "--outcomes", str(write(tmp_path, "outcomes.yaml", outcomes)),
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    return res


def test_an_unparsable_shipyard_is_reported_with_file_and_line(tmp_path: Path) -> None:
    broken = TWO_STAGES.replace("    - name: production\n", "    - name: Production!\n")
    res = bad(tmp_path, broken, "qa.delivery", "[]")
    assert "shipyard.yaml:13:13:" in res.stderr and "spec.stages[1].name" in res.stderr
    res = bad(tmp_path, "spec: [unclosed\n", "qa.delivery", "[]")
    assert "shipyard.yaml:" in res.stderr and "YAML syntax error" in res.stderr


def test_an_unknown_stage_or_sequence_in_trigger_is_rejected(tmp_path: Path) -> None:
    res = bad(tmp_path, TWO_STAGES, "staging.delivery", "[]")
    assert "no stage named 'staging'" in res.stderr and "qa, production, canary" in res.stderr
    res = bad(tmp_path, TWO_STAGES, "qa.hotfix", "[]")
    assert "stage 'qa' has no sequence named 'hotfix'" in res.stderr and "delivery" in res.stderr
    res = CliRunner().invoke(
        cli, ["simulate", "--shipyard", str(tmp_path / "shipyard.yaml"), "--trigger", "qa", "--outcomes",
              str(tmp_path / "outcomes.yaml")],
    )  # fmt: skip
    assert res.exit_code == 2 and "expected STAGE.SEQUENCE" in res.stderr


def test_an_outcomes_file_that_is_not_a_list_of_entries_is_rejected(tmp_path: Path) -> None:
    res = bad(tmp_path, TWO_STAGES, "qa.delivery", "task: deployment\n")
    assert "outcomes.yaml:1:1:" in res.stderr and "expected a list of outcome entries" in res.stderr
    res = bad(tmp_path, TWO_STAGES, "qa.delivery", entry("deployment", "pass") + "- finished: []\n")
    assert "outcomes.yaml:3:3: [1].task: required field is missing" in res.stderr
    res = bad(tmp_path, TWO_STAGES, "qa.delivery", "- task: deployment\n  finished: [{result: passed}]\n")
    assert "[0].finished[0].result" in res.stderr and "'pass'" in res.stderr
    res = bad(
        tmp_path,
        TWO_STAGES,
        "qa.delivery",
        "- task: deployment\n  finished: [{result: pass}, {result: pass}]\n",
    )
    assert "[0]" in res.stderr and "started_by: 2" in res.stderr
    res = bad(tmp_path, TWO_STAGES, "qa.delivery", "- task: deployment\n  finsihed: []\n")
    assert "[0].finsihed: unknown field" in res.stderr


def test_an_entry_for_another_task_names_both_tasks_and_the_entry(tmp_path: Path) -> None:
    res = bad(tmp_path, TWO_STAGES, "qa.delivery", entry("deployment", "pass") + entry("evaluation", "pass"))
    assert "outcomes.yaml:3:9: [1].task:" in res.stderr
    assert "entry [1] is for task 'evaluation'" in res.stderr
    assert "dispatches task 'test' next (stage qa, sequence delivery)" in res.stderr


def test_next_rejects_a_last_task_the_sequence_does_not_have(tmp_path: Path) -> None:
    sy = write(tmp_path, "shipyard.yaml", TWO_STAGES)
    res = invoke(
        "--next", "--shipyard", str(sy), "--finished", "qa.delivery", "--result", "fail", "--last-task", "x"
    )
    assert (
        res.exit_code == 2
        and "has no task named 'x'" in res.stderr
        and "deployment, test, evaluation" in res.stderr
    )
    res = invoke("--next", "--shipyard", str(sy), "--finished", "qa.delivery", "--result", "fail")
    assert res.exit_code == 0 and res.stdout.startswith("nothing:")


# --- the README's pull-request check ---------------------------------------------------------


@pytest.mark.skipif(shutil.which("jq") is None, reason="the README's CI steps use jq")
def test_readme_pull_request_checks_catch_a_shipyard_that_promotes_failing_builds(tmp_path: Path) -> None:
    """The README's two shell steps, run as CI would: the installed command, then jq."""
    simulate_cmd = (
        'reconciler simulate --shipyard "$SHIPYARD" --trigger qa.delivery --service helloservice '
        '--outcomes "$OUTCOMES" --output json > result.json && '
    )
    fail_check = (
        simulate_cmd + "jq -e '[.sequences[] | select(.stage == \"production\")] | length == 0' result.json"
    )
    pass_check = simulate_cmd + (
        'jq -e \'.sequences[] | select(.stage == "production" and .sequence == "delivery") '
        '| .result == "pass"\' result.json'
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RECONCILER_CONFIG", None)

    def check(script: str, shipyard: Path, outcomes: str) -> int:
        proc = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**env, "SHIPYARD": str(shipyard), "OUTCOMES": str(EXAMPLES / outcomes)},
        )  # fmt: skip
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode

    assert check(fail_check, TUTORIAL, "qa-fail.yaml") == 0
    assert check(pass_check, TUTORIAL, "qa-pass.yaml") == 0
    # a shipyard change that promotes on fail instead of on pass/warning fails both checks
    original = TUTORIAL.read_text()
    loose_text = original.replace(
        "            - event: qa.delivery.finished   # no selector: fires on pass and on warning\n",
        "            - event: qa.delivery.finished\n              selector: {match: {result: fail}}\n",
    )
    assert loose_text != original
    loose = tmp_path / "loose.yaml"
    loose.write_text(loose_text)
    assert check(fail_check, loose, "qa-fail.yaml") != 0
    assert json.loads((tmp_path / "result.json").read_text())["sequences"][1]["stage"] == "production"
    assert check(pass_check, loose, "qa-pass.yaml") != 0
