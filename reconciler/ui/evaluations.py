"""The evaluations of one service in one stage, as Keptn's Bridge showed them: a heatmap and a score chart.

Read from the ledger's `evaluation.finished` events (the same ones the next
evaluation compares with), narrowed by the ledger's index to the service before
anything is decoded. Rows are the SLIs with their criteria, from the SLO file each
evaluation carries (`sloFileContent`, the SLO as it was pinned), columns the last N
evaluations, oldest left. Everything here is pure over the events.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from reconciler.formats.events import KeptnEvent
from reconciler.formats.problems import ConfigError
from reconciler.formats.slo import SLO, load_slo
from reconciler.ui import charts, fmt

FINISHED = "sh.keptn.event.evaluation.finished"
INVALIDATED = "sh.keptn.event.evaluation.invalidated"
DEFAULT_COLUMNS = 10
MAX_COLUMNS = 50
MAX_SLO_CHARS = 512 * 1024


@dataclass(frozen=True)
class Target:
    criteria: str
    target: str
    violated: bool


@dataclass(frozen=True)
class IndicatorLine:
    sli: str
    name: str
    value: str
    compared: str
    status: str
    score: str
    key_sli: bool
    pass_targets: list[Target]
    warning_targets: list[Target]
    message: str


@dataclass(frozen=True)
class Selected:
    event: KeptnEvent
    result: str
    score: str
    message: str
    window: str
    invalidated: bool
    lines: list[IndicatorLine]


@dataclass
class EvaluationsView:
    stage: str
    service: str
    count: int
    events: list[KeptnEvent] = field(default_factory=list)
    heatmap: Any = None
    chart: Any = None
    selected: Selected | None = None
    pass_at: float | None = None
    warning_at: float | None = None


def _evaluation(event: KeptnEvent) -> dict[str, Any]:
    block = event.data.get("evaluation")
    return block if isinstance(block, dict) else {}


def _indicators(event: KeptnEvent) -> list[dict[str, Any]]:
    found = _evaluation(event).get("indicatorResults")
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def _metric(indicator: dict[str, Any]) -> str:
    value = indicator.get("value")
    metric = value.get("metric") if isinstance(value, dict) else None
    return str(metric or indicator.get("displayName") or "")


def slo_of(event: KeptnEvent) -> SLO | None:
    """The SLO the evaluation was scored against, from its base64 `sloFileContent`."""
    content = _evaluation(event).get("sloFileContent")
    if not isinstance(content, str) or not content or len(content) > MAX_SLO_CHARS:
        return None
    return _parse_slo(content)


@functools.lru_cache(maxsize=64)
def _parse_slo(content: str) -> SLO | None:
    """Evaluations of one service mostly carry the same few SLO versions: parsed once each."""
    try:
        return load_slo(base64.b64decode(content, validate=True), "sloFileContent")
    except (binascii.Error, ValueError, ConfigError):
        return None


def percent(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        return None


def _criteria_text(groups: Any) -> str:
    """`[{criteria: [a, b]}, {criteria: [c]}]` -> `a and b, or c` (Keptn: groups are OR, items AND)."""
    if not groups:
        return ""
    texts = []
    for group in groups:
        items = getattr(group, "criteria", None) or []
        texts.append(" and ".join(str(i) for i in items))
    return ", or ".join(t for t in texts if t)


def _rows(events: Sequence[KeptnEvent]) -> list[charts.Row]:
    """SLIs in the newest SLO's order, then any that only older evaluations had."""
    rows: list[charts.Row] = []
    seen: set[str] = set()
    for event in reversed(events):
        slo = slo_of(event)
        by_metric = {_metric(i): i for i in _indicators(event)}
        objectives = list(slo.objectives or []) if slo is not None else []
        for objective in objectives:
            name = objective.sli
            if name in seen:
                continue
            seen.add(name)
            criteria = []
            if objective.pass_:
                criteria.append("pass " + _criteria_text(objective.pass_))
            if objective.warning:
                criteria.append("warning " + _criteria_text(objective.warning))
            rows.append(
                charts.Row(
                    sli=name,
                    label=objective.display_name or name,
                    criteria="; ".join(criteria) or "informative",
                    key_sli=bool(objective.key_sli),
                )
            )
        for name, indicator in by_metric.items():
            if name and name not in seen:
                seen.add(name)
                targets = indicator.get("passTargets") or []
                text = ", ".join(str(t.get("criteria", "")) for t in targets if isinstance(t, dict))
                rows.append(
                    charts.Row(
                        sli=name,
                        label=str(indicator.get("displayName") or name),
                        criteria=f"pass {text}" if text else "informative",
                        key_sli=indicator.get("keySli") is True,
                    )
                )
    return rows


def _cell(indicator: dict[str, Any] | None) -> charts.Cell:
    if indicator is None:
        return charts.Cell("", "")
    value = indicator.get("value") if isinstance(indicator.get("value"), dict) else {}
    assert isinstance(value, dict)
    shown = fmt.number(value.get("value"))
    if value.get("success") is False:
        shown = "no value"
    return charts.Cell(str(indicator.get("status") or ""), shown)


def _targets(found: Any) -> list[Target]:
    if not isinstance(found, list):
        return []
    return [
        Target(str(t.get("criteria", "")), fmt.number(t.get("targetValue")), t.get("violated") is True)
        for t in found
        if isinstance(t, dict)
    ]


def _selected(event: KeptnEvent, invalidated: bool) -> Selected:
    block = _evaluation(event)
    lines = []
    for indicator in _indicators(event):
        value = indicator.get("value") if isinstance(indicator.get("value"), dict) else {}
        assert isinstance(value, dict)
        lines.append(
            IndicatorLine(
                sli=_metric(indicator),
                name=str(indicator.get("displayName") or _metric(indicator)),
                value=fmt.number(value.get("value")),
                compared=fmt.number(value.get("comparedValue")),
                status=str(indicator.get("status") or ""),
                score=fmt.number(indicator.get("score")),
                key_sli=indicator.get("keySli") is True,
                pass_targets=_targets(indicator.get("passTargets")),
                warning_targets=_targets(indicator.get("warningTargets")),
                message=str(value.get("message") or ""),
            )
        )
    window = ""
    if block.get("timeStart") or block.get("timeEnd"):
        window = f"{block.get('timeStart', '')} to {block.get('timeEnd', '')}"
    return Selected(
        event=event,
        result=event.result,
        score=fmt.number(block.get("score")),
        message=str(event.data.get("message") or ""),
        window=window,
        invalidated=invalidated,
        lines=lines,
    )


def build(
    events: Sequence[KeptnEvent],
    invalidated_ids: set[str],
    *,
    project: str,
    stage: str,
    service: str,
    count: int,
    selected: str | None,
) -> EvaluationsView:
    """The last `count` evaluations of project/stage/service from `events` (evaluation.finished, oldest first)."""
    mine = [e for e in events if e.type == FINISHED and e.stage == stage and e.service == service]
    if project:
        mine = [e for e in mine if e.project == project]
    last = mine[-count:]
    view = EvaluationsView(stage=stage, service=service, count=count, events=last)
    if not last:
        return view
    chosen = next((e for e in last if e.id == selected), None) if selected else None
    chosen = chosen or last[-1]
    columns = []
    for event in last:
        query = urlencode({"stage": stage, "service": service, "n": count, "evaluation": event.id})
        score = _evaluation(event).get("score")
        invalid = event.triggeredid in invalidated_ids
        columns.append(
            charts.Column(
                key=event.id,
                href=f"/ui/evaluations?{query}#evaluation",
                label=fmt.short_time(event.time)[6:] + (" ✗" if invalid else ""),
                result=event.result,
                score=float(score)
                if isinstance(score, int | float) and not isinstance(score, bool)
                else None,
                selected=event is chosen,
            )
        )
    rows = _rows(last)
    cells = []
    for row in rows:
        line = []
        for event in last:
            found = next((i for i in _indicators(event) if _metric(i) == row.sli), None)
            line.append(_cell(found))
        cells.append(line)
    slo = slo_of(last[-1])
    total = slo.total_score if slo is not None else None
    view.pass_at = percent(total.pass_) if total is not None else None
    view.warning_at = percent(total.warning) if total is not None else None
    view.heatmap = charts.heatmap(columns, rows, cells)
    view.chart = charts.score_chart(columns, view.pass_at, view.warning_at)
    view.selected = _selected(chosen, chosen.triggeredid in invalidated_ids)
    return view
