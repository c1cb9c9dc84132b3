"""`reconciler events` reads the ledger in the data directory, filters it, prints a table or JSON."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.formats.events import KeptnEvent, format_time
from reconciler.ledger.gitledger import Ledger
from reconciler.ledger.query import parse_since

CTX_A = "aaaaaaaa-1111-4111-8111-111111111111"
CTX_B = "bbbbbbbb-2222-4222-8222-222222222222"


def ev(i: int, type_: str, ctx: str, when: datetime, **data: object) -> KeptnEvent:
    return KeptnEvent(
        id=f"e{i}",
        source="shipyard-controller",
        type=type_,
        shkeptncontext=ctx,
        time=format_time(when),
        data={"project": "fulltour", **data},
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    now = datetime.now(UTC)
    old = now - timedelta(hours=3)
    Ledger(tmp_path / "ledger.git").extend(
        [
            ev(1, "sh.keptn.event.qa.delivery.triggered", CTX_A, old, stage="qa", service="helloservice"),
            ev(
                2,
                "sh.keptn.event.evaluation.finished",
                CTX_A,
                old,
                stage="qa",
                service="helloservice",
                status="succeeded",
                result="warning",
            ),
            ev(
                3,
                "sh.keptn.event.production.delivery.triggered",
                CTX_A,
                now,
                stage="production",
                service="helloservice",
            ),
            ev(4, "sh.keptn.event.qa.delivery.triggered", CTX_B, now, stage="qa", service="other"),
        ]
    )
    return tmp_path


def run(data_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["events", "--data-dir", str(data_dir), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_readable_table_of_all_events_oldest_first(data_dir: Path) -> None:
    lines = run(data_dir).splitlines()
    assert lines[0].split() == ["TIME", "TYPE", "PROJECT/STAGE/SERVICE", "CONTEXT", "OUTCOME", "SOURCE"]
    assert len(lines) == 5
    assert "sh.keptn.event.evaluation.finished" in lines[2] and "fulltour/qa/helloservice" in lines[2]
    assert "aaaaaaaa" in lines[2] and "succeeded/warning" in lines[2]


def test_json_output_is_the_cloudevents_exactly(data_dir: Path) -> None:
    payload = json.loads(run(data_dir, "--output", "json"))
    stored = [json.loads(e.to_json()) for e in Ledger(data_dir / "ledger.git").events()]
    assert payload == stored


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["--context", "aaaaaaaa"], ["e1", "e2", "e3"]),
        (["--context", CTX_B], ["e4"]),
        (["--type", "sh.keptn.event.qa.*"], ["e1", "e4"]),
        (["--type", "sh.keptn.event.evaluation.finished"], ["e2"]),
        (["--project", "fulltour", "--stage", "qa", "--service", "helloservice"], ["e1", "e2"]),
        (["--stage", "production"], ["e3"]),
        (["--since", "1h"], ["e3", "e4"]),
        (["--context", "aaaaaaaa", "--since", "1h"], ["e3"]),
        (["--limit", "2"], ["e3", "e4"]),
        (["--project", "elsewhere"], []),
    ],
)
def test_filters_select_the_events_a_user_asks_for(data_dir: Path, args: list[str], ids: list[str]) -> None:
    payload = json.loads(run(data_dir, "-o", "json", *args))
    assert [e["id"] for e in payload] == ids


def test_a_bad_since_says_what_is_expected(data_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["events", "--data-dir", str(data_dir), "--since", "yesterday"])
    assert result.exit_code == 2
    assert "--since" in result.output and "30m" in result.output


def test_without_a_ledger_the_error_names_the_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["events", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "nowhere" in result.output


def test_git_log_on_the_ledger_branch_shows_the_same_history(data_dir: Path) -> None:
    log = subprocess.run(
        [
            "git",
            f"--git-dir={data_dir / 'ledger.git'}",
            "log",
            "--reverse",
            "--format=%s%n%(trailers:key=Event-Id,valueonly)",
            "reconciler-ledger",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = [line for line in log.splitlines() if line.startswith("e")]
    assert ids == ["e1", "e2", "e3", "e4"]
    assert "sh.keptn.event.qa.delivery.triggered fulltour/qa/other bbbbbbbb" in log


def test_since_accepts_durations_timestamps_and_unix_seconds() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("90m", now) == datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    assert parse_since("2024-05-01T10:00:00Z", now) == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert parse_since("1714557600", now) == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
