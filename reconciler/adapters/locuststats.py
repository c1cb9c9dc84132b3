"""Locust's own statistics as SLIs: an optional SLI provider (select it with `sliProvider: locust`).

A load test that sent no traffic used to pass a Prometheus gate built on rates
and percentiles that simply had nothing to say. Reading the load test's CSV
(`<prefix>_stats.csv`, the `Aggregated` row) makes "no requests" visible:
request count and throughput are 0, and the ratios and response times have no
data, which fails their objectives (`onNoData`, default `fail`).

Where the CSVs are: the job executor puts the directory holding the locust CSVs
of a test task into its `test.finished` data as `test.locustStatsDir` (relative
paths are relative to `Settings.data_dir`; the directory must lie inside it, so an
event cannot make the reconciler read arbitrary files). The sequence engine
carries it into `evaluation.triggered`, where the evaluation executor reads it.

SLIs (times in milliseconds, as locust reports them):
`request_count`, `failure_count`, `throughput` (requests/s), `error_rate`
(failures / requests), `response_time_avg`, `response_time_min`,
`response_time_max`, `response_time_p50`, `_p66`, `_p75`, `_p80`, `_p90`, `_p95`,
`_p98`, `_p99`, `_p99.9`, `_p99.99`, `_p100`.

May import: `reconciler.core` and the standard library.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from reconciler.core.scoring import NO_DATA_MESSAGE, SLIValue

STATS_DIR_KEY = "locustStatsDir"
"""Key under `data.test` of `test.finished` / `evaluation.triggered`."""

MAX_CSV_BYTES = 4 * 1024 * 1024

_PERCENTILES = ("50", "66", "75", "80", "90", "95", "98", "99", "99.9", "99.99", "100")
_COLUMNS: dict[str, str] = {
    "request_count": "Request Count",
    "failure_count": "Failure Count",
    "throughput": "Requests/s",
    "response_time_avg": "Average Response Time",
    "response_time_min": "Min Response Time",
    "response_time_max": "Max Response Time",
    **{f"response_time_p{p}": f"{p}%" for p in _PERCENTILES},
}
LOCUST_SLIS = (*_COLUMNS, "error_rate")
_DEFINED_WITHOUT_REQUESTS = ("request_count", "failure_count", "throughput")


class LocustStatsError(Exception):
    """The statistics cannot be read; every requested SLI fails with this reason."""


def stats_file(stats_dir: str, data_dir: Path) -> Path:
    """The `*_stats.csv` named by a `locustStatsDir` value (a directory or the file itself)."""
    if not stats_dir:
        raise LocustStatsError(
            f"no locust statistics: the evaluation.triggered event carries no test.{STATS_DIR_KEY}"
        )
    base = data_dir.resolve()
    path = (base / stats_dir).resolve()
    if path != base and base not in path.parents:
        raise LocustStatsError(f"locust statistics {stats_dir!r} lie outside the data directory {base}")
    if path.is_file():
        return path
    if not path.is_dir():
        raise LocustStatsError(f"locust statistics directory {path} does not exist")
    found = sorted(p for p in path.glob("*_stats.csv") if p.is_file())
    if not found:
        raise LocustStatsError(f"no *_stats.csv in {path}; expected locust run with --csv {path}/<prefix>")
    if len(found) > 1:
        raise LocustStatsError(f"several *_stats.csv in {path}: {', '.join(p.name for p in found)}")
    return found[0]


def aggregated_row(text: str, file: str) -> dict[str, str]:
    """The `Aggregated` row of a locust stats CSV."""
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        if (row.get("Name") or "").strip() == "Aggregated":
            return {k: (v or "").strip() for k, v in row.items() if k is not None}
    raise LocustStatsError(f"{file}: no 'Aggregated' row; expected a locust *_stats.csv")


def _number(row: dict[str, str], column: str, file: str) -> float | None:
    raw = row.get(column)
    if raw is None:
        raise LocustStatsError(f"{file}: no column {column!r}; expected a locust *_stats.csv")
    if raw in ("", "N/A"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise LocustStatsError(f"{file}: column {column!r} holds {raw!r}; expected a number") from None
    return value if math.isfinite(value) else None


def values_from_row(row: dict[str, str], indicators: Sequence[str], source: str) -> list[SLIValue]:
    """Pure: SLI values from the Aggregated row; without requests only counts are defined."""
    requests = _number(row, "Request Count", source) or 0.0
    out: list[SLIValue] = []
    for metric in indicators:
        query = f"{source} Aggregated {_COLUMNS.get(metric, 'Failure Count / Request Count')}"
        if metric not in LOCUST_SLIS:
            out.append(
                SLIValue(
                    metric=metric,
                    success=False,
                    message=f"unsupported SLI for the locust provider; expected one of {', '.join(LOCUST_SLIS)}",
                )
            )
            continue
        if requests == 0 and metric not in _DEFINED_WITHOUT_REQUESTS:
            out.append(
                SLIValue(
                    metric=metric,
                    success=False,
                    message=f"{NO_DATA_MESSAGE}: the load test made no requests",
                    query=query,
                )
            )
            continue
        if metric == "error_rate":
            failures = _number(row, "Failure Count", source) or 0.0
            value: float | None = failures / requests
        else:
            value = _number(row, _COLUMNS[metric], source)
        if value is None:
            out.append(SLIValue(metric=metric, success=False, message=NO_DATA_MESSAGE, query=query))
        else:
            out.append(SLIValue(metric=metric, value=value, success=True, query=query))
    return out


def get_slis(indicators: Sequence[str], stats_dir: str, data_dir: Path) -> list[SLIValue]:
    """Answer a get-sli request from a locust run's CSV."""
    try:
        path = stats_file(stats_dir, data_dir)
        if path.stat().st_size > MAX_CSV_BYTES:
            raise LocustStatsError(
                f"{path}: larger than {MAX_CSV_BYTES} bytes; expected a locust *_stats.csv"
            )
        row = aggregated_row(path.read_text(encoding="utf-8", errors="replace"), str(path))
        return values_from_row(row, indicators, str(path))
    except (LocustStatsError, OSError) as exc:
        return [SLIValue(metric=m, success=False, message=str(exc)) for m in indicators]
