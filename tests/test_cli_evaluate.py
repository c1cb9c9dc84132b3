"""`reconciler evaluate` (the published JSON contract) and `reconciler sli render`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli import cli

CONTRACT_KEYS = ["result", "score", "event_result", "status", "message", "indicator_results"]
INDICATOR_KEYS = [
    "metric",
    "status",
    "score",
    "value",
    "success",
    "message",
    "compared_value",
    "key_sli",
    "pass_targets",
    "warning_targets",
]
TARGET_KEYS = ["criteria", "target_value", "violated"]

E1_SLO = """
total_score: {pass: "90%", warning: "75%"}
objectives:
  - sli: response_time_p95
    displayName: Response time P95
    pass: [{criteria: ["<=600"]}]
    warning: [{criteria: ["<=800"]}]
  - sli: error_rate
    weight: 2
    pass: [{criteria: ["<1"]}]
  - sli: throughput
    pass: [{criteria: [">=100"]}]
"""


def sli_answer(values: dict[str, float | None], **top: Any) -> dict[str, Any]:
    return {
        "result": top.pop("result", "pass"),
        "status": top.pop("status", "succeeded"),
        "message": top.pop("message", ""),
        "indicator_values": [
            {
                "metric": m,
                "value": v or 0.0,
                "success": v is not None,
                "message": "" if v is not None else "query did not return any values",
            }
            for m, v in values.items()
        ],
    }


@pytest.fixture
def files(tmp_path: Path) -> Any:
    def write(name: str, content: Any) -> str:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    return write


def evaluate(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(cli, ["evaluate", *args, "--output", "json"])
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_contract_keys_and_values_for_a_warning(files: Any) -> None:
    code, out, _ = evaluate(
        "--slo",
        files("slo.yaml", E1_SLO),
        "--sli",
        files("sli.json", sli_answer({"response_time_p95": 700.0, "error_rate": 0.5, "throughput": 150.0})),
    )
    assert code == 0
    assert list(out) == CONTRACT_KEYS
    assert (out["result"], out["score"], out["event_result"], out["status"]) == (
        "warning",
        87.5,
        "warning",
        "succeeded",
    )
    assert out["message"] == (
        "Evaluation returned a warning: the calculated score of 87.5 is close to the warning target value of 75"
    )
    rt, er, tp = out["indicator_results"]
    assert all(list(r) == INDICATOR_KEYS for r in out["indicator_results"])
    assert rt == {
        "metric": "response_time_p95",
        "status": "warning",
        "score": 0.5,
        "value": 700.0,
        "success": True,
        "message": "",
        "compared_value": 0.0,
        "key_sli": False,
        "pass_targets": [{"criteria": "<=600", "target_value": 600.0, "violated": True}],
        "warning_targets": [{"criteria": "<=800", "target_value": 800.0, "violated": False}],
    }
    assert list(rt["pass_targets"][0]) == TARGET_KEYS
    assert (er["status"], er["score"], tp["status"], tp["warning_targets"]) == ("pass", 2.0, "pass", [])


def test_a_failing_gate_still_exits_zero(files: Any) -> None:
    code, out, _ = evaluate(
        "--slo",
        files("slo.yaml", E1_SLO),
        "--sli",
        files("sli.json", sli_answer({"response_time_p95": 700.0, "error_rate": 0.5, "throughput": 50.0})),
    )
    assert (code, out["result"], out["score"]) == (0, "fail", 62.5)


def test_unrounded_score(files: Any) -> None:
    slo = "total_score: {pass: '90%'}\nobjectives:\n" + "".join(
        f"  - sli: {s}\n    pass: [{{criteria: ['<1']}}]\n" for s in "abc"
    )
    _, out, _ = evaluate(
        "--slo",
        files("slo.yaml", slo),
        "--sli",
        files("sli.json", sli_answer({"a": 0.0, "b": 0.0, "c": 5.0})),
    )
    assert out["score"] == 66.66666666666667
    assert out["message"] == (
        "Evaluation failed since the calculated score of 66.66666666666667 is below the target value of 90"
    )


def test_previous_evaluations_are_used_as_given(files: Any) -> None:
    slo = (
        "total_score: {pass: '90%'}\ncomparison: {compare_with: single_result, include_result_with_score: pass}\n"
        "objectives:\n  - sli: rt\n    pass: [{criteria: ['<=+10%']}]\n"
    )
    previous = [
        {
            "result": "fail",
            "score": 0.0,
            "indicator_results": [
                {"value": 1.0, "success": True},  # no metric: ignored
                {"metric": "rt", "value": 100.0, "success": True, "status": "fail", "score": 0.0},
            ],
        },
        {
            "result": "pass",
            "score": 100.0,
            "indicator_results": [
                {"metric": "rt", "value": 300.0, "success": True, "status": "pass", "score": 1.0}
            ],
        },
    ]
    _, out, _ = evaluate(
        "--slo",
        files("slo.yaml", slo),
        "--sli",
        files("sli.json", sli_answer({"rt": 150.0})),
        "--previous",
        files("prev.json", previous),
    )
    (rt,) = out["indicator_results"]
    # both entries count although compare_with says one and only "pass" results: the list is already selected
    assert rt["compared_value"] == 200.0
    assert rt["pass_targets"] == [
        {"criteria": "<=+10%", "target_value": pytest.approx(220.0), "violated": False}
    ]


def test_an_empty_slo_file_means_no_slo(files: Any) -> None:
    code, out, _ = evaluate(
        "--slo",
        files("slo.yaml", ""),
        "--sli",
        files("sli.json", sli_answer({"rt": 1.0})),
        "--project",
        "fulltour",
    )
    assert (code, out["result"], out["event_result"], out["status"], out["score"]) == (
        0,
        "pass",
        "pass",
        "succeeded",
        0.0,
    )
    assert (
        out["message"]
        == "no evaluation performed by lighthouse because no SLO file configured for project fulltour"
    )
    assert out["indicator_results"] == []


def test_no_objectives_differ_between_score_and_event(files: Any) -> None:
    _, out, _ = evaluate(
        "--slo",
        files("slo.yaml", "objectives: []\ntotal_score: {pass: '0%'}\n"),
        "--sli",
        files("sli.json", sli_answer({})),
    )
    assert (out["result"], out["event_result"]) == ("pass", "fail")
    assert out["message"] == "lighthouse failed because no SLO objective was provided"


def test_a_failed_provider_fails_the_event_but_keeps_the_score(files: Any) -> None:
    slo = "total_score: {pass: '90%'}\nobjectives:\n  - sli: rt\n"
    _, out, _ = evaluate(
        "--slo",
        files("slo.yaml", slo),
        "--sli",
        files("sli.json", sli_answer({"rt": None}, result="fail", message="unable to retrieve metrics")),
    )
    assert (out["result"], out["score"], out["event_result"], out["status"]) == (
        "pass",
        100.0,
        "fail",
        "succeeded",
    )
    assert out["message"] == "lighthouse failed because SLI failed with message unable to retrieve metrics"
    assert out["indicator_results"][0]["status"] == "info"


def test_an_errored_provider_never_passes(files: Any) -> None:
    _, out, _ = evaluate(
        "--slo",
        files("slo.yaml", E1_SLO),
        "--sli",
        files("sli.json", sli_answer({}, result="fail", status="errored", message="prometheus unreachable")),
    )
    assert (out["result"], out["event_result"], out["status"]) == ("fail", "fail", "errored")
    assert (
        out["message"]
        == "evaluation performed by lighthouse received an unexpected error: prometheus unreachable"
    )


def test_invalid_slo_yaml_is_an_errored_verdict_naming_file_and_line(files: Any) -> None:
    path = files("slo.yaml", "objectives:\n  - sli: rt\n    weight: heavy\ntotal_score: {pass: 90}\n")
    code, out, err = evaluate("--slo", path, "--sli", files("sli.json", sli_answer({"rt": 1.0})))
    assert (code, out["status"], out["event_result"], out["result"]) == (0, "errored", "fail", "fail")
    assert out["message"].startswith(f"error retrieving SLO file: {path}:3:13: objectives[0].weight: ")
    assert out["message"] in err


def test_an_invalid_sli_answer_names_the_field(files: Any) -> None:
    path = files("sli.json", {"result": "great", "indicator_values": []})
    _, out, _ = evaluate("--slo", files("slo.yaml", E1_SLO), "--sli", path)
    assert out["status"] == "errored"
    assert out["message"].startswith(f"{path}: result: ")


def test_sli_answer_that_is_not_json(files: Any) -> None:
    path = files("sli.json", "{nope")
    _, out, _ = evaluate("--slo", files("slo.yaml", E1_SLO), "--sli", path)
    assert out["status"] == "errored"
    assert out["message"].startswith(f"{path}: not valid JSON")


def test_missing_input_file_is_a_usage_error(tmp_path: Path, files: Any) -> None:
    result = CliRunner().invoke(
        cli, ["evaluate", "--slo", str(tmp_path / "nope.yaml"), "--sli", files("sli.json", sli_answer({}))]
    )
    assert result.exit_code == 2
    assert "nope.yaml" in result.output


def test_readable_table_lists_objective_value_criteria_status_score(files: Any) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--slo",
            files("slo.yaml", E1_SLO),
            "--sli",
            files(
                "sli.json", sli_answer({"response_time_p95": 700.0, "error_rate": None, "throughput": 150.0})
            ),
        ],
    )
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["OBJECTIVE", "VALUE", "CRITERIA", "STATUS", "SCORE"]
    assert "Response time P95" in lines[1] and "700" in lines[1] and "<=600 (600, violated)" in lines[1]
    assert "warning: <=800 (800)" in lines[1] and lines[1].split()[-2:] == ["warning", "0.5"]
    assert "error: query did not return any values" in lines[2] and lines[2].split()[-2:] == ["fail", "0"]
    assert "result: fail (score 37.5)" in result.stdout
    assert (
        "message: Evaluation failed since the calculated score of 37.5 is below the warning value of 75"
        in result.stdout
    )


def test_the_installed_command_speaks_the_same_contract(files: Any) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "evaluate",
            "--slo",
            files("slo.yaml", E1_SLO),
            "--sli",
            files(
                "sli.json", sli_answer({"response_time_p95": 500.0, "error_rate": 0.5, "throughput": 150.0})
            ),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(proc.stdout)
    assert list(out) == CONTRACT_KEYS and (out["result"], out["score"]) == ("pass", 100.0)


# --------------------------------------------------------------------------------------------
# sli render

SLI_YAML = """indicators:
  my: rate(my_metric{job="$SERVICE-$PROJECT-$STAGE",handler="$handler"}[$DURATION_SECONDS])
  where: up{deployment="$DEPLOYMENT",image="$LABEL.image"}
"""
WINDOW = [
    "--project",
    "sockshop",
    "--stage",
    "qa",
    "--service",
    "carts",
    "--start",
    "2024-01-01T10:00:00.000Z",
    "--end",
    "2024-01-01T10:05:00.000Z",
]


def render(*args: str) -> Any:
    return CliRunner().invoke(cli, ["sli", "render", *args])


def test_render_prints_the_resolved_query(files: Any) -> None:
    result = render(
        "--sli", files("sli.yaml", SLI_YAML), "--metric", "my", *WINDOW, "--filter", "handler=ItemsController"
    )
    assert result.exit_code == 0
    assert result.stdout == 'rate(my_metric{job="carts-sockshop-qa",handler="ItemsController"}[300s])\n'


def test_render_json(files: Any) -> None:
    result = render("--sli", files("sli.yaml", SLI_YAML), "--metric", "my", *WINDOW, "--output", "json")
    assert json.loads(result.stdout) == {
        "metric": "my",
        "query": 'rate(my_metric{job="carts-sockshop-qa",handler="$handler"}[300s])',
    }


def test_render_builtin_default_for_an_undefined_metric(files: Any) -> None:
    result = render(
        "--sli",
        files("sli.yaml", SLI_YAML),
        "--metric",
        "throughput",
        *WINDOW,
        "--filter",
        "handler=ItemsController",
    )
    assert result.stdout.strip() == (
        "sum(rate(http_requests_total{job='carts-sockshop-qa-canary',handler='ItemsController'}[300s]))"
    )


def test_render_deployment_and_labels(files: Any) -> None:
    sli = files("sli.yaml", SLI_YAML)
    assert render("--sli", sli, "--metric", "where", *WINDOW, "--label", "image=podtato").stdout.strip() == (
        'up{deployment="primary",image="podtato"}'
    )
    assert render("--sli", sli, "--metric", "where", *WINDOW, "--deployment", "canary").stdout.strip() == (
        'up{deployment="canary",image="$LABEL.image"}'
    )


def test_render_accepts_unix_seconds() -> None:
    result = render(
        "--metric",
        "throughput",
        "--project",
        "p",
        "--stage",
        "s",
        "--service",
        "x",
        "--start",
        "1704103200",
        "--end",
        "1704103290",
    )
    assert result.stdout.strip() == "sum(rate(http_requests_total{job='x-p-s-canary'}[90s]))"


def test_render_unknown_metric_is_an_error(files: Any) -> None:
    result = render("--sli", files("sli.yaml", SLI_YAML), "--metric", "latency", *WINDOW)
    assert result.exit_code == 1
    assert "'latency' has no query" in result.output and "not a built-in SLI" in result.output


def test_render_bad_time_and_bad_pair_are_usage_errors(files: Any) -> None:
    bad_time = render(
        "--metric",
        "throughput",
        "--project",
        "p",
        "--stage",
        "s",
        "--service",
        "x",
        "--start",
        "yesterday",
        "--end",
        "1704103290",
    )
    assert bad_time.exit_code == 2 and "expected RFC 3339" in bad_time.output
    bad_pair = render("--metric", "throughput", *WINDOW, "--label", "novalue")
    assert bad_pair.exit_code == 2 and "expected key=value" in bad_pair.output


def test_render_reports_a_broken_sli_file_with_its_line(files: Any) -> None:
    path = files("sli.yaml", "indicators:\n  a: [1, 2]\n")
    result = render("--sli", path, "--metric", "a", *WINDOW)
    assert result.exit_code == 1
    assert f"{path}:2" in result.output
