"""The bench's frame: figures with their samples, statistics, ratios, the table and the JSON.

A scenario is a function from `Budget` to `Result`. It measures each figure
several times (the samples), names the baseline it is compared with (a figure of
the same scenario measured in the same run: the physical limit it stands
against), and may add derived ratios (e.g. flatness: rate at 100,000 events over
the rate at 0). Nothing here asserts anything about speed: numbers depend on the
machine, so they are printed and written, never judged.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    name: str
    unit: str
    samples: list[float]
    higher_is_better: bool = False
    baseline: str | None = None
    """Name of the figure (same scenario) this one is divided by."""
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95.0)

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else math.nan

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else math.nan

    @property
    def tail(self) -> float:
        """The "p95" column: the slow tail, i.e. the 95th percentile of a time, the 5th of a rate."""
        return percentile(self.samples, 5.0) if self.higher_is_better else self.p95


@dataclass
class Derived:
    name: str
    value: float
    note: str = ""


@dataclass
class Result:
    scenario: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def figure(self, name: str) -> Figure | None:
        return next((f for f in self.figures if f.name == name), None)

    def ratio(self, fig: Figure) -> float | None:
        base = self.figure(fig.baseline) if fig.baseline else None
        if base is None or not base.samples or not fig.samples or base.median == 0:
            return None
        return fig.median / base.median

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        return fig


@dataclass(frozen=True)
class Budget:
    """How much each scenario may do: `quick` shrinks counts for a smoke run; `deadline`
    (seconds per scenario) stops repetition early, reporting fewer samples."""

    quick: bool = False
    deadline: float = 240.0
    log: Callable[[str], None] = print

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


class Clock:
    """A scenario's deadline: loops ask `left()` before each repetition."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end


def percentile(samples: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(results: list[Result]) -> str:
    """The figures as a fixed-width table; ratios name their baseline."""
    header = ["scenario", "figure", "n", "median", "p95", "min", "max", "unit", "vs baseline"]
    rows: list[list[str]] = []
    for res in results:
        if res.error:
            rows.append([res.scenario, f"FAILED: {res.error}", "", "", "", "", "", "", ""])
            continue
        for fig in res.figures:
            ratio = res.ratio(fig)
            versus = (
                f"{ratio:.2f}x {fig.baseline}"
                if ratio is not None
                else ("(baseline)" if _is_base(res, fig) else "")
            )
            rows.append(
                [
                    res.scenario,
                    fig.name,
                    str(fig.n),
                    fmt(fig.median),
                    fmt(fig.tail),
                    fmt(fig.min),
                    fmt(fig.max),
                    fig.unit,
                    versus,
                ]
            )
        for d in res.derived:
            rows.append([res.scenario, d.name, "", fmt(d.value), "", "", "", "ratio", d.note])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    last = None
    for row in rows:
        if last is not None and row[0] != last:
            out.append("")
        out.append(line(row))
        last = row[0]
    return "\n".join(out)


def _is_base(res: Result, fig: Figure) -> bool:
    return any(f.baseline == fig.name for f in res.figures)


def to_json(results: list[Result], machine: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine, "argv": argv, "scenarios": []}
    for res in results:
        entry = asdict(res)
        entry["derived"] = [{**asdict(d), "value": _num(d.value)} for d in res.derived]
        entry["figures"] = []
        for fig in res.figures:
            ratio = res.ratio(fig)
            entry["figures"].append(
                {
                    **asdict(fig),
                    "n": fig.n,
                    "median": _num(fig.median),
                    "p95": _num(fig.tail),
                    "min": _num(fig.min),
                    "max": _num(fig.max),
                    "ratio_to_baseline": _num(ratio),
                }
            )
        out["scenarios"].append(entry)
    return out


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _num(value: float | None) -> float | None:
    """JSON has no NaN: a figure without samples is null."""
    return None if value is None or math.isnan(value) else value
