"""Inline SVG charts, built on the server: the evaluations heatmap and the score line chart.

No chart library and no script: an SVG in the page renders without JavaScript and
without a network, and a column of the heatmap is a plain link. Every text that
comes from the ledger (SLI names, criteria, values, ids) goes through
`markupsafe.Markup.format`, which escapes it, like Jinja2's autoescape does for
the HTML around it. Colours come from CSS classes (`static/ui.css`), not inline
styles, so the page's Content-Security-Policy needs no 'unsafe-inline'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

STATUSES = ("pass", "warning", "fail", "info")

LABEL_WIDTH = 300
COLUMN_WIDTH = 76
ROW_HEIGHT = 30
HEADER_HEIGHT = 44


@dataclass(frozen=True)
class Column:
    """One evaluation: a column of the heatmap and a point of the score chart."""

    key: str
    """What its link selects (the evaluation.finished event id)."""
    href: str
    label: str
    """Short time of the evaluation."""
    result: str
    score: float | None
    selected: bool = False


@dataclass(frozen=True)
class Row:
    sli: str
    label: str
    criteria: str
    key_sli: bool = False


@dataclass(frozen=True)
class Cell:
    status: str
    """pass | warning | fail | info (not scored) | "" (the SLI was not in that evaluation)."""
    value: str


def _status_class(status: str) -> str:
    return status if status in STATUSES else "none"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def heatmap(columns: Sequence[Column], rows: Sequence[Row], cells: Sequence[Sequence[Cell]]) -> Markup:
    """Rows = SLIs (with their criteria), columns = evaluations, oldest left; `cells[row][col]`."""
    width = LABEL_WIDTH + COLUMN_WIDTH * max(1, len(columns))
    height = HEADER_HEIGHT + ROW_HEIGHT * (len(rows) + 1)
    parts = [
        Markup(
            '<svg class="heatmap" width="{w}" height="{h}" '
            'viewBox="0 0 {w} {h}" role="img" aria-label="SLI results of the last {n} evaluations">'
        ).format(w=width, h=height, n=len(columns))
    ]
    for r, row in enumerate(rows):
        y = HEADER_HEIGHT + ROW_HEIGHT * r
        mark = " (key)" if row.key_sli else ""
        parts.append(
            Markup(
                '<g class="sli-label"><title>{sli}{mark}: {criteria}</title>'
                '<text x="6" y="{y1}" class="sli-name">{label}{mark}</text>'
                '<text x="6" y="{y2}" class="sli-criteria">{criteria_short}</text></g>'
            ).format(
                sli=row.sli,
                mark=mark,
                criteria=row.criteria,
                y1=y + 13,
                y2=y + 25,
                label=_clip(row.label, 34),
                criteria_short=_clip(row.criteria, 46),
            )
        )
    score_y = HEADER_HEIGHT + ROW_HEIGHT * len(rows)
    parts.append(Markup('<text x="6" y="{y}" class="sli-name">Score</text>').format(y=score_y + 19))
    for c, col in enumerate(columns):
        x = LABEL_WIDTH + COLUMN_WIDTH * c
        selected = " selected" if col.selected else ""
        parts.append(
            Markup(
                '<a href="{href}" class="column{selected}" data-column="{index}" data-evaluation="{key}">'
                "<title>evaluation {label}: {result}</title>"
                '<rect x="{x}" y="0" width="{cw}" height="{h}" class="column-bg"/>'
                '<text x="{tx}" y="16" class="column-label">{label}</text>'
                '<text x="{tx}" y="34" class="column-result result-{rclass}">{result}</text>'
            ).format(
                href=col.href,
                selected=selected,
                index=c,
                key=col.key,
                label=col.label,
                result=col.result or "-",
                x=x,
                cw=COLUMN_WIDTH,
                h=height,
                tx=x + COLUMN_WIDTH / 2,
                rclass=_status_class(col.result),
            )
        )
        for r in range(len(rows)):
            cell = cells[r][c] if r < len(cells) and c < len(cells[r]) else Cell("", "")
            y = HEADER_HEIGHT + ROW_HEIGHT * r
            parts.append(
                Markup(
                    '<rect x="{x}" y="{y}" width="{cw}" height="{ch}" rx="3" '
                    'class="cell cell-{status}" data-status="{status}"/>'
                    '<text x="{tx}" y="{ty}" class="cell-value">{value}</text>'
                ).format(
                    x=x + 2,
                    y=y + 2,
                    cw=COLUMN_WIDTH - 4,
                    ch=ROW_HEIGHT - 4,
                    status=_status_class(cell.status),
                    tx=x + COLUMN_WIDTH / 2,
                    ty=y + 19,
                    value=_clip(cell.value, 10),
                )
            )
        score = "-" if col.score is None else f"{col.score:.4g}"
        parts.append(
            Markup('<text x="{tx}" y="{ty}" class="cell-value score">{score}</text></a>').format(
                tx=x + COLUMN_WIDTH / 2, ty=score_y + 19, score=score
            )
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


PLOT_HEIGHT = 180
PLOT_TOP = 12
PLOT_BOTTOM = 28


def score_chart(columns: Sequence[Column], pass_at: float | None, warning_at: float | None) -> Markup:
    """The total score of each evaluation (0-100), aligned with the heatmap's columns,
    with the SLO's pass and warning thresholds as dashed lines."""
    width = LABEL_WIDTH + COLUMN_WIDTH * max(1, len(columns))
    height = PLOT_TOP + PLOT_HEIGHT + PLOT_BOTTOM

    def y_of(score: float) -> float:
        return round(PLOT_TOP + PLOT_HEIGHT * (1 - max(0.0, min(score, 100.0)) / 100.0), 1)

    parts = [
        Markup(
            '<svg class="scorechart" width="{w}" height="{h}" '
            'viewBox="0 0 {w} {h}" role="img" aria-label="total score of the last {n} evaluations">'
        ).format(w=width, h=height, n=len(columns))
    ]
    for tick in (0, 25, 50, 75, 100):
        parts.append(
            Markup(
                '<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" class="grid"/>'
                '<text x="{tx}" y="{ty}" class="axis">{tick}</text>'
            ).format(x0=LABEL_WIDTH, x1=width, y=y_of(tick), tx=LABEL_WIDTH - 8, ty=y_of(tick) + 4, tick=tick)
        )
    for name, value in (("pass", pass_at), ("warning", warning_at)):
        if value is None:
            continue
        parts.append(
            Markup(
                '<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" class="threshold threshold-{name}"/>'
                '<text x="{tx}" y="{ty}" class="threshold-label threshold-{name}">{name} ≥ {value}</text>'
            ).format(
                x0=LABEL_WIDTH,
                x1=width,
                y=y_of(value),
                tx=LABEL_WIDTH - 110,
                ty=y_of(value) + 4,
                name=name,
                value=f"{value:.4g}",
            )
        )
    points = [
        (LABEL_WIDTH + COLUMN_WIDTH * c + COLUMN_WIDTH / 2, y_of(col.score), col)
        for c, col in enumerate(columns)
        if col.score is not None
    ]
    if len(points) > 1:
        path = " ".join(f"{x},{y}" for x, y, _ in points)
        parts.append(Markup('<polyline points="{p}" class="score-line"/>').format(p=path))
    for x, y, col in points:
        parts.append(
            Markup(
                '<a href="{href}"><circle cx="{x}" cy="{y}" r="5" class="point result-{r}">'
                "<title>{label}: score {score}, {result}</title></circle></a>"
            ).format(
                href=col.href,
                x=x,
                y=y,
                r=_status_class(col.result),
                label=col.label,
                score=f"{col.score:.4g}" if col.score is not None else "-",
                result=col.result,
            )
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
