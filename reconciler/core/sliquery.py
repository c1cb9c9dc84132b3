"""The PromQL an SLI runs: Keptn's placeholders, filters and built-in queries (spec 7.3); pure.

Teams keep their `prometheus/sli.yaml` from Keptn, so the text a query becomes
must be exactly what prometheus-service would send: the same substitution order,
the same naive text replacement (`$STAGE` also hits `$STAGE_NAME`), the same five
built-in SLIs and the same `$DURATION_SECONDS`. `reconciler sli render` prints the
result of `render_query`, and the evaluation executor records it per SLI.

May import: `reconciler.formats.gotime` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconciler.formats.gotime import parse_timestamp

BUILTIN_SLIS = ("throughput", "error_rate", "response_time_p50", "response_time_p90", "response_time_p95")
UNSUPPORTED = "unsupported SLI"


class QueryError(ValueError):
    """No query for this SLI; the text is prometheus-service's per-SLI message."""


@dataclass(frozen=True)
class QueryContext:
    """Everything a query may refer to. `filters` keep the SLO file's order."""

    project: str
    stage: str
    service: str
    start: datetime
    end: datetime
    deployment: str = "primary"
    labels: Mapping[str, str] = field(default_factory=dict)
    filters: Sequence[tuple[str, str]] = ()

    @property
    def duration(self) -> str:
        """`$DURATION_SECONDS`: the window rounded up to whole seconds, e.g. `300s`."""
        return f"{math.ceil((self.end - self.start).total_seconds())}s"


def deployment_of(event_deployment: str, labels: Mapping[str, str]) -> str:
    """prometheus-service's `$DEPLOYMENT`: a `deployment` label overrides the event's value;
    with neither it is `primary` (spec 7.2)."""
    if "deployment" in labels:
        return labels["deployment"]
    return event_deployment or "primary"


def parse_sli_time(text: str) -> datetime:
    """get-sli start/end: RFC 3339 (fraction allowed) or integer Unix seconds (spec 7.4)."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(stripped), tz=UTC)
    return parse_timestamp(text)


def _strip_quotes(value: str) -> str:
    return value.replace("'", "").replace('"', "")


def _by_longest_key(items: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    # Keptn iterates a Go map (random order); longest key first keeps `$handler`
    # from clobbering `$handler_name`, and makes the result reproducible.
    return sorted(items, key=lambda kv: -len(kv[0]))


def substitute(query: str, ctx: QueryContext) -> str:
    """Replace placeholders in a custom query, in prometheus-service's order."""
    for key, value in _by_longest_key(list(ctx.filters)):
        clean = _strip_quotes(value)
        query = query.replace("$" + key, clean)
        query = query.replace("$" + key.upper(), clean)
    query = query.replace("$PROJECT", ctx.project)
    query = query.replace("$STAGE", ctx.stage)
    query = query.replace("$SERVICE", ctx.service)
    query = query.replace("$DEPLOYMENT", ctx.deployment)
    for key, value in _by_longest_key(list(ctx.labels.items())):
        query = query.replace("$LABEL." + key, value)
    return query.replace("$DURATION_SECONDS", ctx.duration)


def filter_expression(ctx: QueryContext) -> str:
    """Label matchers of the built-in queries: the canary job, then the SLO's filters."""
    parts: list[str] = []
    has_job = False
    for key, value in ctx.filters:
        if key == "job":
            has_job = True
        if value.startswith(("=", "!=", "=~", "!~")):
            parts.append(key + value.replace('"', "'"))
        else:
            parts.append(f"{key}='{_strip_quotes(value)}'")
    if not has_job:
        parts.insert(0, f"job='{ctx.service}-{ctx.project}-{ctx.stage}-canary'")
    return ",".join(parts)


def builtin_query(metric: str, ctx: QueryContext) -> str:
    f = filter_expression(ctx)
    d = ctx.duration
    if metric == "throughput":
        return f"sum(rate(http_requests_total{{{f}}}[{d}]))"
    if metric == "error_rate":
        return (
            f"sum(rate(http_requests_total{{{f},status!~'2..'}}[{d}]))"
            f"/sum(rate(http_requests_total{{{f}}}[{d}]))"
        )
    if metric in ("response_time_p50", "response_time_p90", "response_time_p95"):
        nn = metric[-2:]
        return (
            f"histogram_quantile(0.{nn},sum(rate(http_response_time_milliseconds_bucket{{{f}}}[{d}]))by(le))"
        )
    raise QueryError(UNSUPPORTED)


def render_query(metric: str, queries: Mapping[str, str], ctx: QueryContext) -> str:
    """The query for `metric`: the configured one with placeholders replaced, else the built-in.

    Raises `QueryError("unsupported SLI")` for an unknown SLI without a query.
    """
    custom = queries.get(metric, "")
    if custom:
        return substitute(custom, ctx)
    return builtin_query(metric, ctx)


@dataclass(frozen=True)
class SLIRequest:
    """What a `get-sli.triggered` asks of any SLI provider (spec 4.4)."""

    project: str
    stage: str
    service: str
    start: str
    end: str
    indicators: Sequence[str] = ()
    filters: Sequence[tuple[str, str]] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    deployment: str = ""

    def context(self, start: datetime, end: datetime) -> QueryContext:
        return QueryContext(
            project=self.project,
            stage=self.stage,
            service=self.service,
            start=start,
            end=end,
            deployment=deployment_of(self.deployment, self.labels),
            labels=self.labels,
            filters=self.filters,
        )
