"""The PromQL an SLI runs (spec 7.2-7.3): placeholders, filters, built-ins, deployment."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.core.sliquery import (
    QueryContext,
    QueryError,
    deployment_of,
    parse_sli_time,
    render_query,
    substitute,
)
from reconciler.formats.gotime import parse_timestamp

START = parse_timestamp("2024-01-01T10:00:00.000Z")
END = parse_timestamp("2024-01-01T10:05:00.000Z")


def ctx(**kw: object) -> QueryContext:
    base: dict[str, object] = {
        "project": "sockshop",
        "stage": "qa",
        "service": "carts",
        "start": START,
        "end": END,
    }
    base.update(kw)
    return QueryContext(**base)  # type: ignore[arg-type]


def test_the_specs_example_query() -> None:
    query = 'rate(my_metric{job="$SERVICE-$PROJECT-$STAGE",handler="$handler"}[$DURATION_SECONDS])'
    c = ctx(filters=[("handler", "ItemsController")])
    assert render_query("my", {"my": query}, c) == (
        'rate(my_metric{job="carts-sockshop-qa",handler="ItemsController"}[300s])'
    )


def test_the_specs_default_throughput_query() -> None:
    c = ctx(filters=[("handler", "ItemsController")])
    assert render_query("throughput", {}, c) == (
        "sum(rate(http_requests_total{job='carts-sockshop-qa-canary',handler='ItemsController'}[300s]))"
    )


def test_tutorial_slis_resolve_for_fulltour_qa() -> None:
    c = ctx(project="fulltour", stage="qa", service="helloservice")
    queries = {
        "request_throughput": 'sum(rate(http_requests_total{status="success",job="$SERVICE-$PROJECT-$STAGE"}'
        "[$DURATION_SECONDS]))",
        "go_routines": 'go_goroutines{job="$SERVICE-$PROJECT-$STAGE"}',
    }
    assert render_query("request_throughput", queries, c) == (
        'sum(rate(http_requests_total{status="success",job="helloservice-fulltour-qa"}[300s]))'
    )
    assert render_query("go_routines", queries, c) == 'go_goroutines{job="helloservice-fulltour-qa"}'


@pytest.mark.parametrize(
    ("metric", "query"),
    [
        ("throughput", "sum(rate(http_requests_total{job='carts-sockshop-qa-canary'}[300s]))"),
        (
            "error_rate",
            "sum(rate(http_requests_total{job='carts-sockshop-qa-canary',status!~'2..'}[300s]))"
            "/sum(rate(http_requests_total{job='carts-sockshop-qa-canary'}[300s]))",
        ),
        (
            "response_time_p50",
            "histogram_quantile(0.50,sum(rate(http_response_time_milliseconds_bucket"
            "{job='carts-sockshop-qa-canary'}[300s]))by(le))",
        ),
        (
            "response_time_p90",
            "histogram_quantile(0.90,sum(rate(http_response_time_milliseconds_bucket"
            "{job='carts-sockshop-qa-canary'}[300s]))by(le))",
        ),
        (
            "response_time_p95",
            "histogram_quantile(0.95,sum(rate(http_response_time_milliseconds_bucket"
            "{job='carts-sockshop-qa-canary'}[300s]))by(le))",
        ),
    ],
)
def test_the_five_built_in_slis(metric: str, query: str) -> None:
    assert render_query(metric, {}, ctx()) == query


def test_a_configured_query_replaces_a_built_in() -> None:
    assert render_query("throughput", {"throughput": "up{stage='$STAGE'}"}, ctx()) == "up{stage='qa'}"


def test_an_empty_configured_query_falls_back_to_the_built_in() -> None:
    assert render_query("throughput", {"throughput": ""}, ctx()).startswith("sum(rate(http_requests_total")


def test_an_unknown_sli_without_query_is_unsupported() -> None:
    with pytest.raises(QueryError, match="unsupported SLI"):
        render_query("latency", {}, ctx())


def test_filters_with_operators_and_a_custom_job() -> None:
    c = ctx(filters=[("handler", '!="Health"'), ("job", "=~'carts.*'"), ("code", "'200'")])
    assert render_query("throughput", {}, c) == (
        "sum(rate(http_requests_total{handler!='Health',job=~'carts.*',code='200'}[300s]))"
    )


def test_filters_replace_before_builtin_placeholders_and_in_upper_case() -> None:
    c = ctx(filters=[("stage", "canary-qa"), ("handler", '"Items"')])
    assert substitute("a{s='$STAGE',h='$handler',H='$HANDLER'}", c) == "a{s='canary-qa',h='Items',H='Items'}"


def test_substitution_is_naive_text_replacement() -> None:
    assert substitute("$STAGE_NAME $unknown", ctx()) == "qa_NAME $unknown"


def test_longer_filter_and_label_names_are_not_clobbered_by_shorter_ones() -> None:
    c = ctx(filters=[("h", "short"), ("handler", "long")], labels={"v": "1", "version": "2"})
    assert substitute("$h $handler $LABEL.v $LABEL.version", c) == "short long 1 2"


def test_labels_and_deployment() -> None:
    c = ctx(labels={"image": "podtato"}, deployment="canary")
    assert substitute("$LABEL.image $DEPLOYMENT", c) == "podtato canary"


@pytest.mark.parametrize(
    ("event_value", "labels", "expected"),
    [
        ("", {}, "primary"),
        ("canary", {}, "canary"),
        ("canary", {"deployment": "blue"}, "blue"),
        ("", {"deployment": ""}, ""),
    ],
)
def test_deployment_placeholder_value(event_value: str, labels: dict[str, str], expected: str) -> None:
    assert deployment_of(event_value, labels) == expected


@pytest.mark.parametrize(("seconds", "duration"), [(300.0, "300s"), (300.2, "301s"), (59.001, "60s")])
def test_duration_seconds_rounds_up(seconds: float, duration: str) -> None:
    c = ctx(start=datetime.fromtimestamp(1000, tz=UTC), end=datetime.fromtimestamp(1000 + seconds, tz=UTC))
    assert substitute("[$DURATION_SECONDS]", c) == f"[{duration}]"


def test_sli_times_accept_rfc3339_and_unix_seconds() -> None:
    assert parse_sli_time("1704103500") == END
    assert parse_sli_time("2024-01-01T10:05:00.000Z") == END
    assert parse_sli_time("2024-01-01T11:05:00+01:00") == END
