"""Drive the pure engine with plain events: a static config view and scripted executors.

Executors here are separate components answering `.triggered` events (as the
issue asks): each is a function from a triggered event to the answers it sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.core.engine import decide
from reconciler.core.engine_state import EngineState, apply
from reconciler.core.planning import Plan, Policy
from reconciler.formats.events import KeptnEvent, derived_id, format_time, task_type
from reconciler.formats.shipyard import Shipyard, load_shipyard

T0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)


@dataclass
class StaticConfig:
    shipyards: dict[str, Shipyard]
    head: str
    heads: dict[str, str] = field(default_factory=dict)
    project: str = "fulltour"

    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        return self.shipyards.get(commit or self.head)

    def main_commit(self) -> str | None:
        return self.head

    def stage_head(self, stage: str) -> str | None:
        return self.heads.get(stage, f"{stage}-head")


Responder = Callable[[KeptnEvent], list[dict[str, Any]]]


def answer(
    triggered: KeptnEvent,
    kind: str,
    source: str,
    now: datetime,
    **data: Any,
) -> KeptnEvent:
    etype = triggered.etype
    assert etype is not None and etype.task
    payload = {"project": triggered.project, "stage": triggered.stage, "service": triggered.service, **data}
    return KeptnEvent(
        id=derived_id(triggered.id, source, kind, str(len(data))),
        source=source,
        type=task_type(etype.task, kind),
        time=format_time(now),
        shkeptncontext=triggered.shkeptncontext,
        triggeredid=triggered.id,
        data=payload,
    )


class EngineHarness:
    """A ledger (list), the engine, and executors keyed by task name."""

    def __init__(
        self, shipyard_yaml: str, policy: Policy | None = None, *, project: str = "fulltour"
    ) -> None:
        self.config = StaticConfig({"main-1": load_shipyard(shipyard_yaml)}, "main-1", project=project)
        self.state = EngineState()
        self.ledger: list[KeptnEvent] = []
        self.now = T0
        self.policy = policy or Policy()
        self.executors: dict[str, Callable[[KeptnEvent], list[KeptnEvent]]] = {}
        self.last_plan = Plan()

    def record(self, event: KeptnEvent | None) -> Plan:
        if event is not None:
            self.ledger.append(event)
        plan = decide(self.state, self.config, event, self.now, self.policy)
        self.ledger.extend(plan.events)
        self.last_plan = plan
        return plan

    def on(self, task: str, fn: Callable[[KeptnEvent], list[KeptnEvent]]) -> None:
        self.executors[task] = fn

    def passing(
        self, task: str, source: str = "job-executor-service", result: str = "pass", **extra: Any
    ) -> None:
        def fn(ev: KeptnEvent) -> list[KeptnEvent]:
            return [
                answer(ev, "started", source, self.now, status="succeeded"),
                answer(ev, "finished", source, self.now, status="succeeded", result=result, **extra),
            ]

        self.on(task, fn)

    def run(self, first: KeptnEvent | None, *, max_steps: int = 200) -> None:
        """Record `first`, then let executors answer every new task `.triggered` until quiet."""
        self.record(first)
        seen = 0
        for _ in range(max_steps):
            pending = [
                e for e in self.ledger[seen:] if e.type.endswith(".triggered") and e.etype and e.etype.is_task
            ]
            seen = len(self.ledger)
            answers: list[KeptnEvent] = []
            for ev in pending:
                fn = self.executors.get(ev.etype.task or "") if ev.etype else None
                if fn:
                    answers.extend(fn(ev))
            if not answers:
                if len(self.ledger) == seen:
                    return
                continue
            for a in answers:
                self.record(a)
        raise AssertionError("engine did not settle")

    def advance(self, delta: timedelta) -> Plan:
        self.now += delta
        return self.record(None)

    def types(self) -> list[str]:
        return [e.type for e in self.ledger]

    def replayed(self) -> EngineState:
        state = EngineState()
        for ev in self.ledger:
            apply(state, ev)
        return state


def trigger(
    stage: str,
    sequence: str,
    *,
    service: str = "helloservice",
    context: str = "ctx-1",
    gitcommitid: str | None = None,
    **data: Any,
) -> KeptnEvent:
    return KeptnEvent(
        id=derived_id("test-trigger", stage, sequence, context, str(sorted(data.items()))),
        source="https://github.com/keptn/keptn/cli#configuration-change",
        type=f"sh.keptn.event.{stage}.{sequence}.triggered",
        time=format_time(T0),
        shkeptncontext=context,
        gitcommitid=gitcommitid,
        data={"project": "fulltour", "stage": stage, "service": service, **data},
    )


@pytest.fixture
def engine_harness() -> type[EngineHarness]:
    return EngineHarness
