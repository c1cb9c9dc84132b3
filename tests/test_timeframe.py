"""The evaluation window (spec 4.2): which times the SLIs see, and Keptn's error texts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.core.timeframe import TimeframeError, resolve_window

NOW = datetime(2024, 1, 1, 10, 5, 0, 123000, tzinfo=UTC)


def window(evaluation: dict[str, Any] | None = None, test: dict[str, Any] | None = None) -> tuple[str, str]:
    data: dict[str, Any] = {}
    if evaluation is not None:
        data["evaluation"] = evaluation
    if test is not None:
        data["test"] = test
    w = resolve_window(data, NOW)
    return w.start, w.end


def error(evaluation: dict[str, Any] | None = None, test: dict[str, Any] | None = None) -> str:
    with pytest.raises(TimeframeError) as info:
        window(evaluation, test)
    return str(info.value)


def test_timeframe_alone_ends_now() -> None:
    assert window({"timeframe": "5m"}) == ("2024-01-01T10:00:00.123Z", "2024-01-01T10:05:00.123Z")


def test_timeframe_in_go_syntax() -> None:
    assert window({"timeframe": "1h30m"}) == ("2024-01-01T08:35:00.123Z", "2024-01-01T10:05:00.123Z")


def test_start_and_timeframe_give_the_end() -> None:
    assert window({"start": "2024-01-01T09:00:00Z", "timeframe": "10m"}) == (
        "2024-01-01T09:00:00.000Z",
        "2024-01-01T09:10:00.000Z",
    )


def test_start_and_end_as_given_in_keptns_format() -> None:
    assert window({"start": "2024-01-01T09:00:00.5+00:00", "end": "2024-01-01T09:30:00"}) == (
        "2024-01-01T09:00:00.500Z",
        "2024-01-01T09:30:00.000Z",
    )


def test_offsets_are_converted_to_utc() -> None:
    start, end = window({"start": "2024-01-01T11:00:00+02:00", "end": "2024-01-01T11:10:00+02:00"})
    assert (start, end) == ("2024-01-01T09:00:00.000Z", "2024-01-01T09:10:00.000Z")


def test_the_preceding_tests_times_are_used_verbatim() -> None:
    assert window(test={"start": "2024-01-01T09:00:00Z", "end": "2024-01-01T09:00:30Z"}) == (
        "2024-01-01T09:00:00Z",
        "2024-01-01T09:00:30Z",
    )


def test_evaluation_times_win_over_test_times() -> None:
    start, _ = window({"timeframe": "2m"}, {"start": "2020-01-01T00:00:00Z", "end": "2020-01-01T00:05:00Z"})
    assert start == "2024-01-01T10:03:00.123Z"


def test_evaluation_start_alone_falls_back_to_test_times() -> None:
    start, _ = window({"start": "2024-01-01T09:00:00Z"}, {"start": "T1", "end": "T2"})
    assert start == "T1"


@pytest.mark.parametrize(
    ("evaluation", "test", "message"),
    [
        (None, None, "evaluation.triggered event does not contain evaluation timeframe"),
        (
            {"start": "2024-01-01T09:00:00Z"},
            None,
            "evaluation.triggered event does not contain evaluation timeframe",
        ),
        (
            {},
            {"start": "2024-01-01T09:00:00Z"},
            "evaluation.triggered event does not contain evaluation timeframe",
        ),
        (
            {"end": "2024-01-01T09:00:00Z", "timeframe": "5m"},
            None,
            "'end' and 'timeframe' are mutually exclusive",
        ),
        (
            {"start": "2024-01-01T09:00:00Z", "end": "2024-01-01T09:00:30Z"},
            None,
            "end date must be at least 1 minute after start date",
        ),
        (
            {"start": "2024-01-01T09:10:00Z", "end": "2024-01-01T09:00:00Z"},
            None,
            "end date must be at least 1 minute after start date",
        ),
        ({"timeframe": "30s"}, None, "end date must be at least 1 minute after start date"),
        ({"timeframe": "5"}, None, 'could not parse provided timeframe: time: missing unit in duration "5"'),
        (
            {"timeframe": "1d"},
            None,
            'could not parse provided timeframe: time: unknown unit "d" in duration "1d"',
        ),
        ({"timeframe": "soon"}, None, 'could not parse provided timeframe: time: invalid duration "soon"'),
    ],
)
def test_keptns_timeframe_errors(
    evaluation: dict[str, Any] | None, test: dict[str, Any] | None, message: str
) -> None:
    assert error(evaluation, test) == message


def test_end_without_start_with_timeframe_reports_mutual_exclusion_first() -> None:
    assert (
        error({"end": "2024-01-01T09:00:00Z", "timeframe": "5m"})
        == "'end' and 'timeframe' are mutually exclusive"
    )


def test_an_unparsable_timestamp_names_the_field_and_the_expected_form() -> None:
    message = error({"start": "yesterday", "end": "2024-01-01T09:00:00Z"})
    assert "start date 'yesterday'" in message
    assert "2024-01-01T10:00:00.000Z" in message


def test_exactly_one_minute_is_enough() -> None:
    assert window({"timeframe": "1m"})[0] == "2024-01-01T10:04:00.123Z"
