"""`<service>/slo.yaml` and the criteria grammar of Keptn's lighthouse (spec 4.3, 4.6).

The model keeps Keptn's two sets of comparison defaults apart (no block at all vs.
a block with missing fields), because they request different numbers of previous
evaluations and users' gates depend on it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.formats.yamldoc import parse_model

_CRITERIA = re.compile(r"^[<|=>]{1,2}[+|-]?\d*\.?\d*%?")
_OPERATORS = ("<=", "<", "=", ">=", ">")


class CriteriaError(ValueError):
    pass


@dataclass(frozen=True)
class Criterion:
    """One parsed criteria string such as `<=+10%`."""

    text: str
    operator: str
    value: float
    relative: bool
    percent: bool
    increase: bool

    def target(self, aggregate: float) -> float:
        if not self.relative:
            return self.value
        if self.percent:
            delta = self.value if self.increase else -self.value
            return aggregate * (100 + delta) / 100
        return aggregate + self.value if self.increase else aggregate - self.value

    def holds(self, value: float, target: float) -> bool:
        op = self.operator
        if op == "<=":
            return value <= target
        if op == "<":
            return value < target
        if op == "=":
            return value == target
        if op == ">=":
            return value >= target
        return value > target


_GO_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_GO_HEX = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?\d+")


def parse_go_float(text: str) -> float | None:
    """A finite number as Go's `strconv.ParseFloat` reads it, else None.

    Keptn parses criteria targets and total_score percentages with ParseFloat, so
    `1e3` and `0x1p4` are numbers while ` 5`, `1_000` and `5ms` are not (Python's
    float() would take the first two). Infinities and NaN, which ParseFloat accepts,
    are refused: Keptn could not serialise them into the evaluation event anyway.
    """
    if _GO_DECIMAL.fullmatch(text):
        value = float(text)
    elif _GO_HEX.fullmatch(text):
        value = float.fromhex(text)
    else:
        return None
    return value if math.isfinite(value) else None


def parse_criterion(text: str) -> Criterion:
    """Parse exactly as lighthouse does, including its permissive first check (spec 4.6)."""
    s = text.replace(" ", "")
    if not _CRITERIA.match(s):
        raise CriteriaError("invalid criteria string")
    # `|` passes the pattern (it sits in the character class) but is no operator.
    op = next((o for o in _OPERATORS if s.startswith(o)), "")
    rest = s[len(op) :]
    relative = percent = False
    increase = True
    if rest.endswith("%"):
        relative = percent = True
        rest = rest[:-1]
    if rest.startswith("-"):
        relative, increase = True, False
        rest = rest[1:]
    elif rest.startswith("+"):
        relative, increase = True, True
        rest = rest[1:]
    value = parse_go_float(rest)
    if value is None or not op:
        raise CriteriaError("could not parse criteria target value")
    return Criterion(
        text=text, operator=op, value=value, relative=relative, percent=percent, increase=increase
    )


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CriteriaGroup(_Lenient):
    criteria: list[str] = Field(default_factory=list)

    @field_validator("criteria", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, list):
            return [v if isinstance(v, str) else str(v) for v in value]
        return value


NoDataPolicy = Literal["fail", "warning", "pass", "ignore", "zero"]
"""How an SLI whose query returned no data counts (our extension, `onNoData`):
`fail` (Keptn: the objective fails), `warning` (half its weight), `pass` (full
weight), `ignore` (informational: left out of the score), `zero` (scored as the
value 0, e.g. an error counter without any series). Errors other than "no data"
(bad query, Prometheus down) always fail the objective."""

SLIProvider = Literal["prometheus", "locust"]


class Objective(_Lenient):
    sli: str
    display_name: str = Field(default="", alias="displayName")
    pass_: list[CriteriaGroup] | None = Field(default=None, alias="pass")
    warning: list[CriteriaGroup] | None = None
    weight: int = 1
    key_sli: bool = False
    # Our extension: overrides the SLO-wide `onNoData` for this objective.
    on_no_data: NoDataPolicy | None = Field(default=None, alias="onNoData")

    @field_validator("weight", mode="before")
    @classmethod
    def _weight(cls, value: Any) -> Any:
        return 1 if value in (None, 0) else value

    @field_validator("display_name", mode="before")
    @classmethod
    def _dn(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("pass_", "warning", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [g for g in value if g is not None]
        return value


AGGREGATE_FUNCTIONS = ("avg", "p50", "p90", "p95")


class Comparison(_Lenient):
    compare_with: str = ""
    include_result_with_score: str = "all"
    number_of_comparison_results: int = 3
    aggregate_function: str = "avg"

    @field_validator("include_result_with_score", "aggregate_function", "compare_with", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("aggregate_function", mode="after")
    @classmethod
    def _known_function(cls, value: str) -> str:
        # Keptn silently aggregates an unknown function to 0 and still compares
        # against it (a typo turns `<=+10%` into `<=0`); we refuse it instead.
        if value == "":
            return "avg"
        if value not in AGGREGATE_FUNCTIONS:
            raise ValueError(f"unknown aggregate_function {value!r}; expected one of avg, p50, p90, p95")
        return value

    @property
    def requested(self) -> int:
        """How many previous evaluations lighthouse asks for (spec 4.3)."""
        if self.compare_with == "single_result":
            return 1
        if self.compare_with == "several_results":
            return self.number_of_comparison_results
        return 3


NO_BLOCK_COMPARISON = Comparison(
    compare_with="single_result", include_result_with_score="all", number_of_comparison_results=1
)


class TotalScore(_Lenient):
    pass_: str | None = Field(default=None, alias="pass")
    warning: str | None = None

    @field_validator("pass_", "warning", mode="before")
    @classmethod
    def _str(cls, value: Any) -> Any:
        return None if value is None else str(value)


class SLO(_Lenient):
    spec_version: str | None = None
    filter: dict[str, str] | None = None
    comparison: Comparison | None = None
    objectives: list[Objective] = Field(default_factory=list)
    total_score: TotalScore | None = None
    # Our extension: how an SLI without data counts ("fail" is Keptn's behaviour).
    on_no_data: NoDataPolicy = Field(default="fail", alias="onNoData")
    # Our extension: which SLI provider answers this SLO's get-sli (Keptn: per project).
    sli_provider: SLIProvider = Field(default="prometheus", alias="sliProvider")

    @field_validator("spec_version", mode="before")
    @classmethod
    def _ver(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, list):
            return [o for o in value if o is not None]
        return value

    def no_data_policy(self, objective: Objective) -> NoDataPolicy:
        return objective.on_no_data or self.on_no_data

    @property
    def effective_comparison(self) -> Comparison:
        return self.comparison if self.comparison is not None else NO_BLOCK_COMPARISON


def load_slo(data: bytes | str, file: str = "slo.yaml") -> SLO | None:
    """Parse an SLO file; an empty file means "no SLO configured" (returns None)."""
    if (isinstance(data, bytes | str)) and not data.strip():
        return None
    return parse_model(SLO, data, file)
