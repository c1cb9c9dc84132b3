"""The inbox directory, watched with watchdog: files in, recorded or refused, moved aside."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.ingress.inbox import Inbox
from reconciler.ingress.submit import Ingress
from reconciler.ledger.gitledger import Ledger
from reconciler.upstream.files import GitFiles
from reconciler.upstream.snapshot import snapshot_of

DATA = Path(__file__).parent / "data" / "ingress"


@pytest.fixture
def ingress(tutorial_data_dir: Path) -> Ingress:
    ledger = Ledger(tutorial_data_dir / "ledger.git", "reconciler-ledger")
    return Ingress(
        ledger=ledger, view=snapshot_of(GitFiles(tutorial_data_dir / "upstream.git")), project="fulltour"
    )


@pytest.fixture
def inbox_dir(tutorial_data_dir: Path) -> Path:
    return tutorial_data_dir / "inbox"


@pytest.fixture
def watching(ingress: Ingress, inbox_dir: Path) -> Iterator[Inbox]:
    inbox = Inbox(ingress, inbox_dir, rescan_interval=0.5, settle=0.3).start()
    try:
        yield inbox
    finally:
        inbox.stop()


def wait_until(check: Callable[[], bool], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_dropped_event_file_is_recorded_and_moved_to_done_with_its_context(
    ingress: Ingress, inbox_dir: Path, watching: Inbox
) -> None:
    target = inbox_dir / "remediation_trigger.json"
    target.write_bytes((DATA / "remediation_trigger.json").read_bytes())
    done = inbox_dir / "done" / "remediation_trigger.json"
    wait_until(done.exists)
    receipt = json.loads((inbox_dir / "done" / "remediation_trigger.json.receipt.json").read_text())
    [event] = ingress.ledger.events()
    assert receipt["keptnContext"] == event.shkeptncontext
    assert event.type == "sh.keptn.event.production.remediation.triggered"
    assert not target.exists()


def test_bad_file_moves_to_rejected_with_an_error_file_and_nothing_is_recorded(
    ingress: Ingress, inbox_dir: Path, watching: Inbox
) -> None:
    event = json.loads((DATA / "remediation_trigger.json").read_text())
    event["data"]["project"] = "sockshop"
    (inbox_dir / "wrong-project.json").write_text(json.dumps(event))
    (inbox_dir / "broken.json").write_text("{ not json")
    error = inbox_dir / "rejected" / "wrong-project.json.error"
    wait_until(lambda: error.exists() and (inbox_dir / "rejected" / "broken.json.error").exists())
    assert "unknown project 'sockshop'" in error.read_text()
    assert "not valid JSON" in (inbox_dir / "rejected" / "broken.json.error").read_text()
    assert (inbox_dir / "rejected" / "broken.json").read_text() == "{ not json"
    assert list(ingress.ledger.events()) == []


def test_a_file_renamed_into_the_inbox_is_taken_and_temporary_names_are_left_alone(
    ingress: Ingress, inbox_dir: Path, watching: Inbox
) -> None:
    partial = inbox_dir / "trigger.json.tmp"
    partial.write_text((DATA / "remediation_trigger.json").read_text()[:40])  # half written
    rescans = watching.rescans
    wait_until(lambda: watching.rescans >= rescans + 2)  # two rescans pass; a .tmp is never taken
    assert partial.exists() and list(ingress.ledger.events()) == []
    partial.write_text((DATA / "remediation_trigger.json").read_text())
    os.replace(partial, inbox_dir / "trigger.json")
    wait_until(lambda: (inbox_dir / "done" / "trigger.json").exists())
    assert len(ingress.ledger.events()) == 1


def test_files_present_at_start_are_taken_and_the_same_file_is_recorded_once(
    ingress: Ingress, inbox_dir: Path
) -> None:
    inbox_dir.mkdir(parents=True, exist_ok=True)
    raw = (DATA / "remediation_trigger.json").read_bytes()
    (inbox_dir / "a.json").write_bytes(raw)
    inbox = Inbox(ingress, inbox_dir)
    [outcome] = inbox.scan()
    assert outcome.receipt is not None and outcome.receipt.recorded
    # the same bytes again (say, a crash before the move was recorded): same id, not recorded twice
    (inbox_dir / "a.json").write_bytes(raw)
    [again] = inbox.scan()
    assert again.receipt is not None and not again.receipt.recorded
    assert again.receipt.context == outcome.receipt.context
    assert len(ingress.ledger.events()) == 1
    assert (inbox_dir / "done" / "a.json").exists() and (inbox_dir / "done" / "a.json.1").exists()
