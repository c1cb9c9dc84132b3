"""`<service>/slo.yaml` and the criteria grammar of Keptn's lighthouse (spec 4.3, 4.6).

The model keeps Keptn's two sets of comparison defaults apart (no block at all vs.
a block with missing fields), because they request different numbers of previous
evaluations and users' gates depend on it.
"""

from __future__ import annotations

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


def parse_criterion(text: str) -> Criterion:
    """Parse exactly as lighthouse does, including its permissive first check."""
    s = text.replace(" ", "")
    if not _CRITERIA.match(s):
        raise CriteriaError("invalid criteria string")
    op = next(o for o in _OPERATORS if s.startswith(o))
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
    try:
        value = float(rest)
    except ValueError:
        raise CriteriaError("could not parse criteria target value") from None
    if rest.lower() in ("inf", "+inf", "-inf", "infinity", "nan"):
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


class Objective(_Lenient):
    sli: str
    display_name: str = Field(default="", alias="displayName")
    pass_: list[CriteriaGroup] | None = Field(default=None, alias="pass")
    warning: list[CriteriaGroup] | None = None
    weight: int = 1
    key_sli: bool = False

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


class Comparison(_Lenient):
    compare_with: str = ""
    include_result_with_score: str = "all"
    number_of_comparison_results: int = 3
    aggregate_function: str = "avg"

    @field_validator("include_result_with_score", "aggregate_function", "compare_with", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return "" if value is None else value

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
    on_no_data: Literal["fail", "warning", "pass", "ignore"] = Field(default="fail", alias="onNoData")

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

    @property
    def effective_comparison(self) -> Comparison:
        return self.comparison if self.comparison is not None else NO_BLOCK_COMPARISON


def load_slo(data: bytes | str, file: str = "slo.yaml") -> SLO | None:
    """Parse an SLO file; an empty file means "no SLO configured" (returns None)."""
    if (isinstance(data, bytes | str)) and not data.strip():
        return None
    return parse_model(SLO, data, file)
