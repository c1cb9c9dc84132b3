"""The ingress's view of the engine state keeps no large event in memory (issue 20, item 6).

1,800 events of 380 KB took the reconciler past its 1 GiB limit: besides the ledger and
the control loop, the ingress folded every event whole into its own `LedgerState`, up
to 1,000 finished sequences of them, and each task's `.triggered` carries a copy of its
sequence trigger's data. Now it folds slimmed copies; what it answers is unchanged, and
an approval answer, which copies the task's labels, reads the whole task from the ledger.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from reconciler.api import create_app, serve
from reconciler.core.commands import control_event
from reconciler.core.engine_state import CONTROLLER, EngineState, apply
from reconciler.formats.events import KeptnEvent, derived_id, task_type
from reconciler.formats.shipyard import Shipyard
from reconciler.ingress.submit import SLIM_VALUE_BYTES, Ingress, LedgerState, slim
from reconciler.runtime.statusview import (
    deployed_at,
    image_of,
    matching,
    outcome,
    pending_approvals,
    sequences,
)
from reconciler.upstream.files import GitFiles
from reconciler.upstream.snapshot import snapshot_of
from tests.support.deliveries import Deliveries, Outcome, tutorial_ledger
from tests.support.events import new_id, now_text
from tests.support.ingress import sequence_started
from tests.support.memledger import MemoryLedger

TOKEN = "ingress-state-token-41c2"
SEQUENCES = 20
PAYLOAD = "x" * (60 * 1024)
LABELS = {f"label-{n}": "v" * 100 for n in range(30)}  # ~3 KB: more than a slimmed value keeps


class NoUpstream:
    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        return None

    def services(self, stage: str) -> frozenset[str] | None:
        return None


def waiting_deliveries(ledger: MemoryLedger) -> list[KeptnEvent]:
    """SEQUENCES production deliveries, each at a manual approval, with a 60 KB payload."""
    tasks = []
    for n in range(SEQUENCES):
        context = derived_id("context", str(n))
        data = {
            "project": "fulltour",
            "stage": "production",
            "service": "helloservice",
            "labels": LABELS,
            "configurationChange": {"values": {"image": f"web:{n}", "blob": PAYLOAD}},
            "message": "m" * 5000,
        }
        trigger = KeptnEvent(
            id=derived_id("trigger", str(n)),
            source="https://example.com/ci",
            type="sh.keptn.event.production.delivery.triggered",
            shkeptncontext=context,
            data=data,
            bigextension="e" * 10_000,
            time=now_text(),
        )
        started = sequence_started(trigger)
        task = KeptnEvent(
            id=derived_id(trigger.id, "task", "0"),
            source=CONTROLLER,
            type=task_type("approval", "triggered"),
            shkeptncontext=context,
            sequencetriggeredid=trigger.id,
            data={**data, "result": "pass", "approval": {"pass": "manual", "warning": "manual"}},
            time=now_text(),
        )
        for event in (trigger, started, task):
            ledger.append(event)
        tasks.append(task)
    return tasks


def reachable(state: EngineState) -> list[KeptnEvent]:
    out: list[KeptnEvent] = []
    for ex in state.executions.values():
        out += [e for e in (ex.trigger, ex.started_event, ex.finished_event) if e is not None]
        for run in ex.tasks:
            out += [run.triggered, *run.started, *run.finished]
    return out


def size(event: KeptnEvent) -> int:
    return len(event.model_dump_json())


def test_the_ingress_state_holds_slim_events_and_answers_as_before() -> None:
    ledger = MemoryLedger()
    tasks = waiting_deliveries(ledger)
    ingress = Ingress(ledger=ledger, view=NoUpstream(), project="fulltour")

    held = ingress.state.read(reachable)
    assert len(held) == 3 * SEQUENCES
    biggest = max(size(e) for e in held)
    assert biggest < 8 * 1024, f"an event of {biggest} bytes is kept whole (recorded: ~{size(tasks[0])})"
    assert sum(size(e) for e in held) < 0.05 * sum(size(e) for e in ledger.events())

    # the views read what they always read
    rows = ingress.state.read(lambda st: sequences(st, tasks[0].timestamp))
    assert [(r.project, r.stage, r.service, r.state) for r in rows] == [
        ("fulltour", "production", "helloservice", "waitingForApproval")
    ] * SEQUENCES
    pending = ingress.state.read(pending_approvals)
    assert [(p.triggered_id, p.previous_result) for p in pending] == [(t.id, "pass") for t in tasks]
    assert ingress.state.open_task(tasks[3].id) is not None

    # an answer copies the task's labels: all of them, from the recorded task
    [receipt] = ingress.answer_approval(
        tasks[3].shkeptncontext, stage="production", approve=True, approver="alice"
    )
    answer = ledger.events()[-1]
    assert receipt.recorded and answer.id == receipt.event_id
    assert answer.data["labels"] == LABELS


def test_slim_keeps_the_envelope_and_the_small_fields_and_drops_only_large_ones() -> None:
    event = KeptnEvent(
        source="s",
        type="sh.keptn.event.deploy.finished",
        shkeptncontext="c",
        triggeredid="t",
        gitcommitid="a" * 40,
        data={
            "project": "p",
            "stage": "qa",
            "service": "web",
            "result": "pass",
            "status": "succeeded",
            "labels": {"build": "7"},
            "reconciler": {"reason": "StartDeadlineExceeded"},
            "message": "y" * 2000,
            "deployment": {"deploymentURIsLocal": ["http://web.qa:80"]},
            "test": {"report": "z" * (SLIM_VALUE_BYTES + 1)},
        },
        sequencetriggeredid="seq",
        bulky=["q" * 700, "q" * 700],
        id=new_id(),
        time=now_text(),
    )
    small = slim(event)
    kept = json.loads(small.model_dump_json())
    whole: dict[str, Any] = json.loads(event.model_dump_json())
    for key in ("id", "source", "type", "time", "shkeptncontext", "triggeredid", "gitcommitid"):
        assert kept[key] == whole[key]
    assert kept["sequencetriggeredid"] == "seq" and "bulky" not in kept
    assert kept["data"].keys() == whole["data"].keys() - {"test"}
    assert kept["data"]["message"] == "y" * 500
    assert event.data["test"]["report"], "the original is left alone"
    plain = KeptnEvent(
        source="s", type="sh.keptn.event.deploy.started", data={"project": "p"}, id=new_id(), time=now_text()
    )
    assert slim(plain) is plain  # nothing to drop: no copy


# -- issue 19, part 5: what the ingress keeps of a finished execution -----------------------------


def long_history() -> tuple[Deliveries, list[str]]:
    """Deliveries to qa and production on the tutorial shipyard: passing ones, a failed deploy,
    one aborted while its production approval waited (a task it never completed), one pending."""
    d = Deliveries()
    contexts = [d.deliver(f"web:{n}", service=f"svc{n % 3}") for n in range(6)]
    contexts.append(d.deliver("web:broken", outcome=Outcome(deploy_fails_with="boom")))
    aborted = d.deliver("web:warn", outcome=Outcome(failing=12))  # production waits for a person
    d.tick()
    d._run(
        d._stamp(
            control_event(
                context=aborted,
                state="abort",
                stage="production",
                message="not today",
                source="test",
                event_id=new_id(),
                now=d.h.now,
            )
        )
    )
    contexts.append(aborted)
    contexts.append(d.deliver("web:pending", outcome=Outcome(failing=12)))
    return d, contexts


def whole_fold(events: list[KeptnEvent], keep: int, every: int) -> EngineState:
    """The ingress's fold as it was before part 5: slimmed events, compacted on the same schedule,
    every finished execution holding its events."""
    state = EngineState()
    for n, event in enumerate(events, 1):
        apply(state, slim(event))
        if n % every == 0:
            state.compact(keep)
    return state


def test_finished_executions_keep_a_digest_and_every_view_answers_as_from_their_events() -> None:
    d, contexts = long_history()
    events = d.events
    ledger = MemoryLedger()
    for event in events:
        ledger.append(event)
    keep, every = 6, 25
    state = LedgerState(ledger, keep_finished=keep, compact_every=every)
    whole = whole_fold(events, keep, every)
    later = d.h.now + timedelta(minutes=7)

    def views(st: EngineState, now: datetime) -> Any:
        return (
            [r.model_dump() for r in sequences(st, now)],
            [r.model_dump() for r in sequences(st, now, service="svc1", limit=2)],
            [(image_of(ex), deployed_at(ex), outcome(ex)) for ex in matching(st)],
            [p.model_dump() for p in pending_approvals(st)],
            {c: [(ex.stage, ex.active) for ex in st.by_context(c)] for c in contexts},
        )

    for now in (d.h.now, later):  # an open task's duration still runs on in the digest
        assert state.read(lambda st, now=now: views(st, now)) == views(whole, now)

    # the aborted production run finished with its approval open: its time is still counted
    aborted = state.read(lambda st: [r for r in sequences(st, later) if r.state == "aborted"])
    assert [r.tasks[-1].state for r in aborted] == ["started"]  # approval-service took it, nobody answered
    assert aborted[0].tasks[-1].duration_seconds is not None

    def held(st: EngineState) -> tuple[int, int, int, int]:
        finished = [ex for ex in st.executions.values() if not ex.active]
        return (
            len(finished),
            sum(len(ex.tasks) for ex in finished),
            sum(ex.digest is None for ex in finished),
            sum(len(ex.tasks) for ex in whole.executions.values() if not ex.active),
        )

    finished, tasks_held, undigested, tasks_whole = state.read(held)
    assert finished >= keep and len(whole.executions) < 2 * len(contexts)  # some were forgotten
    assert (tasks_held, undigested) == (0, 0)  # ... as digests: none holds its tasks' events
    assert tasks_whole >= 2 * finished
    assert len(state.read(reachable)) < len(reachable(whole)) / 2


def test_a_long_ledger_keeps_a_bounded_number_of_finished_executions_all_as_digests() -> None:
    d = Deliveries()
    for n in range(30):
        d.deliver(f"web:{n}", service=f"svc{n % 4}")
    ledger = MemoryLedger()
    state = LedgerState(ledger, keep_finished=5, compact_every=40)
    counts = []
    for event in d.events:  # read after each append, as the API does while the loop writes
        ledger.append(event)
        counts.append(
            state.read(
                lambda st: (
                    len(st.executions),
                    sum(len(ex.tasks) for ex in st.executions.values() if not ex.active),
                )
            )
        )
    assert len(d.events) > 10 * 40  # many compactions ...
    assert max(n for n, _ in counts) <= 5 + 40  # ... and never more than kept + one window
    assert {tasks for _, tasks in counts} == {0}
    assert state.read(lambda st: len(st.executions)) < 60  # 30 deliveries x 2 stages


def test_the_api_lists_digested_sequences_as_before_over_http(tutorial_data_dir: Path) -> None:
    d, contexts = long_history()
    events = d.events
    d.write(tutorial_ledger(tutorial_data_dir))
    ledger = tutorial_ledger(tutorial_data_dir)
    view = snapshot_of(GitFiles(tutorial_data_dir / "upstream.git"))
    ingress = Ingress(ledger=ledger, view=view, project="fulltour")
    ingress.state = LedgerState(ledger, keep_finished=4, compact_every=30)
    server = serve(create_app(ingress, token=TOKEN), "127.0.0.1:0")
    try:
        with httpx.Client(base_url=server.url, timeout=20, headers={"x-token": TOKEN}) as client:
            listed = client.get("/v1/sequences", params={"limit": 1000}).json()["sequences"]
            one = client.get("/v1/sequences", params={"context": contexts[6]}).json()["sequences"]
            status = client.get("/v1/status").json()
            refused = client.post(f"/v1/sequence/fulltour/{contexts[6]}/control", json={"state": "abort"})
            gone = client.post(f"/v1/sequence/fulltour/{'0' * 32}/control", json={"state": "abort"})
    finally:
        server.stop()
    whole = whole_fold(events, 4, 30)
    expected = [r.model_dump() for r in sequences(whole, d.h.now)]
    assert [timeless(r) for r in listed] == [timeless(r) for r in expected]
    closed = [r for r in expected if r["state"] != "aborted" and r["state"] in ("finished", "timedOut")]
    assert closed and all(r in listed for r in closed)  # finished: to the millisecond
    assert [r["context"] for r in one] == [contexts[6]] * len(one) and one[0]["result"] == "fail"
    assert status["sequences"] == _counts(whole)
    assert state_is_digested(ingress)
    assert refused.status_code == 409 and "has finished" in refused.json()["message"]
    assert gone.status_code == 409 and "no sequence has context" in gone.json()["message"]


def timeless(row: dict[str, Any]) -> dict[str, Any]:
    """A listed row without the durations that run on with the clock (active ones, open tasks)."""
    return {**row, "duration_seconds": None, "tasks": [{**t, "duration_seconds": None} for t in row["tasks"]]}


def _counts(state: EngineState) -> dict[str, int]:
    out: dict[str, int] = {}
    for ex in state.executions.values():
        out[ex.display_state] = out.get(ex.display_state, 0) + 1
    return out


def state_is_digested(ingress: Ingress) -> bool:
    return ingress.state.read(
        lambda st: all(
            ex.digest is not None and not ex.tasks for ex in st.executions.values() if not ex.active
        )
    )
