"""Lighthouse scoring on plain data: every criteria form, comparison, key SLIs, info
objectives, warning halving, the error table and the spec's worked examples (4.6-4.12)."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.core.scoring import (
    NO_DATA_MESSAGE,
    Evaluation,
    PreviousEvaluation,
    SLIAnswer,
    SLIValue,
    aggregate,
    evaluate,
    percentile,
    provider_result,
)
from reconciler.formats.problems import ConfigError
from reconciler.formats.slo import SLO, CriteriaError, load_slo, parse_criterion

# ---------------------------------------------------------------------------------------------
# helpers


def slo_from(objectives: list[dict[str, Any]], *, total: dict[str, Any] | None = None, **extra: Any) -> SLO:
    doc: dict[str, Any] = {
        "objectives": objectives,
        "total_score": total or {"pass": "90%", "warning": "75%"},
    }
    doc.update(extra)
    return SLO.model_validate(doc)


def answer(*values: tuple[str, float] | SLIValue, result: str | None = None, message: str = "") -> SLIAnswer:
    items = [
        v if isinstance(v, SLIValue) else SLIValue(metric=v[0], value=v[1], success=True) for v in values
    ]
    return SLIAnswer(result=result or provider_result(items), indicator_values=items, message=message)  # type: ignore[arg-type]


def failed(metric: str, message: str) -> SLIValue:
    return SLIValue(metric=metric, success=False, message=message)


def prev(*evaluations: dict[str, float]) -> list[PreviousEvaluation]:
    return [
        PreviousEvaluation(
            result="pass",
            indicator_results=[{"metric": m, "value": v, "success": True} for m, v in e.items()],  # type: ignore[misc]
        )
        for e in evaluations
    ]


def by_sli(verdict: Evaluation) -> dict[str, Any]:
    assert verdict.indicator_results is not None
    return {r.sli: r for r in verdict.indicator_results}


def targets(result: Any, kind: str = "pass") -> list[tuple[str, float, bool]]:
    items = result.pass_targets if kind == "pass" else result.warning_targets
    return [(t.criteria, t.target_value, t.violated) for t in items]


# ---------------------------------------------------------------------------------------------
# criteria strings (4.6)


@pytest.mark.parametrize(
    ("text", "operator", "value", "relative", "percent", "increase"),
    [
        ("<600", "<", 600.0, False, False, True),
        ("<=600", "<=", 600.0, False, False, True),
        ("=0", "=", 0.0, False, False, True),
        (">=100", ">=", 100.0, False, False, True),
        (">100", ">", 100.0, False, False, True),
        ("<=+10%", "<=", 10.0, True, True, True),
        ("<=10%", "<=", 10.0, True, True, True),
        (">=-5%", ">=", 5.0, True, True, False),
        ("<=+50", "<=", 50.0, True, False, True),
        (">=-20", ">=", 20.0, True, False, False),
        ("< = 6 0 0", "<=", 600.0, False, False, True),
        ("<1e3", "<", 1000.0, False, False, True),
        ("<=.5", "<=", 0.5, False, False, True),
    ],
)
def test_criteria_strings_parse_like_lighthouse(
    text: str, operator: str, value: float, relative: bool, percent: bool, increase: bool
) -> None:
    c = parse_criterion(text)
    assert (c.operator, c.value, c.relative, c.percent, c.increase) == (
        operator,
        value,
        relative,
        percent,
        increase,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("600", "invalid criteria string"),
        ("abc", "invalid criteria string"),
        ("", "invalid criteria string"),
        ("==10", "could not parse criteria target value"),
        ("=>10", "could not parse criteria target value"),
        ("<10ms", "could not parse criteria target value"),
        ("<\t10", "could not parse criteria target value"),
        ("|5", "could not parse criteria target value"),
        ("<1_000", "could not parse criteria target value"),
        ("<=10%%", "could not parse criteria target value"),
    ],
)
def test_bad_criteria_strings_are_rejected_with_lighthouses_message(text: str, message: str) -> None:
    with pytest.raises(CriteriaError, match=f"^{message}$"):
        parse_criterion(text)


@pytest.mark.parametrize(
    ("criterion", "value", "holds"),
    [
        ("<600", 599.0, True),
        ("<600", 600.0, False),
        ("<=600", 600.0, True),
        ("=0", 0.0, True),
        ("=0", 0.1, False),
        (">=100", 100.0, True),
        (">100", 100.0, False),
    ],
)
def test_absolute_criteria_compare_the_value_with_the_number(
    criterion: str, value: float, holds: bool
) -> None:
    slo = slo_from([{"sli": "m", "pass": [{"criteria": [criterion]}]}], total={"pass": "100%"})
    verdict = evaluate(slo, answer(("m", value)))
    assert verdict.result == ("pass" if holds else "fail")
    assert targets(by_sli(verdict)["m"]) == [(criterion, float(criterion.lstrip("<>=")), not holds)]


@pytest.mark.parametrize(
    ("criterion", "target"),
    [
        ("<=+10%", 550.0),
        ("<=10%", 550.0),
        (">=-5%", 475.0),
        ("<=+50", 550.0),
        (">=-20", 480.0),
    ],
)
def test_relative_criteria_compute_their_target_from_the_previous_value(
    criterion: str, target: float
) -> None:
    slo = slo_from([{"sli": "m", "pass": [{"criteria": [criterion]}]}], total={"pass": "100%"})
    verdict = evaluate(slo, answer(("m", 500.0)), prev({"m": 500.0}))
    result = by_sli(verdict)["m"]
    assert targets(result)[0][:2] == (criterion, target)
    assert result.value.compared_value == 500.0


# ---------------------------------------------------------------------------------------------
# worked examples (4.12)

E1 = [
    {"sli": "response_time_p95", "pass": [{"criteria": ["<=600"]}], "warning": [{"criteria": ["<=800"]}]},
    {"sli": "error_rate", "pass": [{"criteria": ["<1"]}], "weight": 2},
    {"sli": "throughput", "pass": [{"criteria": [">=100"]}]},
]


@pytest.mark.parametrize(
    ("rt", "er", "tp", "statuses", "score", "result", "message"),
    [
        (
            700,
            0.5,
            50,
            ("warning", "pass", "fail"),
            62.5,
            "fail",
            "Evaluation failed since the calculated score of 62.5 is below the warning value of 75",
        ),
        (
            700,
            0.5,
            150,
            ("warning", "pass", "pass"),
            87.5,
            "warning",
            "Evaluation returned a warning: the calculated score of 87.5 is close to the warning target value of 75",
        ),
        (500, 0.5, 150, ("pass", "pass", "pass"), 100.0, "pass", ""),
    ],
)
def test_e1_absolute_thresholds_and_weights(
    rt: float, er: float, tp: float, statuses: tuple[str, ...], score: float, result: str, message: str
) -> None:
    verdict = evaluate(
        slo_from(E1), answer(("response_time_p95", rt), ("error_rate", er), ("throughput", tp))
    )
    assert tuple(r.status for r in verdict.indicator_results or []) == statuses
    assert [r.score for r in verdict.indicator_results or []] == [
        {"pass": 1.0, "warning": 0.5, "fail": 0.0}[statuses[0]],
        {"pass": 2.0, "fail": 0.0}[statuses[1]],
        {"pass": 1.0, "fail": 0.0}[statuses[2]],
    ]
    assert (verdict.score, verdict.result, verdict.event_result, verdict.message) == (
        score,
        result,
        result,
        message,
    )
    assert verdict.status == "succeeded"


E2 = [{"sli": "rt", "pass": [{"criteria": ["<=+10%", "<600"]}], "warning": [{"criteria": ["<=800"]}]}]


def test_e2_relative_and_absolute_in_one_group_must_both_hold() -> None:
    slo = slo_from(E2, comparison={"compare_with": "single_result"})
    verdict = evaluate(slo, answer(("rt", 560.0)), prev({"rt": 500.0}))
    rt = by_sli(verdict)["rt"]
    assert (rt.status, rt.score) == ("warning", 0.5)
    assert targets(rt) == [("<=+10%", 550.0, True), ("<600", 600.0, False)]
    assert targets(rt, "warning") == [("<=800", 800.0, False)]
    assert rt.value.compared_value == 500.0
    assert verdict.score == 50.0
    assert verdict.result == "fail"
    assert (
        verdict.message
        == "Evaluation failed since the calculated score of 50 is below the warning value of 75"
    )


def test_e3_one_satisfied_group_of_several_passes() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<=+10%"]}, {"criteria": ["<600"]}]}])
    verdict = evaluate(slo, answer(("rt", 560.0)), prev({"rt": 500.0}))
    rt = by_sli(verdict)["rt"]
    assert rt.status == "pass"
    assert targets(rt) == [("<=+10%", 550.0, True), ("<600", 600.0, False)]
    assert (verdict.score, verdict.result) == (100.0, "pass")


def test_e4_first_evaluation_ever_passes_relative_criteria_with_target_zero() -> None:
    verdict = evaluate(slo_from(E2), answer(("rt", 560.0)), [])
    rt = by_sli(verdict)["rt"]
    assert rt.status == "pass"
    assert targets(rt) == [("<=+10%", 0.0, False), ("<600", 600.0, False)]
    assert rt.value.compared_value == 0.0
    assert verdict.result == "pass"


@pytest.mark.parametrize(
    ("function", "agg", "pass_target", "warn_target", "status"),
    [
        ("avg", 110.0, 115.5, 126.5, "warning"),
        ("p50", 110.0, 115.5, 126.5, "warning"),
        ("p90", 120.0, 126.0, 138.0, "pass"),
        ("p95", 120.0, 126.0, 138.0, "pass"),
    ],
)
def test_e5_several_results_aggregated(
    function: str, agg: float, pass_target: float, warn_target: float, status: str
) -> None:
    slo = slo_from(
        [{"sli": "rt", "pass": [{"criteria": ["<=+5%"]}], "warning": [{"criteria": ["<=+15%"]}]}],
        comparison={
            "compare_with": "several_results",
            "number_of_comparison_results": 3,
            "aggregate_function": function,
        },
    )
    verdict = evaluate(slo, answer(("rt", 125.0)), prev({"rt": 120.0}, {"rt": 110.0}, {"rt": 100.0}))
    rt = by_sli(verdict)["rt"]
    assert rt.value.compared_value == agg
    assert targets(rt)[0][1] == pytest.approx(pass_target, rel=1e-12)
    assert targets(rt, "warning")[0][1] == pytest.approx(warn_target, rel=1e-12)
    assert rt.status == status


@pytest.mark.parametrize(("current", "status"), [(195.0, "pass"), (185.0, "fail")])
def test_e6_decrease_criterion(current: float, status: str) -> None:
    slo = slo_from(
        [{"sli": "tp", "pass": [{"criteria": [">=-5%"]}]}],
        comparison={"compare_with": "several_results", "number_of_comparison_results": 3},
    )
    verdict = evaluate(slo, answer(("tp", current)), prev({"tp": 200.0}, {"tp": 210.0}, {"tp": 190.0}))
    tp = by_sli(verdict)["tp"]
    assert targets(tp)[0][1] == 190.0
    assert tp.status == status


def test_e7_failed_key_sli_fails_a_score_above_the_pass_target() -> None:
    slo = slo_from(
        [
            {
                "sli": "rt",
                "displayName": "Response Time P95",
                "key_sli": True,
                "pass": [{"criteria": ["<=600"]}],
            },
            {"sli": "er", "pass": [{"criteria": ["<1"]}]},
            {"sli": "tp", "pass": [{"criteria": [">=100"]}]},
        ],
        total={"pass": "50%"},
    )
    verdict = evaluate(slo, answer(("rt", 650.0), ("er", 0.1), ("tp", 120.0)))
    assert verdict.score == 66.66666666666667
    assert verdict.result == "fail"
    assert verdict.message == (
        "Evaluation failed due to key_sli objective 'Response Time P95': failed evaluation with score 0.000000"
    )
    assert by_sli(verdict)["rt"].key_sli is True


def test_e8_no_warning_target_means_below_pass_fails_with_the_target_in_the_message() -> None:
    slo = slo_from(
        [{"sli": s, "pass": [{"criteria": ["<1"]}]} for s in ("a", "b", "c")], total={"pass": "90%"}
    )
    verdict = evaluate(slo, answer(("a", 0.0), ("b", 0.0), ("c", 5.0)))
    assert verdict.score == 66.66666666666667
    assert verdict.result == "fail"
    assert verdict.message == (
        "Evaluation failed since the calculated score of 66.66666666666667 is below the target value of 90"
    )


def test_e9_informational_objectives_only_pass_with_score_100() -> None:
    slo = slo_from([{"sli": "a"}, {"sli": "b", "warning": [{"criteria": ["<5"]}]}], total={"pass": "90%"})
    verdict = evaluate(slo, answer(("a", 1.0), ("b", 1.0)))
    assert (verdict.result, verdict.score) == ("pass", 100.0)
    a, b = verdict.indicator_results or []
    assert (a.status, a.score, a.pass_targets, a.warning_targets) == ("info", 0.0, [], [])
    assert (b.status, targets(b, "warning")) == ("info", [("<5", 5.0, True)])


def test_e9_still_needs_a_pass_target() -> None:
    slo = slo_from([{"sli": "a"}], total={"warning": "50%"})
    verdict = evaluate(slo, answer(("a", 1.0)))
    assert (verdict.status, verdict.result, verdict.message) == ("errored", "fail", "no target score defined")


# ---------------------------------------------------------------------------------------------
# aggregation (4.7)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([float(i) for i in range(11)], 0.9, 9.8),
        ([100.0, 110.0, 120.0], 0.5, 110.0),
        ([100.0, 110.0, 120.0], 0.9, 120.0),
        ([100.0, 110.0, 120.0], 0.95, 120.0),
        ([120.0, 100.0, 110.0], 0.5, 110.0),
        ([5.0], 0.5, 5.0),
        ([1.0, 2.0], 0.1, 1.0),
    ],
)
def test_percentiles_follow_lighthouses_definition(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == pytest.approx(expected, rel=1e-12)


def test_average_of_previous_values() -> None:
    assert aggregate([100.0, 110.0, 120.0], "avg") == 110.0
    assert aggregate([], "avg") == 0.0


def test_unknown_aggregate_function_is_a_located_slo_error() -> None:
    with pytest.raises(ConfigError, match=r"slo.yaml:3:\d+: comparison.aggregate_function: unknown"):
        load_slo(b"objectives: []\ncomparison:\n  aggregate_function: max\n", "slo.yaml")


@pytest.mark.parametrize(
    ("comparison", "requested"),
    [
        (None, 1),
        ({}, 3),
        ({"compare_with": "single_result"}, 1),
        ({"compare_with": "several_results"}, 3),
        ({"compare_with": "several_results", "number_of_comparison_results": 5}, 5),
        ({"number_of_comparison_results": 5}, 3),
    ],
)
def test_comparison_defaults_decide_how_many_previous_evaluations_count(
    comparison: dict[str, Any] | None, requested: int
) -> None:
    slo = slo_from([], **({"comparison": comparison} if comparison is not None else {}))
    assert slo.effective_comparison.requested == requested
    assert slo.effective_comparison.aggregate_function == "avg"
    assert slo.effective_comparison.include_result_with_score == "all"


def test_only_successful_previous_values_are_compared() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<=+10%"]}]}])
    previous = [
        PreviousEvaluation(
            result="fail", indicator_results=[{"metric": "rt", "value": 10.0, "success": False}]
        ),  # type: ignore[list-item]
        PreviousEvaluation(
            result="fail", indicator_results=[{"metric": "rt", "value": 100.0, "success": True}]
        ),  # type: ignore[list-item]
    ]
    verdict = evaluate(slo, answer(("rt", 115.0)), previous)
    rt = by_sli(verdict)["rt"]
    assert rt.value.compared_value == 100.0
    assert targets(rt) == [("<=+10%", pytest.approx(110.0), True)]


def test_an_errored_previous_evaluation_contributes_nothing_so_relative_criteria_pass() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<=+10%"]}]}])
    verdict = evaluate(slo, answer(("rt", 1000.0)), [PreviousEvaluation(result="fail")])
    assert by_sli(verdict)["rt"].status == "pass"


def test_previous_entries_without_metric_are_ignored() -> None:
    previous = PreviousEvaluation.model_validate(
        {
            "result": "pass",
            "indicator_results": [
                {"value": 1.0, "success": True},
                {"metric": "rt", "value": 200.0, "success": True},
            ],
        }
    )
    assert [i.metric for i in previous.indicator_results] == ["rt"]


def test_previous_evaluation_read_from_a_keptn_event_keeps_successful_values() -> None:
    data = {
        "result": "pass",
        "evaluation": {
            "score": 100,
            "indicatorResults": [
                {"value": {"metric": "rt", "value": 200, "success": True}, "status": "pass"},
                {"value": None, "status": "info"},
                {"value": {"metric": "er", "value": 0.5, "success": False}, "status": "fail"},
            ],
        },
    }
    previous = PreviousEvaluation.from_keptn("ev-1", data)
    assert previous.score == 100.0
    assert [(i.metric, i.value, i.success) for i in previous.indicator_results] == [
        ("rt", 200.0, True),
        ("er", 0.5, False),
    ]


# ---------------------------------------------------------------------------------------------
# per-objective cases (4.8)


def test_warning_halves_the_weight() -> None:
    slo = slo_from(
        [
            {"sli": "rt", "weight": 4, "pass": [{"criteria": ["<100"]}], "warning": [{"criteria": ["<200"]}]},
            {"sli": "er", "pass": [{"criteria": ["<1"]}]},
        ],
        total={"pass": "50%"},
    )
    verdict = evaluate(slo, answer(("rt", 150.0), ("er", 0.0)))
    assert by_sli(verdict)["rt"].score == 2.0
    assert verdict.score == 60.0


def test_weight_zero_counts_as_one() -> None:
    slo = slo_from(
        [
            {"sli": "a", "weight": 0, "pass": [{"criteria": ["<1"]}]},
            {"sli": "b", "pass": [{"criteria": ["<1"]}]},
        ],
        total={"pass": "50%"},
    )
    verdict = evaluate(slo, answer(("a", 0.0), ("b", 5.0)))
    assert verdict.score == 50.0


def test_warning_targets_are_reported_even_when_the_objective_passes() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<100"]}], "warning": [{"criteria": ["<50"]}]}])
    rt = by_sli(evaluate(slo, answer(("rt", 70.0))))["rt"]
    assert rt.status == "pass"
    assert targets(rt, "warning") == [("<50", 50.0, True)]


def test_no_warning_criteria_leave_warning_targets_null() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<100"]}]}])
    rt = by_sli(evaluate(slo, answer(("rt", 70.0))))["rt"]
    assert rt.warning_targets is None
    assert rt.keptn()["warningTargets"] is None
    assert rt.contract()["warning_targets"] == []


def test_a_missing_value_fails_its_objective_with_lighthouses_message() -> None:
    slo = slo_from(
        [
            {"sli": "rt", "pass": [{"criteria": ["<=+10%", "<600"]}]},
            {"sli": "er", "pass": [{"criteria": ["<1"]}]},
        ]
    )
    verdict = evaluate(slo, answer(("er", 0.0)), prev({"rt": 500.0}))
    rt = by_sli(verdict)["rt"]
    assert (rt.status, rt.score) == ("fail", 0.0)
    assert (rt.value.metric, rt.value.value, rt.value.success, rt.value.message) == (
        "rt",
        0.0,
        False,
        "no value received from SLI provider",
    )
    assert targets(rt) == [("<=+10%", pytest.approx(550.0), True), ("<600", 600.0, True)]
    assert verdict.score == 50.0


def test_a_failed_key_sli_fetch_fails_the_gate_with_the_providers_reason() -> None:
    slo = slo_from(
        [
            {"sli": "rt", "displayName": "Response time", "key_sli": True, "pass": [{"criteria": ["<600"]}]},
            {"sli": "a", "pass": [{"criteria": ["<1"]}]},
            {"sli": "b", "pass": [{"criteria": ["<1"]}]},
        ],
        total={"pass": "50%"},
    )
    verdict = evaluate(slo, answer(failed("rt", "query did return multiple values"), ("a", 0.0), ("b", 0.0)))
    assert verdict.result == "fail"
    assert (
        verdict.message
        == "Evaluation failed due to key_sli objective 'Response time': query did return multiple values"
    )
    assert by_sli(verdict)["rt"].key_sli is True


def test_a_key_sli_in_warning_does_not_fail_the_gate() -> None:
    slo = slo_from(
        [
            {
                "sli": "rt",
                "key_sli": True,
                "pass": [{"criteria": ["<100"]}],
                "warning": [{"criteria": ["<200"]}],
            }
        ],
        total={"pass": "40%"},
    )
    verdict = evaluate(slo, answer(("rt", 150.0)))
    assert (verdict.result, verdict.score) == ("pass", 50.0)


def test_the_last_failing_key_sli_names_the_failure_and_falls_back_to_the_sli_name() -> None:
    slo = slo_from(
        [
            {"sli": "first", "key_sli": True, "displayName": "First", "pass": [{"criteria": ["<1"]}]},
            {"sli": "second", "key_sli": True, "pass": [{"criteria": ["<1"]}]},
        ],
        total={"pass": "0%"},
    )
    verdict = evaluate(slo, answer(("first", 5.0), ("second", 5.0)))
    assert (
        verdict.message
        == "Evaluation failed due to key_sli objective 'second': failed evaluation with score 0.000000"
    )


def test_an_invalid_pass_criterion_aborts_the_evaluation() -> None:
    slo = slo_from(
        [{"sli": "rt", "displayName": "Response time", "pass": [{"criteria": ["<600", "around 5"]}]}]
    )
    verdict = evaluate(slo, answer(("rt", 100.0)))
    assert (verdict.status, verdict.event_result, verdict.result, verdict.score) == (
        "succeeded",
        "fail",
        "fail",
        0.0,
    )
    assert verdict.message == "error with Response time: invalid criteria string"
    assert verdict.indicator_results is None
    assert verdict.keptn()["indicatorResults"] is None


def test_an_invalid_pass_criterion_is_named_by_sli_without_display_name() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<6x"]}]}])
    assert (
        evaluate(slo, answer(("rt", 1.0))).message == "error with rt: could not parse criteria target value"
    )


def test_an_invalid_warning_criterion_only_disables_the_warning() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<100"]}], "warning": [{"criteria": ["<<"]}]}])
    rt = by_sli(evaluate(slo, answer(("rt", 150.0))))["rt"]
    assert (rt.status, rt.warning_targets) == ("fail", [])


def test_an_empty_criteria_group_passes_but_earns_no_score() -> None:
    slo = slo_from(
        [{"sli": "a", "pass": [{"criteria": []}]}, {"sli": "b", "pass": [{"criteria": ["<1"]}]}],
        total={"pass": "50%"},
    )
    verdict = evaluate(slo, answer(("a", 5.0), ("b", 0.0)))
    a = by_sli(verdict)["a"]
    assert (a.status, a.pass_targets) == ("pass", None)
    assert verdict.score == 50.0


def test_duplicate_slis_consume_one_value_each() -> None:
    slo = slo_from(
        [{"sli": "rt", "pass": [{"criteria": ["<100"]}]}, {"sli": "rt", "pass": [{"criteria": ["<10"]}]}],
        total={"pass": "50%"},
    )
    verdict = evaluate(slo, answer(("rt", 50.0), ("rt", 5.0)))
    assert [(r.value.value, r.status) for r in verdict.indicator_results or []] == [
        (50.0, "pass"),
        (5.0, "pass"),
    ]


def test_additional_slis_are_mentioned_when_the_gate_passes() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<100"]}]}])
    verdict = evaluate(slo, answer(("extra1", 1.0), ("rt", 5.0), ("extra2", 2.0)))
    assert verdict.result == "pass"
    assert verdict.message.startswith("Lighthouse received additional SLIs, which are not specified as SLO: ")
    assert set(verdict.message.split(": ", 1)[1].split(" . ")[0].split(", ")) == {"extra1", "extra2"}
    assert verdict.message.endswith(" . Please consider using them as an SLO.")


# ---------------------------------------------------------------------------------------------
# total score and the error table (4.9, 4.11)


@pytest.mark.parametrize(
    ("total", "message"),
    [
        (None, "no target score defined"),
        ({"pass": ""}, "no target score defined"),
        ({"pass": "ninety%"}, "could not parse pass target percentage"),
        ({"pass": "90%", "warning": "x"}, "could not parse warning target percentage"),
    ],
)
def test_unusable_total_score_errors_the_evaluation(total: dict[str, str] | None, message: str) -> None:
    slo = SLO.model_validate(
        {"objectives": [{"sli": "rt", "pass": [{"criteria": ["<1"]}]}], "total_score": total}
    )
    verdict = evaluate(slo, answer(("rt", 0.0)))
    assert (verdict.status, verdict.event_result, verdict.result, verdict.score, verdict.message) == (
        "errored",
        "fail",
        "fail",
        0.0,
        message,
    )


def test_total_score_without_percent_sign_is_accepted() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<1"]}]}], total={"pass": 90})
    assert evaluate(slo, answer(("rt", 0.0))).result == "pass"


def test_no_slo_file_passes_without_evaluating() -> None:
    verdict = evaluate(None, answer(("rt", 0.0)), project="fulltour")
    assert (verdict.status, verdict.event_result, verdict.result, verdict.score) == (
        "succeeded",
        "pass",
        "pass",
        0.0,
    )
    assert (
        verdict.message
        == "no evaluation performed by lighthouse because no SLO file configured for project fulltour"
    )


def test_an_empty_slo_file_means_no_slo() -> None:
    assert load_slo(b"  \n") is None


def test_an_slo_without_objectives_fails() -> None:
    verdict = evaluate(slo_from([]), answer())
    assert (verdict.event_result, verdict.status, verdict.score) == ("fail", "succeeded", 0.0)
    assert verdict.message == "lighthouse failed because no SLO objective was provided"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("aborted", "evaluation performed by lighthouse was aborted"),
        ("errored", "evaluation performed by lighthouse received an unexpected error: boom"),
    ],
)
def test_an_errored_provider_errors_the_evaluation_and_never_passes(status: str, message: str) -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<1"]}]}])
    verdict = evaluate(slo, SLIAnswer(status=status, result="fail", message="boom"))  # type: ignore[arg-type]
    assert (verdict.status, verdict.event_result, verdict.result, verdict.message) == (
        "errored",
        "fail",
        "fail",
        message,
    )
    assert verdict.keptn()["result"] == "fail"


def test_all_slis_failing_fails_the_event_while_the_score_stays_computed() -> None:
    slo = slo_from([{"sli": "rt"}, {"sli": "er"}])  # informational only: the score alone would pass
    verdict = evaluate(
        slo,
        answer(
            failed("rt", "unable to query prometheus api: x"),
            failed("er", "y"),
            message="unable to retrieve metrics",
        ),
    )
    assert (verdict.result, verdict.score) == ("pass", 100.0)
    assert verdict.event_result == "fail"
    assert verdict.message == "lighthouse failed because SLI failed with message unable to retrieve metrics"
    assert verdict.keptn()["result"] == "fail"


def test_some_slis_failing_fail_only_their_objectives() -> None:
    slo = slo_from([{"sli": s, "pass": [{"criteria": ["<1"]}]} for s in ("a", "b", "c", "d")])
    verdict = evaluate(slo, answer(("a", 0.0), ("b", 0.0), ("c", 0.0), failed("d", NO_DATA_MESSAGE)))
    assert verdict.score == 75.0
    assert (verdict.result, verdict.event_result) == ("warning", "warning")


# ---------------------------------------------------------------------------------------------
# "no data" policy (our extension, documented in docs/keptn-differences.md)

TWO = [{"sli": "rt", "pass": [{"criteria": ["<100"]}]}, {"sli": "errors", "pass": [{"criteria": ["<=0"]}]}]


@pytest.mark.parametrize(
    ("policy", "status", "score", "total"),
    [
        ("fail", "fail", 0.0, 50.0),
        ("warning", "warning", 0.5, 75.0),
        ("pass", "pass", 1.0, 100.0),
        ("ignore", "info", 0.0, 100.0),
        ("zero", "pass", 1.0, 100.0),
    ],
)
def test_no_data_counts_as_the_slo_says(policy: str, status: str, score: float, total: float) -> None:
    slo = slo_from(TWO, onNoData=policy)
    verdict = evaluate(slo, answer(("rt", 50.0), failed("errors", NO_DATA_MESSAGE)))
    errors = by_sli(verdict)["errors"]
    assert (errors.status, errors.score, verdict.score) == (status, score, total)


def test_no_data_policy_can_be_set_per_objective() -> None:
    objectives = [{**TWO[0]}, {**TWO[1], "onNoData": "zero"}]
    slo = slo_from(objectives, onNoData="fail")
    verdict = evaluate(slo, answer(failed("rt", NO_DATA_MESSAGE), failed("errors", NO_DATA_MESSAGE)))
    assert [r.status for r in verdict.indicator_results or []] == ["fail", "pass"]
    assert by_sli(verdict)["errors"].value.value == 0.0


def test_no_data_policy_never_excuses_a_failed_query() -> None:
    slo = slo_from(TWO, onNoData="pass")
    verdict = evaluate(
        slo, answer(("rt", 50.0), failed("errors", "unable to query prometheus api: bad_data: x"))
    )
    assert by_sli(verdict)["errors"].status == "fail"


def test_excused_no_data_everywhere_does_not_fail_the_event() -> None:
    slo = slo_from(TWO, onNoData="zero")
    verdict = evaluate(
        slo,
        answer(
            failed("rt", NO_DATA_MESSAGE),
            failed("errors", NO_DATA_MESSAGE),
            message="unable to retrieve metrics",
        ),
    )
    assert (verdict.result, verdict.event_result) == ("pass", "pass")


def test_default_no_data_is_keptns_failure() -> None:
    verdict = evaluate(
        slo_from(TWO),
        answer(
            failed("rt", NO_DATA_MESSAGE),
            failed("errors", NO_DATA_MESSAGE),
            message="unable to retrieve metrics",
        ),
    )
    assert (verdict.result, verdict.event_result, verdict.score) == ("fail", "fail", 0.0)


# ---------------------------------------------------------------------------------------------
# output shapes


def test_keptn_shape_of_data_evaluation() -> None:
    slo = slo_from(E2)
    value = SLIValue(metric="rt", value=560.0, success=True, query="histogram_quantile(0.95, x)")
    verdict = evaluate(slo, answer(value), prev({"rt": 500.0}))
    out = verdict.keptn(time_start="a", time_end="b", slo_file_content="c2xv", compared_events=["e1"])
    assert out == {
        "timeStart": "a",
        "timeEnd": "b",
        "result": "fail",
        "score": 50.0,
        "sloFileContent": "c2xv",
        "indicatorResults": [
            {
                "score": 0.5,
                "value": {
                    "metric": "rt",
                    "value": 560.0,
                    "comparedValue": 500.0,
                    "success": True,
                    "query": "histogram_quantile(0.95, x)",
                },
                "displayName": "",
                "passTargets": [
                    {"criteria": "<=+10%", "targetValue": 550.0, "violated": True},
                    {"criteria": "<600", "targetValue": 600.0, "violated": False},
                ],
                "warningTargets": [{"criteria": "<=800", "targetValue": 800.0, "violated": False}],
                "keySli": False,
                "status": "warning",
            }
        ],
        "comparedEvents": ["e1"],
    }
    assert "comparedEvents" not in verdict.keptn()


def test_contract_shape_of_reconciler_evaluate() -> None:
    slo = slo_from([{"sli": "rt", "pass": [{"criteria": ["<600"]}]}, {"sli": "info"}], total={"pass": "90%"})
    verdict = evaluate(slo, answer(("rt", 200.0)))
    out = verdict.contract()
    assert list(out) == ["result", "score", "event_result", "status", "message", "indicator_results"]
    rt, info = out["indicator_results"]
    assert list(rt) == [
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
    assert rt["pass_targets"] == [{"criteria": "<600", "target_value": 600.0, "violated": False}]
    assert (info["metric"], info["status"], info["value"], info["success"]) == ("info", "info", None, False)
