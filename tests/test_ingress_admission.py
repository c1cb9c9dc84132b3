"""What the outside may record, and the one-line reason when it may not (pure admission + stamping)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.admission import API_SOURCE, Rejected, admit, stamp
from reconciler.core.commands import CommandError, delivery_event, parse_pairs, unfold
from reconciler.core.configsnapshot import ConfigSnapshot
from reconciler.formats.events import KeptnEvent, parse_event
from reconciler.upstream.files import DirectoryFiles
from reconciler.upstream.records import accepted_pins
from reconciler.upstream.snapshot import snapshot_of
from tests.support.events import new_id, now_text
from tests.support.ingress import GitUpstream

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def view(example_upstream: Path) -> ConfigSnapshot:
    return snapshot_of(DirectoryFiles(example_upstream))


def seq(stage: str = "qa", sequence: str = "delivery", **data: Any) -> KeptnEvent:
    payload = {"project": "fulltour", "stage": stage, "service": "helloservice", **data}
    payload = {k: v for k, v in payload.items() if v is not None}
    return KeptnEvent(
        source="test",
        type=f"sh.keptn.event.{stage}.{sequence}.triggered",
        data=payload,
        id=new_id(),
        time=now_text(),
    )


def reason(event: KeptnEvent, view: ConfigSnapshot, **kw: Any) -> str:
    with pytest.raises(Rejected) as exc:
        admit(event, view=view, project="fulltour", **kw)
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_tutorial_delivery_and_remediation_triggers_are_accepted(view: ConfigSnapshot) -> None:
    assert admit(seq(), view=view, project="fulltour").kind == "sequence"
    assert admit(seq("production", "remediation"), view=view, project="fulltour").kind == "sequence"
    assert admit(seq("production", "evaluation"), view=view, project="fulltour").kind == "sequence"


def test_unknown_project_stage_sequence_or_service_is_refused_naming_what_exists(
    view: ConfigSnapshot,
) -> None:
    assert "unknown project 'other'" in reason(seq(project="other"), view)
    assert "serves project 'fulltour'" in reason(seq(project="other"), view)
    assert reason(seq("staging"), view) == "no stage 'staging' in shipyard.yaml (stages: qa, production)"
    assert reason(seq("qa", "remediation"), view) == (
        "no sequence 'remediation' in stage 'qa' of shipyard.yaml (sequences: delivery, evaluation)"
    )
    assert (
        reason(seq(service="cartservice"), view)
        == "no service 'cartservice' on branch 'qa' (services: helloservice)"
    )


def test_missing_fields_and_mismatched_stage_are_refused(view: ConfigSnapshot) -> None:
    assert reason(seq(stage="qa", service=None), view).startswith("data.service is missing or empty")
    ev = seq()
    ev.data["stage"] = "production"
    assert reason(ev, view) == (
        "data.stage 'production' does not match the stage 'qa' in type sh.keptn.event.qa.delivery.triggered"
    )
    ev = seq(labels={"build": 7})
    assert reason(ev, view) == "data.labels must be an object mapping strings to strings"


def test_engine_only_types_are_refused(view: ConfigSnapshot) -> None:
    task = KeptnEvent(
        source="x",
        type="sh.keptn.event.deployment.triggered",
        data={"project": "fulltour"},
        id=new_id(),
        time=now_text(),
    )
    assert "dispatched by the engine only" in reason(task, view)
    fin = KeptnEvent(
        source="x", type="sh.keptn.event.qa.delivery.finished", data={}, id=new_id(), time=now_text()
    )
    assert "written by the engine" in reason(fin, view)
    own = KeptnEvent(source="x", type="reconciler.sequence.control", data={}, id=new_id(), time=now_text())
    assert "written by the reconciler itself" in reason(own, view)
    other = KeptnEvent(source="x", type="com.example.build", data={}, id=new_id(), time=now_text())
    assert "not a Keptn event type" in reason(other, view)


def test_answers_must_name_an_open_task_of_that_task_type(view: ConfigSnapshot) -> None:
    triggered = KeptnEvent(
        source="shipyard-controller",
        type="sh.keptn.event.approval.triggered",
        shkeptncontext="ctx",
        data={"project": "fulltour", "stage": "production", "service": "helloservice"},
        id=new_id(),
        time=now_text(),
    )
    tasks = {triggered.id: triggered}

    def answer(type_: str, **data: Any) -> KeptnEvent:
        payload = {"project": "fulltour", "stage": "production", "service": "helloservice", **data}
        return KeptnEvent(
            source="me",
            type=type_,
            shkeptncontext="ctx",
            triggeredid=triggered.id,
            data=payload,
            id=new_id(),
            time=now_text(),
        )

    ok = answer("sh.keptn.event.approval.finished", result="pass", status="succeeded")
    assert admit(ok, view=view, project="fulltour", open_task=tasks.get).kind == "answer"
    assert "is not one of pass, warning, fail" in reason(
        answer("sh.keptn.event.approval.finished", result="failed", status="succeeded"),
        view,
        open_task=tasks.get,
    )
    assert "is a sh.keptn.event.approval.triggered, not a deployment task" in reason(
        answer("sh.keptn.event.deployment.started"), view, open_task=tasks.get
    )
    gone = answer("sh.keptn.event.approval.finished", result="pass", status="succeeded")
    assert "no open task has triggeredid" in reason(gone, view)
    changed = answer("sh.keptn.event.approval.status.changed")
    assert admit(changed, view=view, project="fulltour", open_task=tasks.get).kind == "answer"


def test_stamping_follows_keptn_api_rules() -> None:
    given = str(uuid.uuid4())
    ev = KeptnEvent(
        id="mine",
        source="my-tool",
        type="sh.keptn.event.qa.delivery.triggered",
        shkeptncontext=given,
        time=now_text(),
    )
    out = stamp(ev, now=NOW, new_id="new", new_context="fresh")
    assert (out.id, out.time, out.source, out.shkeptncontext) == (
        "new",
        "2026-03-01T12:00:00.000Z",
        "my-tool",
        given,
    )
    named = stamp(
        ev.model_copy(update={"shkeptncontext": "incident-42"}), now=NOW, new_id="n", new_context="f"
    )
    assert named.shkeptncontext == str(uuid.UUID(bytes=b"incident-42     ", version=4))
    assert (
        stamp(
            ev.model_copy(update={"shkeptncontext": ""}), now=NOW, new_id="n", new_context="f"
        ).shkeptncontext
        == "f"
    )
    assert (
        stamp(ev.model_copy(update={"source": "has space"}), now=NOW, new_id="n", new_context="f").source
        == API_SOURCE
    )


def test_delivery_event_has_keptn_cli_shape() -> None:
    values = unfold(parse_pairs(["a.b=v", "image=override"], option="--values"), option="--values")
    ev = delivery_event(
        project="fulltour",
        stage="qa",
        service="helloservice",
        image="ghcr.io/podtato-head/podtatoserver:v0.1.1",
        labels=dict(
            parse_pairs(["image=ghcr.io/podtato-head/podtatoserver,version=v0.1.1"], option="--labels")
        ),
        values=values,
        event_id="id-1",
        context="ctx-1",
        now=NOW,
    )
    assert ev.type == "sh.keptn.event.qa.delivery.triggered"
    assert ev.source == "https://github.com/keptn/keptn/cli#configuration-change"
    assert ev.data == {
        "project": "fulltour",
        "stage": "qa",
        "service": "helloservice",
        "labels": {"image": "ghcr.io/podtato-head/podtatoserver", "version": "v0.1.1"},
        "configurationChange": {"values": {"image": "override", "a": {"b": "v"}}},
        "deployment": {"deploymentURIsLocal": None, "deploymentstrategy": ""},
    }
    with pytest.raises(CommandError, match="exactly one '='"):
        parse_pairs(["a=b=c"], option="--values")
    with pytest.raises(CommandError, match="already set to a value"):
        unfold([("a", "1"), ("a.b", "2")], option="--values")


def test_view_validates_against_the_accepted_commit_not_a_newer_push(git_upstream: GitUpstream) -> None:
    shipyard = (
        "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata: {name: p}\nspec:\n  stages:\n"
        "    - name: qa\n      sequences: [{name: delivery, tasks: [{name: deploy}]}]\n"
    )
    accepted = git_upstream.commit("main", {"shipyard.yaml": shipyard, "metadata.yaml": "projectName: p\n"})
    git_upstream.commit("qa", {"svc/slo.yaml": "x: 1\n"})
    git_upstream.commit("main", {"shipyard.yaml": shipyard.replace("name: qa", "name: dev")})
    records = [
        KeptnEvent(
            source="u",
            type="reconciler.upstream.accepted",
            data={"branch": "main", "commit": accepted},
            id=new_id(),
            time=now_text(),
        )
    ]
    pinned = snapshot_of(git_upstream.files(), pins=accepted_pins(records))
    tip = snapshot_of(git_upstream.files())
    assert pinned.project == "p"
    assert admit(seq("qa", service="svc", project="p"), view=pinned, project="p")
    with pytest.raises(Rejected, match="no stage 'qa'"):
        admit(seq("qa", service="svc", project="p"), view=tip, project="p")


def test_malformed_json_is_an_event_error_naming_the_origin() -> None:
    from reconciler.formats.events import EventError

    with pytest.raises(EventError, match=r"^trigger\.json: not valid JSON"):
        parse_event(b"{nope", origin="trigger.json")
