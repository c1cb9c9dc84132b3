"""Lighthouse's quality-gate scoring, reproduced exactly (spec 4.5-4.12); pure, no I/O.

Teams migrating from Keptn keep their `slo.yaml` and expect the same verdicts and
the same numbers, so this module follows lighthouse 1.4.5 step by step: criteria
AND inside a group and OR across groups, weights, warning halving, key SLIs,
informational objectives, comparison with previous evaluations, the total score
and the error table. It differs only where Keptn's behaviour is a trap for users
(each such place says so and `docs/keptn-differences.md` lists them): a failed SLI
fetch never yields a passing evaluation, and "no data" can be counted per SLO
or objective (`onNoData`).

Input: the parsed `SLO`, the SLI provider's answer (`SLIAnswer`) and previous
evaluations as plain data (`PreviousEvaluation`, newest first, already selected).
Output: an `Evaluation` that renders both Keptn's `data.evaluation` and the
`reconciler evaluate` JSON contract.

May import: `reconciler.formats` and `reconciler.formats.gotime` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from reconciler.formats.gotime import go_float
from reconciler.formats.slo import (
    SLO,
    Comparison,
    CriteriaError,
    CriteriaGroup,
    Criterion,
    NoDataPolicy,
    Objective,
    parse_criterion,
    parse_go_float,
)

NO_DATA_MESSAGE = "query did not return any values"
"""The provider message that marks "the query answered, but with no sample"
(prometheus-service's wording); only this failure is subject to `onNoData`."""

NO_VALUE_MESSAGE = "no value received from SLI provider"

_Status = Literal["pass", "warning", "fail", "info"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SLIValue(_Model):
    """One indicator value of a `get-sli.finished` (Keptn's SLIResult), plus the query we ran."""

    metric: str
    value: float = 0.0
    compared_value: float = Field(
        default=0.0, validation_alias=AliasChoices("comparedValue", "compared_value")
    )
    success: bool = False
    message: str = ""
    query: str | None = None
    """Our extension: the resolved query, so the ledger shows why a gate passed or failed."""

    @field_validator("message", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("value", "compared_value", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return 0.0 if value is None else value

    @field_validator("value", "compared_value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return value

    @property
    def no_data(self) -> bool:
        """The query answered without a sample (as opposed to failing)."""
        return not self.success and (
            self.message == NO_DATA_MESSAGE or self.message.startswith(NO_DATA_MESSAGE + ":")
        )

    def keptn(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "value": self.value,
            "comparedValue": self.compared_value,
            "success": self.success,
        }
        if self.message:
            out["message"] = self.message
        if self.query is not None:
            out["query"] = self.query
        return out


class SLIAnswer(_Model):
    """The SLI provider's answer: `get-sli.finished` data, or `reconciler evaluate --sli`."""

    result: Literal["pass", "warning", "fail"] = "pass"
    status: Literal["succeeded", "errored", "aborted", "unknown"] = "succeeded"
    message: str = ""
    indicator_values: list[SLIValue] = Field(
        default_factory=list, validation_alias=AliasChoices("indicator_values", "indicatorValues")
    )

    @field_validator("message", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("indicator_values", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        return [] if value is None else value


def provider_result(values: Sequence[SLIValue]) -> Literal["pass", "warning", "fail"]:
    """prometheus-service's summary: none / some / all SLIs failed (spec 7.4)."""
    failed = sum(1 for v in values if not v.success)
    if not values or failed == 0:
        return "pass"
    return "fail" if failed == len(values) else "warning"


class PreviousIndicator(_Model):
    metric: str
    value: float = 0.0
    success: bool = False

    @field_validator("value", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return 0.0 if value is None else value


class PreviousEvaluation(_Model):
    """An earlier evaluation as far as comparison needs it; entries without `metric` are ignored."""

    id: str | None = None
    result: str = ""
    score: float = 0.0
    indicator_results: list[PreviousIndicator] = Field(default_factory=list)

    @field_validator("indicator_results", mode="before")
    @classmethod
    def _with_metric(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, list):
            return [v for v in value if not isinstance(v, dict) or v.get("metric") is not None]
        return value

    @classmethod
    def from_keptn(cls, event_id: str | None, data: dict[str, Any]) -> PreviousEvaluation:
        """From an `evaluation.finished` data block; malformed entries are skipped, not fatal."""
        evaluation = data.get("evaluation") if isinstance(data.get("evaluation"), dict) else {}
        assert isinstance(evaluation, dict)
        indicators: list[PreviousIndicator] = []
        for item in evaluation.get("indicatorResults") or []:
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(value, dict) or not isinstance(value.get("metric"), str):
                continue
            raw = value.get("value")
            if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw):
                raw = 0.0
            indicators.append(
                PreviousIndicator(
                    metric=value["metric"], value=float(raw), success=value.get("success") is True
                )
            )
        score = evaluation.get("score")
        return cls(
            id=event_id,
            result=str(data.get("result") or ""),
            score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else 0.0,
            indicator_results=indicators,
        )


class Target(_Model):
    criteria: str
    target_value: float = 0.0
    violated: bool = False

    def keptn(self) -> dict[str, Any]:
        return {"criteria": self.criteria, "targetValue": self.target_value, "violated": self.violated}

    def contract(self) -> dict[str, Any]:
        return {"criteria": self.criteria, "target_value": self.target_value, "violated": self.violated}


class IndicatorResult(_Model):
    """One objective's outcome (Keptn's SLIEvaluationResult)."""

    sli: str
    display_name: str = ""
    status: _Status
    score: float = 0.0
    value: SLIValue | None = None
    key_sli: bool = False
    pass_targets: list[Target] | None = None
    warning_targets: list[Target] | None = None

    def keptn(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "value": self.value.keptn() if self.value is not None else None,
            "displayName": self.display_name,
            "passTargets": _targets(self.pass_targets, "keptn"),
            "warningTargets": _targets(self.warning_targets, "keptn"),
            "keySli": self.key_sli,
            "status": self.status,
        }

    def contract(self) -> dict[str, Any]:
        value = self.value
        return {
            "metric": value.metric if value is not None else self.sli,
            "status": self.status,
            "score": self.score,
            "value": value.value if value is not None else None,
            "success": value.success if value is not None else False,
            "message": value.message if value is not None else "",
            "compared_value": value.compared_value if value is not None else 0.0,
            "key_sli": self.key_sli,
            "pass_targets": _targets(self.pass_targets, "contract") or [],
            "warning_targets": _targets(self.warning_targets, "contract") or [],
        }


def _targets(targets: list[Target] | None, shape: str) -> list[dict[str, Any]] | None:
    if targets is None:
        return None
    return [t.keptn() if shape == "keptn" else t.contract() for t in targets]


class Evaluation(_Model):
    """The verdict. `result`/`score` come from the score; `event_result`/`status`/`message`
    are what `evaluation.finished` carries (they differ when the provider failed, the SLO
    has no objectives, or the input was unusable)."""

    result: Literal["pass", "warning", "fail"]
    score: float = 0.0
    event_result: Literal["pass", "warning", "fail"]
    status: Literal["succeeded", "errored"] = "succeeded"
    message: str = ""
    indicator_results: list[IndicatorResult] | None = None

    def keptn(
        self,
        *,
        time_start: str = "",
        time_end: str = "",
        slo_file_content: str = "",
        compared_events: Sequence[str] = (),
    ) -> dict[str, Any]:
        """`data.evaluation` of `evaluation.finished` (spec 4.10).

        Unlike Keptn, the nested result never says `pass` when the event fails (Keptn
        reports `pass` inside an errored event, and keeps a computed pass when every
        SLI fetch failed); the score stays as computed.
        """
        out: dict[str, Any] = {
            "timeStart": time_start,
            "timeEnd": time_end,
            "result": "fail" if self.event_result == "fail" else self.result,
            "score": self.score,
            "sloFileContent": slo_file_content,
            "indicatorResults": (
                [r.keptn() for r in self.indicator_results] if self.indicator_results is not None else None
            ),
        }
        if compared_events:
            out["comparedEvents"] = list(compared_events)
        return out

    def contract(self) -> dict[str, Any]:
        """The `reconciler evaluate --output json` object; the keys are a published contract."""
        return {
            "result": self.result,
            "score": self.score,
            "event_result": self.event_result,
            "status": self.status,
            "message": self.message,
            "indicator_results": [r.contract() for r in self.indicator_results or []],
        }


class ScoreConfigError(ValueError):
    """`total_score` unusable: the evaluation errors (spec 4.9 step 1)."""


# --------------------------------------------------------------------------------------------
# comparison with previous evaluations (spec 4.5, 4.7)


def percentile(values: Sequence[float], p: float) -> float:
    """Lighthouse's percentile: pos = p(n+1) over the sorted values, linear in between."""
    if not values:
        return 0.0
    v = sorted(values)
    n = len(v)
    pos = p * float(n + 1)
    if pos < 1.0:
        return v[0]
    if pos >= float(n):
        return v[n - 1]
    lower = v[int(pos) - 1]
    upper = v[int(pos)]
    return lower + (pos - math.floor(pos)) * (upper - lower)


def aggregate(values: Sequence[float], function: str) -> float:
    if not values:
        return 0.0
    if function == "avg":
        total = 0.0
        for value in values:
            total += value
        return total / float(len(values))
    if function in ("p50", "p90", "p95"):
        return percentile(values, {"p50": 0.5, "p90": 0.9, "p95": 0.95}[function])
    # The SLO model refuses other names; Keptn would aggregate them to 0.
    return 0.0


def previous_values(previous: Sequence[PreviousEvaluation], sli: str) -> list[float]:
    """Successful earlier values of one SLI; an SLI that failed its criteria still counts."""
    return [
        indicator.value
        for evaluation in previous
        for indicator in evaluation.indicator_results
        if indicator.metric == sli and indicator.success
    ]


# --------------------------------------------------------------------------------------------
# per-objective evaluation (spec 4.6, 4.8)


class _Comparer:
    """Criteria evaluation for one objective against its aggregated history."""

    def __init__(self, history: list[float], comparison: Comparison) -> None:
        self.has_history = bool(history)
        self.aggregate = aggregate(history, comparison.aggregate_function) if history else 0.0
        self.evaluated = False

    def target(self, criterion: Criterion) -> float:
        if not criterion.relative:
            return criterion.value
        return criterion.target(self.aggregate) if self.has_history else 0.0

    def check(self, value: float, text: str) -> Target:
        criterion = parse_criterion(text)
        self.evaluated = True
        if criterion.relative and not self.has_history:
            # No usable previous value: a relative criterion is satisfied (spec 4.6).
            return Target(criteria=text, target_value=0.0, violated=False)
        target = self.target(criterion)
        return Target(criteria=text, target_value=target, violated=not criterion.holds(value, target))

    def groups(self, value: float, groups: Sequence[CriteriaGroup]) -> tuple[bool, list[Target] | None]:
        """OR across groups, AND inside one; every criterion reported. Raises CriteriaError."""
        satisfied = False
        targets: list[Target] = []
        for group in groups:
            group_ok = True
            for text in group.criteria:
                target = self.check(value, text)
                group_ok = group_ok and not target.violated
                targets.append(target)
            satisfied = satisfied or group_ok
        return satisfied, (targets or None)

    def unevaluated(self, groups: Sequence[CriteriaGroup] | None) -> list[Target]:
        """Targets listed as violated when there is nothing to compare (info / failed SLI).

        Keptn reports the bare aggregate as the target of a relative criterion here;
        we report the target the criterion would have had.
        """
        out: list[Target] = []
        for group in groups or []:
            for text in group.criteria:
                try:
                    criterion = parse_criterion(text)
                except CriteriaError:
                    continue
                out.append(Target(criteria=text, target_value=self.target(criterion), violated=True))
        return out


def _take(values: list[SLIValue], sli: str) -> SLIValue | None:
    """Consume the first value for `sli` the way lighthouse does (swap with the last, truncate)."""
    for i, value in enumerate(values):
        if value.metric == sli:
            values[i] = values[-1]
            values.pop()
            return value
    return None


class _KeyFailure:
    def __init__(self) -> None:
        self.failed = False
        self.name = ""
        self.message = ""

    def record(self, objective: Objective, message: str) -> None:
        self.failed = True
        # Keptn names the objective by displayName only (often empty); fall back to the SLI.
        self.name = objective.display_name or objective.sli
        self.message = message


class _ObjectiveOutcome:
    def __init__(
        self, result: IndicatorResult, counted: bool, excused: bool, unexcused_failure: bool
    ) -> None:
        self.result = result
        self.counted = counted
        self.excused = excused
        self.unexcused_failure = unexcused_failure


def _listed(
    objective: Objective, comparer: _Comparer, status: _Status, score: float, value: SLIValue | None
) -> IndicatorResult:
    """An objective not compared: its targets listed as they would have been."""
    return IndicatorResult(
        sli=objective.sli,
        display_name=objective.display_name,
        status=status,
        score=score,
        value=value,
        key_sli=objective.key_sli,
        pass_targets=comparer.unevaluated(objective.pass_),
        warning_targets=comparer.unevaluated(objective.warning),
    )


def _evaluate_objective(
    objective: Objective,
    found: SLIValue | None,
    policy: NoDataPolicy,
    comparer: _Comparer,
    key: _KeyFailure,
) -> _ObjectiveOutcome:
    value = found.model_copy() if found is not None else None
    if not objective.pass_:
        return _ObjectiveOutcome(
            _listed(objective, comparer, "info", 0.0, value),
            counted=False,
            excused=False,
            unexcused_failure=False,
        )
    if value is not None and value.no_data and policy != "fail":
        if policy != "zero":
            return _excused_no_data(objective, comparer, policy, value)
        value = value.model_copy(
            update={
                "value": 0.0,
                "success": True,
                "message": f"{NO_DATA_MESSAGE}; scored as 0 (onNoData: zero)",
            }
        )
    if value is None or not value.success:
        failed = (
            value
            if value is not None
            else SLIValue(metric=objective.sli, success=False, message=NO_VALUE_MESSAGE)
        )
        if objective.key_sli:
            key.record(objective, failed.message)
        return _ObjectiveOutcome(
            _listed(objective, comparer, "fail", 0.0, failed),
            counted=True,
            excused=False,
            unexcused_failure=True,
        )
    excused = policy == "zero" and found is not None and found.no_data
    return _compared(objective, value, comparer, key, excused=excused)


def _excused_no_data(
    objective: Objective, comparer: _Comparer, policy: NoDataPolicy, value: SLIValue
) -> _ObjectiveOutcome:
    """No data, and the SLO's `onNoData` says what that counts as (ignore, warning, pass)."""
    weight = float(objective.weight)
    if policy == "ignore":
        return _ObjectiveOutcome(
            _listed(objective, comparer, "info", 0.0, value),
            counted=False,
            excused=True,
            unexcused_failure=False,
        )
    if policy == "warning":
        return _ObjectiveOutcome(
            _listed(objective, comparer, "warning", 0.5 * weight, value),
            counted=True,
            excused=True,
            unexcused_failure=False,
        )
    return _ObjectiveOutcome(  # pass
        _listed(objective, comparer, "pass", weight, value),
        counted=True,
        excused=True,
        unexcused_failure=False,
    )


def _compared(
    objective: Objective, value: SLIValue, comparer: _Comparer, key: _KeyFailure, *, excused: bool
) -> _ObjectiveOutcome:
    """A value compared with the pass and warning criteria (a CriteriaError in pass aborts all)."""
    weight = float(objective.weight)
    passed, pass_targets = comparer.groups(value.value, objective.pass_ or [])
    status: _Status = "pass" if passed else "fail"
    score = weight if passed else 0.0
    warning_targets: list[Target] | None = None
    warned = False
    if objective.warning:
        try:
            warned, warning_targets = comparer.groups(value.value, objective.warning)
        except CriteriaError:
            warned, warning_targets = False, []
        if not passed and warned:
            status, score = "warning", 0.5 * weight
    if not passed and not warned:
        if objective.key_sli:
            key.record(objective, f"failed evaluation with score {0.0:f}")
        status, score = "fail", 0.0
    if comparer.evaluated:
        value = value.model_copy(update={"compared_value": comparer.aggregate})
    result = IndicatorResult(
        sli=objective.sli,
        display_name=objective.display_name,
        status=status,
        score=score,
        value=value,
        key_sli=objective.key_sli,
        pass_targets=pass_targets,
        warning_targets=warning_targets,
    )
    return _ObjectiveOutcome(result, counted=True, excused=excused, unexcused_failure=False)


# --------------------------------------------------------------------------------------------
# total score (spec 4.9)


def _percentages(slo: SLO) -> tuple[float, float | None]:
    total = slo.total_score
    if total is None or not total.pass_:
        raise ScoreConfigError("no target score defined")
    pass_pct = parse_go_float(total.pass_.removesuffix("%"))
    if pass_pct is None:
        raise ScoreConfigError("could not parse pass target percentage")
    warn_pct: float | None = None
    if total.warning:
        warn_pct = parse_go_float(total.warning.removesuffix("%"))
        if warn_pct is None:
            raise ScoreConfigError("could not parse warning target percentage")
    return pass_pct, warn_pct


def _verdict(
    score: float, pass_pct: float, warn_pct: float | None, key: _KeyFailure, message: str
) -> tuple[Literal["pass", "warning", "fail"], str]:
    if score >= pass_pct and not key.failed:
        return "pass", message
    if warn_pct is not None and not key.failed:
        if score >= warn_pct:
            return "warning", (
                f"Evaluation returned a warning: the calculated score of {go_float(score)} "
                f"is close to the warning target value of {go_float(warn_pct)}"
            )
        return "fail", (
            f"Evaluation failed since the calculated score of {go_float(score)} "
            f"is below the warning value of {go_float(warn_pct)}"
        )
    if key.failed:
        return "fail", f"Evaluation failed due to key_sli objective '{key.name}': {key.message}"
    return "fail", (
        f"Evaluation failed since the calculated score of {go_float(score)} "
        f"is below the target value of {go_float(pass_pct)}"
    )


def _errored(message: str) -> Evaluation:
    return Evaluation(result="fail", score=0.0, event_result="fail", status="errored", message=message)


def evaluate(
    slo: SLO | None,
    answer: SLIAnswer,
    previous: Sequence[PreviousEvaluation] = (),
    *,
    project: str = "",
) -> Evaluation:
    """Score an SLI answer against an SLO as lighthouse does (spec 4.8-4.11).

    `previous` is the already selected list of earlier evaluations, newest first
    (the caller applies `include_result_with_score`, the count and invalidations).
    """
    if answer.status == "aborted":
        return _errored("evaluation performed by lighthouse was aborted")
    if answer.status == "errored":
        return _errored(f"evaluation performed by lighthouse received an unexpected error: {answer.message}")
    if slo is None:
        message = (
            f"no evaluation performed by lighthouse because no SLO file configured for project {project}"
        )
        return Evaluation(result="pass", score=0.0, event_result="pass", message=message)
    if not slo.objectives:
        return _without_objectives(slo)

    scored = _score_objectives(slo, answer, previous)
    if isinstance(scored, Evaluation):
        return scored
    message = ""
    if scored.unused:
        names = ", ".join(v.metric for v in scored.unused)
        message = (
            f"Lighthouse received additional SLIs, which are not specified as SLO: {names} . "
            "Please consider using them as an SLO."
        )

    try:
        pass_pct, warn_pct = _percentages(slo)
    except ScoreConfigError as exc:
        return _errored(str(exc))

    result: Literal["pass", "warning", "fail"]
    if scored.maximum == 0:
        result = "pass"
        score = 100.0
    else:
        total = sum((r.score for r in scored.results if r.pass_targets), 0.0)
        # The spec's contract (4.9, 4.12): 100 x total / max, a single rounding, so a
        # third prints as 66.66666666666667. lighthouse 1.4.5 divides first and prints
        # 66.66666666666666; see docs/keptn-differences.md.
        score = 100.0 * total / scored.maximum
        result, message = _verdict(score, pass_pct, warn_pct, scored.key, message)

    event_result = result
    if answer.result == "fail" and not (scored.excused and not scored.unexcused):
        # Every SLI fetch failed. Unless each failure was "no data" that the SLO
        # explicitly counts otherwise, the gate fails whatever the score says.
        event_result = "fail"
        message = f"lighthouse failed because SLI failed with message {answer.message}"
    return Evaluation(
        result=result,
        score=score,
        event_result=event_result,
        message=message,
        indicator_results=scored.results,
    )


def _without_objectives(slo: SLO) -> Evaluation:
    try:
        pass_pct, warn_pct = _percentages(slo)
    except ScoreConfigError as exc:
        return _errored(str(exc))
    # Keptn scores an empty objective list as 0 of 100, then fails the event anyway.
    empty_result, _ = _verdict(0.0, pass_pct, warn_pct, _KeyFailure(), "")
    return Evaluation(
        result=empty_result,
        score=0.0,
        event_result="fail",
        message="lighthouse failed because no SLO objective was provided",
    )


@dataclass
class _Scored:
    """Every objective scored: what the total and the verdict are made of."""

    results: list[IndicatorResult] = field(default_factory=list)
    maximum: float = 0.0
    excused: int = 0
    unexcused: int = 0
    key: _KeyFailure = field(default_factory=_KeyFailure)
    unused: list[SLIValue] = field(default_factory=list)
    """SLI values no objective asked for."""


def _score_objectives(
    slo: SLO, answer: SLIAnswer, previous: Sequence[PreviousEvaluation]
) -> _Scored | Evaluation:
    """Each objective in file order (an unparsable criterion fails the whole evaluation)."""
    comparison = slo.effective_comparison
    values = list(answer.indicator_values)
    scored = _Scored()
    for objective in slo.objectives:
        found = _take(values, objective.sli)
        comparer = _Comparer(previous_values(previous, objective.sli), comparison)
        try:
            outcome = _evaluate_objective(
                objective, found, slo.no_data_policy(objective), comparer, scored.key
            )
        except CriteriaError as exc:
            return Evaluation(
                result="fail",
                score=0.0,
                event_result="fail",
                message=f"error with {objective.display_name or objective.sli}: {exc}",
            )
        if outcome.counted:
            scored.maximum += float(objective.weight)
        scored.excused += outcome.excused
        scored.unexcused += outcome.unexcused_failure
        scored.results.append(outcome.result)
    scored.unused = values
    return scored
