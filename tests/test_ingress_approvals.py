"""Approval by commit: a file under approvals/ on main answers the pending approval; its author approves."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.engine_state import CONTROLLER
from reconciler.formats.approvalfile import CommittedFile
from reconciler.formats.events import KeptnEvent, derived_id, task_type
from reconciler.ingress.approvals import answers_for, record_approval_files
from reconciler.ingress.submit import Ingress
from reconciler.ledger.gitledger import Ledger
from reconciler.upstream.snapshot import snapshot_of
from tests.support.events import T0, new_id, now_text
from tests.support.ingress import GitUpstream, example_upstream_repo

ALICE = ("Alice Approver", "alice@example.com")
MALLORY = ("Mallory", "mallory@example.com")


def approval_task(context: str, stage: str = "production", service: str = "helloservice") -> KeptnEvent:
    return KeptnEvent(
        id=derived_id("approval", context, stage, service),
        source=CONTROLLER,
        type=task_type("approval", "triggered"),
        shkeptncontext=context,
        data={"project": "fulltour", "stage": stage, "service": service, "labels": {"build": "7"}},
        time=now_text(),
    )


def file(text: str, path: str = "approvals/x.yaml", author: str = "Alice <a@x>") -> CommittedFile:
    return CommittedFile(path=path, content=text.encode(), author=author, commit="c0ffee" * 6 + "abcd")


def test_file_answers_matching_open_approvals_only() -> None:
    waiting = [approval_task("ctx-1"), approval_task("ctx-1", "qa"), approval_task("ctx-2")]
    answers, problems = answers_for(
        [file("context: ctx-1\nstage: production\ndecision: decline\nmessage: p95 too high\n")],
        waiting,
        now=T0,
    )
    assert problems == []
    [answer] = answers
    assert answer.triggeredid == waiting[0].id and answer.result == "fail"
    assert answer.data["approval"] == {
        "approver": "Alice <a@x>",
        "decision": "declined",
        "via": "commit c0ffeec0ffee approvals/x.yaml",
        # the commit's author as it states itself: nothing checked it (tests/test_approval_identity.py)
        "authenticated": False,
        "verified": "nothing: the commit's author is recorded as the commit states it",
        "author": {"name": "Alice", "email": "a@x"},
        "committer": {"name": "", "email": ""},
    }
    assert answer.data["message"] == "p95 too high" and answer.data["labels"] == {"build": "7"}


def test_service_narrows_and_unreadable_files_are_located_problems() -> None:
    waiting = [approval_task("ctx-1", service="a"), approval_task("ctx-1", service="b")]
    answers, problems = answers_for(
        [
            file("context: ctx-1\nstage: production\ndecision: approve\nservice: b\n", "approvals/b.yaml"),
            file("context: ctx-1\nstage: production\ndecison: approve\n", "approvals/typo.yaml"),
        ],
        waiting,
        now=T0,
    )
    assert [a.triggeredid for a in answers] == [waiting[1].id]
    text = [str(p) for p in problems]
    assert any(t.startswith("main:approvals/typo.yaml:3") and "decison" in t for t in text), text
    assert any(("decision" in t and "required" in t.lower()) or "missing" in t.lower() for t in text), text


@pytest.fixture
def upstream(tmp_path: Path) -> GitUpstream:
    return example_upstream_repo(tmp_path / "data" / "upstream.git")


def test_committed_file_approves_with_the_commit_author_recorded_once(
    upstream: GitUpstream, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "data" / "ledger.git", "reconciler-ledger")
    ingress = Ingress(ledger=ledger, view=snapshot_of(upstream.files()), project="fulltour")
    trigger = KeptnEvent(
        source="test",
        type="sh.keptn.event.production.delivery.triggered",
        shkeptncontext="5b3c8a1e-0d4f-4c55-9c7e-2f9a3c1d7e11",
        data={"project": "fulltour", "stage": "production", "service": "helloservice"},
        id=new_id(),
        time=now_text(),
    )
    ledger.append(trigger)
    ledger.append(
        KeptnEvent(
            id=derived_id(trigger.id, "started"),
            source=CONTROLLER,
            type="sh.keptn.event.production.delivery.started",
            shkeptncontext=trigger.shkeptncontext,
            triggeredid=trigger.id,
            data=trigger.data,
            time=now_text(),
        )
    )
    task = approval_task(trigger.shkeptncontext).model_copy(update={"sequencetriggeredid": trigger.id})
    ledger.append(task)

    # nothing on main yet: nothing happens
    assert record_approval_files(ingress, upstream.files()).recorded == []
    body = f"context: {trigger.shkeptncontext}\nstage: production\ndecision: approve\nmessage: ok by me\n"
    upstream.commit("main", {"approvals/helloservice.yaml": body}, "approve helloservice", author=ALICE)
    upstream.commit("main", {"README.md": "unrelated change by someone else\n"}, "docs", author=MALLORY)

    outcome = record_approval_files(ingress, upstream.files())
    [receipt] = outcome.recorded
    answer = ledger.events()[-1]
    assert answer.id == receipt.event_id and answer.triggeredid == task.id
    assert answer.result == "pass" and answer.source == "reconciler-approvals"
    assert answer.data["approval"]["approver"] == "Alice Approver <alice@example.com>"
    assert record_approval_files(ingress, upstream.files()).recorded == []  # answered: no longer pending
    assert len(ledger.events()) == 4
