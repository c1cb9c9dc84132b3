"""An executor's `.started` against the engine's start deadline: never both, and no lock held for a whole step.

The loop plans on the events it folded; an executor may record a `.started` on another thread
while it plans. These tests put that `.started` exactly between the loop's fold and the record
of the deadline it decided (from inside the step, on another thread), and the other way round.
Real parts: the controller, `AppContext` (the app's executor context) sharing the controller's
start guard, an in-memory ledger with the git ledger's contract.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

import pytest

from reconciler.appcontext import AppContext
from reconciler.controller.loop import Controller
from reconciler.core.engine_state import CONTROLLER
from reconciler.core.outcomes import Outcome, Stalled, started_event
from reconciler.core.planning import ConfigView, Policy
from reconciler.executors.base import TaskAlreadyFinished, TaskContext, TaskExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.shipyard import load_shipyard
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.engine import T0, StaticConfig, trigger
from tests.support.memledger import MemoryLedger

SHIPYARD = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: s}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - name: deploy
"""
DEPLOY_TRIGGERED = "sh.keptn.event.deploy.triggered"
DEPLOY_FINISHED = "sh.keptn.event.deploy.finished"


class Waiting(TaskExecutor):
    """Claims deploys and holds its worker until released, recording nothing itself."""

    name = "waiting-executor"

    def __init__(self) -> None:
        self.release = threading.Event()

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        return event.type == DEPLOY_TRIGGERED

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        self.release.wait(30)
        return Stalled("test", "released")

    def run(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        return self.attempt(event, ctx, started=started)


class Snapshots:
    """The step asks for its snapshot after folding and before planning: `hook` runs there."""

    def __init__(self, config: ConfigView) -> None:
        self.config = config
        self.hook: list[object] = []

    def snapshot_for(self, shipyard_commits: Iterable[str]) -> ConfigView:
        while self.hook:
            self.hook.pop()()  # type: ignore[operator]
        return self.config


def wired(
    tmp_path: object,
) -> tuple[Controller, AppContext, MemoryLedger, Snapshots, Waiting, list[datetime]]:
    now = [T0]
    ledger = MemoryLedger([trigger("qa", "delivery", service="web")])
    config = StaticConfig({"m": load_shipyard(SHIPYARD)}, "m")
    snapshots = Snapshots(config)
    context = AppContext(Settings(), ledger, DirectoryFiles(tmp_path), clock=lambda: now[0])  # type: ignore[arg-type]
    executor = Waiting()
    ctrl = Controller(
        ledger=ledger,
        config=config,
        snapshots=snapshots,
        executors=[executor],
        context_factory=lambda: context,
        policy=Policy(start_deadline=timedelta(seconds=10)),
        clock=lambda: now[0],
    )
    context.start_lock = ctrl.start_lock
    return ctrl, context, ledger, snapshots, executor, now


def deploy_triggered(ledger: MemoryLedger) -> KeptnEvent:
    return next(e for e in ledger.events() if e.type == DEPLOY_TRIGGERED)


@pytest.mark.timeout(60)
def test_a_started_recorded_while_the_loop_plans_a_start_deadline_wins_and_no_deadline_is_recorded(
    tmp_path: object,
) -> None:
    ctrl, context, ledger, snapshots, executor, now = wired(tmp_path)
    try:
        ctrl.step()  # the sequence starts; its deploy is triggered and handed to the waiting executor
        ctrl.step()
        triggered = deploy_triggered(ledger)
        now[0] = T0 + timedelta(seconds=30)  # past the start deadline
        recorded: list[BaseException | None] = []

        def executor_starts() -> None:
            def emit() -> None:
                try:
                    context.emit(started_event(triggered, executor.name, now=now[0]))
                    recorded.append(None)
                except BaseException as exc:  # handed to the test's thread
                    recorded.append(exc)

            worker = threading.Thread(target=emit)
            worker.start()
            worker.join(10)  # inside the step: an executor's .started does not wait for the step
            assert not worker.is_alive(), "the executor's .started waited for the control loop's step"

        snapshots.hook.append(executor_starts)  # after the step's fold, before it plans the deadline
        emitted = ctrl.step()
        assert recorded == [None]
        finished = [e for e in ledger.events() if e.type == DEPLOY_FINISHED]
        assert finished == [], "a deadline was recorded for a task whose .started landed before it"
        assert not [e for e in emitted if e.type == DEPLOY_FINISHED]
        started = [e for e in ledger.events() if e.type == "sh.keptn.event.deploy.started"]
        assert [e.triggeredid for e in started] == [triggered.id]
    finally:
        executor.release.set()
        ctrl.shutdown()


@pytest.mark.timeout(60)
def test_a_started_after_the_engine_recorded_the_start_deadline_is_refused(tmp_path: object) -> None:
    ctrl, context, ledger, _, executor, now = wired(tmp_path)
    try:
        ctrl.step()
        ctrl.step()
        triggered = deploy_triggered(ledger)
        now[0] = T0 + timedelta(seconds=30)
        ctrl.step()
        finished = [e for e in ledger.events() if e.type == DEPLOY_FINISHED]
        assert [e.source for e in finished] == [CONTROLLER]
        with pytest.raises(TaskAlreadyFinished):
            context.emit(started_event(triggered, executor.name, now=now[0]))
        assert not [e for e in ledger.events() if e.type == "sh.keptn.event.deploy.started"]
    finally:
        executor.release.set()
        ctrl.shutdown()
