"""The ingress's view of the engine state keeps no large event in memory (issue 20, item 6).

1,800 events of 380 KB took the reconciler past its 1 GiB limit: besides the ledger and
the control loop, the ingress folded every event whole into its own `LedgerState`, up
to 1,000 finished sequences of them, and each task's `.triggered` carries a copy of its
sequence trigger's data. Now it folds slimmed copies; what it answers is unchanged, and
an approval answer, which copies the task's labels, reads the whole task from the ledger.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.core.engine_state import CONTROLLER, EngineState
from reconciler.formats.events import KeptnEvent, derived_id, task_type
from reconciler.formats.shipyard import Shipyard
from reconciler.ingress.submit import SLIM_VALUE_BYTES, Ingress, slim
from reconciler.runtime.statusview import pending_approvals, sequences
from tests.support.events import new_id, now_text
from tests.support.ingress import sequence_started
from tests.support.memledger import MemoryLedger

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
