"""`reconciler status` and `reconciler get sequences` read the ledger alone, running reconciler or not."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import Ledger
from tests.support.engine import EngineHarness, answer, trigger

SHIPYARD = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: s}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks: [{name: deploy}, {name: test}]
    - name: production
      sequences:
        - name: delivery
          triggeredOn: [{event: qa.delivery.finished}]
          tasks:
            - name: approval
              properties: {pass: manual, warning: manual}
            - name: deploy
"""


def recorded_ledger(tmp_path: Path) -> tuple[Path, EngineHarness]:
    h = EngineHarness(SHIPYARD)
    h.passing("deploy")
    h.passing("test", result="warning")

    def approval(ev: KeptnEvent) -> list[KeptnEvent]:
        return [answer(ev, "started", "approval-service", h.now, status="succeeded")]

    h.on("approval", approval)
    h.run(trigger("qa", "delivery", context="c-qa"))
    h.record(trigger("qa", "delivery", context="c-two", service="other"))
    data_dir = tmp_path / "data"
    ledger = Ledger(data_dir / "ledger.git", "reconciler-ledger")
    ledger.extend(h.ledger)
    return data_dir, h


def test_get_sequences_lists_each_sequence_with_its_tasks_results_and_executors(tmp_path: Path) -> None:
    data_dir, _ = recorded_ledger(tmp_path)
    out = CliRunner().invoke(cli, ["get", "sequences", "--data-dir", str(data_dir), "--output", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    summary = [(r["context"], r["stage"], r["service"], r["state"], r["result"]) for r in rows]
    assert summary == [
        ("c-qa", "qa", "helloservice", "finished", "warning"),
        ("c-qa", "production", "helloservice", "waitingForApproval", ""),
        ("c-two", "qa", "other", "started", ""),
    ]
    qa = rows[0]
    assert [(t["name"], t["result"], t["executors"]) for t in qa["tasks"]] == [
        ("deploy", "pass", ["job-executor-service"]),
        ("test", "warning", ["job-executor-service"]),
    ]
    assert all(t["duration_seconds"] is not None for t in qa["tasks"])
    only_other = CliRunner().invoke(
        cli, ["get", "sequences", "--data-dir", str(data_dir), "--service", "other", "-o", "json"]
    )
    assert [r["service"] for r in json.loads(only_other.output)] == ["other"]


def test_status_without_a_running_reconciler_shows_pending_approvals_and_how_to_answer(
    tmp_path: Path,
) -> None:
    data_dir, _ = recorded_ledger(tmp_path)
    out = CliRunner().invoke(cli, ["status", "--data-dir", str(data_dir)])
    assert out.exit_code == 0, out.output
    assert "not running" in out.output
    assert "pending approvals:" in out.output
    assert "reconciler approve c-qa --stage production" in out.output
    assert "waitingForApproval" in out.output
    as_json = json.loads(
        CliRunner().invoke(cli, ["status", "--data-dir", str(data_dir), "-o", "json"]).output
    )
    assert [a["stage"] for a in as_json["pending_approvals"]] == ["production"]
    assert as_json["reconciler"] is None


def test_status_on_a_data_dir_without_a_ledger_says_so(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["status", "--data-dir", str(tmp_path / "nothing")])
    assert out.exit_code == 1
    assert "no ledger at" in out.output
