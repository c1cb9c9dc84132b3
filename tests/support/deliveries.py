"""Tutorial deliveries recorded into a real git ledger, decided by the real engine, without running jobs.

For the web view's HTTP tests: the pure engine (`decide`) plays the shipyard;
executors are scripted (jobs pass or fail with a log, approvals answer as the
approval service would or stay pending) and the evaluation is scored by the real
lighthouse scorer against the tutorial's local SLO, so `evaluation.finished`
carries the same `data.evaluation` block (indicator results, score, SLO file)
the evaluation executor writes. The events go into a `Ledger` with `extend`,
exactly as the reconciler appends them.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.approval import manual_answer
from reconciler.core.outcomes import finished_event, started_event
from reconciler.core.scoring import SLIAnswer, SLIValue, evaluate
from reconciler.formats.events import KeptnEvent, derived_id, format_time
from reconciler.formats.slo import load_slo
from reconciler.ledger.gitledger import Ledger
from tests.support.engine import EngineHarness
from tests.support.ingress import EXAMPLE

LOCAL = EXAMPLE / "_local"
SHIPYARD = (LOCAL / "main" / "shipyard.yaml").read_text()
MANUAL_SHIPYARD = SHIPYARD.replace(
    "                pass: automatic\n                warning: automatic\n",
    "                pass: automatic\n                warning: manual\n",
)
assert MANUAL_SHIPYARD != SHIPYARD
SLO = (LOCAL / "qa" / "helloservice" / "slo.yaml").read_bytes()


def sli_values(
    response_time: float, throughput: float = 5.0, threads: float = 8.0, failing: float = 0.0
) -> list[SLIValue]:
    return [
        SLIValue(metric="http_response_time_seconds_main_page_sum", value=response_time, success=True),
        SLIValue(metric="request_throughput", value=throughput, success=True),
        SLIValue(metric="python_threads", value=threads, success=True),
        SLIValue(metric="failing_request", value=failing, success=True),
    ]


@dataclass
class Outcome:
    """How one delivery's tasks answer."""

    response_time: float = 0.2
    threads: float = 8.0
    failing: float = 0.0
    """failing_request, the one objective that is not key: 10 or more makes a warning (score 75)."""
    deploy_fails_with: str = ""
    """A job error message (with its log) for je-deployment; empty: it passes."""
    approve: bool | None = None
    """A manual approval's answer; None leaves it pending."""
    message: str = ""
    """Message of the passing je-test (e.g. hostile text)."""


class Deliveries:
    """The engine on the local tutorial shipyard, with scripted executors; events kept in order."""

    def __init__(self, shipyard: str = MANUAL_SHIPYARD, slo: bytes = SLO) -> None:
        self.h = EngineHarness(shipyard)
        self.slo_raw = slo
        self.slo = load_slo(slo)
        self.outcome = Outcome()
        self.previous: list[Any] = []
        for task in ("je-deployment", "je-test", "evaluation", "approval", "get-action", "action"):
            self.h.on(task, self._answer)

    @property
    def events(self) -> list[KeptnEvent]:
        return self.h.ledger

    def tick(self, seconds: float = 5.0) -> None:
        self.h.now += timedelta(seconds=seconds)

    def _stamp(self, event: KeptnEvent) -> KeptnEvent:
        return event.model_copy(update={"time": format_time(self.h.now)})

    def _answer(self, triggered: KeptnEvent) -> list[KeptnEvent]:
        etype = triggered.etype
        assert etype is not None and etype.task
        task = etype.task
        self.tick()
        if task == "approval":
            return self._approval(triggered)
        if task == "evaluation":
            return self._evaluation(triggered)
        source = "job-executor-service"
        started = self._stamp(started_event(triggered, source, now=self.h.now))
        self.tick(3)
        if task == "je-deployment" and self.outcome.deploy_fails_with:
            done = finished_event(
                triggered,
                source,
                result="fail",
                status="errored",
                message=self.outcome.deploy_fails_with,
                now=self.h.now,
            )
        else:
            message = self.outcome.message if task == "je-test" and self.outcome.message else ""
            done = finished_event(
                triggered,
                source,
                result="pass",
                message=message or f"Job {task} finished successfully!",
                now=self.h.now,
            )
        return [started, self._stamp(done)]

    def _approval(self, triggered: KeptnEvent) -> list[KeptnEvent]:
        previous = str(triggered.data.get("result") or "pass")
        source = "approval-service"
        started = self._stamp(started_event(triggered, source, now=self.h.now))
        if previous == "pass":  # pass: automatic
            return [started, self._stamp(finished_event(triggered, source, result="pass", now=self.h.now))]
        if self.outcome.approve is None:
            return [started]
        answer = manual_answer(triggered, approve=self.outcome.approve, approver="tester", now=self.h.now)
        return [started, self._stamp(answer)]

    def _evaluation(self, triggered: KeptnEvent) -> list[KeptnEvent]:
        source = "lighthouse-service"
        started = self._stamp(started_event(triggered, source, now=self.h.now))
        values = sli_values(
            self.outcome.response_time, threads=self.outcome.threads, failing=self.outcome.failing
        )
        verdict = evaluate(self.slo, SLIAnswer(indicatorValues=values), project="fulltour")
        start, end = format_time(self.h.now - timedelta(minutes=1)), format_time(self.h.now)
        block = verdict.keptn(
            time_start=start, time_end=end, slo_file_content=base64.b64encode(self.slo_raw).decode()
        )
        done = finished_event(
            triggered,
            source,
            result=verdict.event_result,
            status=verdict.status,
            message=verdict.message,
            data={"evaluation": block},
            now=self.h.now,
        )
        return [started, self._stamp(done)]

    def deliver(
        self,
        image: str,
        *,
        service: str = "helloservice",
        outcome: Outcome | None = None,
        context: str = "",
        labels: dict[str, str] | None = None,
    ) -> str:
        """A commit-to-deploy delivery of `image` to qa (and on to production when the engine chains it)."""
        self.outcome = outcome or Outcome()
        self.tick(30)
        n = len(self.h.ledger)
        context = context or derived_id("ui-test-context", image, service, str(n))
        trigger = KeptnEvent(
            id=derived_id("ui-test-trigger", context),
            source="reconciler-upstream",
            type="sh.keptn.event.qa.delivery.triggered",
            time=format_time(self.h.now),
            shkeptncontext=context,
            gitcommitid="a" * 40,
            data={
                "project": "fulltour",
                "stage": "qa",
                "service": service,
                "configurationChange": {"values": {"image": image}},
                **({"labels": labels} if labels else {}),
            },
        )
        self._run(trigger)
        return context

    def _run(self, first: KeptnEvent, max_steps: int = 200) -> None:
        """Record `first`, then answer each task the engine dispatches until it is quiet."""
        seen = len(self.h.ledger)
        self.h.record(first)
        for _ in range(max_steps):
            fresh = self.h.ledger[seen:]
            seen = len(self.h.ledger)
            answers = []
            for event in fresh:
                etype = event.etype
                if (
                    etype is not None
                    and etype.is_task
                    and etype.kind == "triggered"
                    and event.source == "shipyard-controller"
                ):
                    fn = self.h.executors.get(etype.task or "")
                    if fn is not None:
                        answers.extend(fn(event))
            if not answers:
                return
            for answer in answers:
                self.h.record(answer)
        raise AssertionError("the engine did not settle")

    def answer_pending(self, approve: bool) -> None:
        """Answer the open manual approval as a person would (then let the engine go on)."""
        pending = [
            e
            for e in self.h.ledger
            if e.type == "sh.keptn.event.approval.triggered"
            and not any(a.triggeredid == e.id and a.type.endswith(".finished") for a in self.h.ledger)
        ]
        for triggered in pending:
            self.tick()
            self._run(
                self._stamp(manual_answer(triggered, approve=approve, approver="tester", now=self.h.now))
            )

    def write(self, ledger: Ledger, events: Sequence[KeptnEvent] | None = None) -> None:
        ledger.extend(list(events if events is not None else self.h.ledger))


@pytest.fixture
def deliveries() -> Deliveries:
    return Deliveries()


def tutorial_ledger(data_dir: Path) -> Ledger:
    return Ledger(data_dir / "ledger.git", "reconciler-ledger")
