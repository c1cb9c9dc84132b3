"""The control loop with executors as separate components: dispatch, approvals, restarts."""

from __future__ import annotations

import errno
import threading
import time
from datetime import timedelta

from reconciler.base.clock import utcnow
from reconciler.controller.loop import Controller
from reconciler.core.approval import manual_answer
from reconciler.core.outcomes import Outcome, Retry, Stalled, Succeeded, started_event, task_of
from reconciler.core.planning import Policy
from reconciler.executors.approval import ApprovalExecutor
from reconciler.executors.base import TaskContext, TaskExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.shipyard import load_shipyard
from reconciler.runtime import health
from tests.support import waiting
from tests.support.context import MemoryContext
from tests.support.engine import StaticConfig, trigger
from tests.support.memledger import MemoryLedger

SHIPYARD = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: s}
spec:
  stages:
    - name: production
      sequences:
        - name: delivery
          tasks:
            - name: approval
              properties: {pass: manual, warning: manual}
            - name: deploy
        - name: auto
          tasks:
            - name: approval
              properties: {pass: automatic, warning: automatic}
            - name: deploy
        - name: orphan
          tasks:
            - name: nobody-does-this
"""


class Scripted(TaskExecutor):
    """An executor that answers the tasks it is told about with a fixed result."""

    def __init__(self, name: str, results: dict[str, str], fail_with: Exception | None = None) -> None:
        self.name = name
        self.results = results
        self.fail_with = fail_with
        self.calls: list[str] = []

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        return event.etype is not None and event.etype.kind == "triggered" and task_of(event) in self.results

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        self.calls.append(event.id)
        if self.fail_with is not None:
            raise self.fail_with
        if not started:
            ctx.emit(started_event(event, self.name, now=ctx.now()))
        result = self.results[task_of(event)]
        assert result in ("pass", "warning", "fail")
        return Succeeded(result=result)  # type: ignore[arg-type]


class LedgerContext(MemoryContext):
    def __init__(self, ledger: MemoryLedger) -> None:
        super().__init__()
        self.ledger = ledger

    def emit(self, event: KeptnEvent) -> None:
        self.ledger.append(event)


def make(ledger: MemoryLedger, *executors: object) -> Controller:
    config = StaticConfig({"m": load_shipyard(SHIPYARD)}, "m")
    return Controller(
        ledger=ledger,
        config=config,
        executors=list(executors),  # type: ignore[arg-type]
        context_factory=lambda: LedgerContext(ledger),
        policy=Policy(),
    )


def settle(ctrl: Controller, rounds: int = 50) -> None:
    for _ in range(rounds):
        ctrl.step()
        ctrl.drain()
        before = len(ctrl.ledger.events())
        ctrl.step()
        ctrl.drain()
        if len(ctrl.ledger.events()) == before and not ctrl.running:
            return


def last(ledger: MemoryLedger, type_: str) -> KeptnEvent:
    return [e for e in ledger.events() if e.type == type_][-1]


def test_task_no_executor_handles_fails_at_once_naming_the_task_and_config() -> None:
    ledger = MemoryLedger()
    ctrl = make(ledger, ApprovalExecutor())
    ledger.append(trigger("production", "orphan"))
    settle(ctrl)
    done = last(ledger, "sh.keptn.event.production.orphan.finished")
    assert (done.status, done.result) == ("errored", "fail")
    assert "nobody-does-this" in done.data["message"]
    assert "job/config.yaml" in done.data["message"]


def test_automatic_approval_never_waits() -> None:
    ledger = MemoryLedger()
    deploy = Scripted("jes", {"deploy": "pass"})
    ctrl = make(ledger, ApprovalExecutor(), deploy)
    ledger.append(trigger("production", "auto", result="pass"))
    settle(ctrl)
    assert last(ledger, "sh.keptn.event.approval.finished").result == "pass"
    assert last(ledger, "sh.keptn.event.production.auto.finished").result == "pass"
    assert len(deploy.calls) == 1


def approval_flow(approve: bool) -> tuple[MemoryLedger, Scripted]:
    ledger = MemoryLedger()
    deploy = Scripted("jes", {"deploy": "pass"})
    ctrl = make(ledger, ApprovalExecutor(), deploy)
    ledger.append(trigger("production", "delivery", result="pass"))
    settle(ctrl)
    assert ledger.types()[-1] == "sh.keptn.event.approval.started"
    assert "manual" in last(ledger, "sh.keptn.event.approval.started").data["message"]
    assert deploy.calls == []

    # a restart while waiting: a fresh controller replays the ledger; the approval stays pending
    ctrl2 = make(ledger, ApprovalExecutor(), deploy)
    ctrl2.replay()
    settle(ctrl2)
    assert ledger.types()[-1] == "sh.keptn.event.approval.started"
    assert ledger.types().count("sh.keptn.event.approval.started") == 1
    pending = [(ex.stage, run.name) for ex, run in ctrl2.state.open_tasks()]
    assert pending == [("production", "approval")]

    triggered = last(ledger, "sh.keptn.event.approval.triggered")
    ledger.append(
        manual_answer(triggered, approve=approve, approver="alice", message="looks good", now=utcnow())
    )
    settle(ctrl2)
    return ledger, deploy


def test_manual_approval_waits_for_a_person_and_survives_a_restart() -> None:
    ledger, deploy = approval_flow(approve=True)
    assert len(deploy.calls) == 1
    done = last(ledger, "sh.keptn.event.production.delivery.finished")
    assert done.result == "pass"


def test_declined_approval_stops_the_sequence() -> None:
    ledger, deploy = approval_flow(approve=False)
    assert deploy.calls == []
    done = last(ledger, "sh.keptn.event.production.delivery.finished")
    assert done.result == "fail"


def test_executor_that_crashes_still_ends_its_task_with_the_reason() -> None:
    ledger = MemoryLedger()
    broken = Scripted("jes", {"deploy": "pass"}, fail_with=RuntimeError("kaboom"))
    ctrl = make(ledger, ApprovalExecutor(), broken)
    ledger.append(trigger("production", "auto", result="pass"))
    settle(ctrl)
    done = last(ledger, "sh.keptn.event.deploy.finished")
    assert done.status == "errored" and "kaboom" in done.data["message"]
    assert last(ledger, "sh.keptn.event.production.auto.finished").result == "fail"


def test_restart_mid_task_hands_the_task_back_as_started_not_twice_started() -> None:
    ledger = MemoryLedger()
    seen: list[bool] = []

    class Slow(Scripted):
        def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
            seen.append(started)
            if not started:
                ctx.emit(started_event(event, self.name, now=ctx.now()))
                return Stalled("Crashed")  # "crash" before finishing
            return Succeeded()

    first = make(ledger, ApprovalExecutor(), Slow("jes", {"deploy": "pass"}))
    ledger.append(trigger("production", "auto", result="pass"))
    settle(first)
    assert seen == [False]
    second = make(ledger, ApprovalExecutor(), Slow("jes", {"deploy": "pass"}))
    second.replay()
    settle(second)
    assert seen == [False, True]
    assert ledger.types().count("sh.keptn.event.deploy.started") == 1
    assert last(ledger, "sh.keptn.event.production.auto.finished").result == "pass"


class FlakyLedger(MemoryLedger):
    """A ledger that cannot be read while `broken`, as when the process has no descriptors left."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = threading.Event()
        self.failed_reads = 0

    def _check(self) -> None:
        if self.broken.is_set():
            self.failed_reads += 1
            raise OSError(errno.EMFILE, "Too many open files")

    def refresh(self) -> list[KeptnEvent]:
        self._check()
        return []

    def wait_for_change(self, timeout: float) -> bool:
        self._check()
        return super().wait_for_change(timeout)


def test_an_io_error_in_the_loop_is_reported_and_retried_with_backoff_never_ending_the_loop() -> None:
    """Issue 20: `OSError: Too many open files` from the ledger escaped `run_forever` and the
    reconciler exited. The loop must report it, back off, and carry on once reads work again."""
    health.reset()
    ledger = FlakyLedger()
    ctrl = make(ledger, ApprovalExecutor(), Scripted("jes", {"deploy": "pass"}))
    cycles: list[int] = []
    ctrl.on_cycle.append(lambda _: cycles.append(1))
    loop = threading.Thread(target=ctrl.run_forever, kwargs={"idle": 0.05}, daemon=True)
    loop.start()
    try:
        waiting.wait_for(lambda: cycles, 5, "the loop to turn")
        ledger.broken.set()
        problem = waiting.wait_for(
            lambda: health.snapshot().get("control loop"), 5, "the problem on the board"
        )
        assert "Too many open files" in problem["message"]
        time.sleep(2.5)
        assert loop.is_alive(), "an I/O error ended the control loop"
        # backing off (0.5 s, 1 s, 2 s, ...), not spinning: a handful of tries in 2.5 s
        assert 2 <= ledger.failed_reads <= 6, ledger.failed_reads
        assert health.snapshot()["control loop"]["count"] >= 2

        ledger.broken.clear()
        ledger.append(trigger("production", "auto", result="pass"))
        ctrl.kick()
        waiting.wait_for(
            lambda: any(e.type == "sh.keptn.event.production.auto.finished" for e in ledger.events()),
            10,
            "the loop to run the sequence once the ledger reads again",
        )
        assert "control loop" not in health.snapshot()
    finally:
        ctrl.shutdown(wait=True)
        loop.join(timeout=5)
        health.reset()
    assert not loop.is_alive()


def test_an_executor_that_asks_to_retry_is_run_again_later_and_records_nothing_until_then() -> None:
    ledger = MemoryLedger()

    class Busy(Scripted):
        def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
            self.calls.append(event.id)
            if not started:
                ctx.emit(started_event(event, self.name, now=ctx.now()))
            if len(self.calls) == 1:
                return Retry(timedelta(seconds=0.2), "ReceiverBusy", "429 Too Many Requests")
            return Succeeded()

    busy = Busy("jes", {"deploy": "pass"})
    ctrl = make(ledger, ApprovalExecutor(), busy)
    ledger.append(trigger("production", "auto", result="pass"))
    settle(ctrl)
    assert len(busy.calls) == 1 and "sh.keptn.event.deploy.finished" not in ledger.types()
    waiting.wait_for(lambda: (settle(ctrl), len(busy.calls) == 2)[1], 10, "the retry the executor asked for")
    assert last(ledger, "sh.keptn.event.deploy.finished").result == "pass"


def test_a_crashed_executor_is_answered_with_its_reason() -> None:
    ledger = MemoryLedger()
    ctrl = make(
        ledger, ApprovalExecutor(), Scripted("jes", {"deploy": "pass"}, fail_with=RuntimeError("kaboom"))
    )
    ledger.append(trigger("production", "auto", result="pass"))
    settle(ctrl)
    done = last(ledger, "sh.keptn.event.deploy.finished")
    assert done.data["reconciler"] == {"reason": "ExecutorCrashed"}
    assert done.data["message"] == "executor error: RuntimeError: kaboom"


def test_finished_tasks_leave_no_record_in_the_loop_and_a_waiting_one_is_not_handed_over_again() -> None:
    """Issue 19 (memory stays bounded): the loop remembered every task run it had handed to an
    executor (not to hand it over twice) for as long as the process ran, one entry per task ever
    run. Only an open task can be handed over again, so only open tasks are remembered now; an
    approval waiting for a person is still not handed over again while the others finish."""
    ledger = MemoryLedger()
    deploy = Scripted("jes", {"deploy": "pass"})
    approvals = ApprovalExecutor()
    ctrl = make(ledger, approvals, deploy)
    ledger.append(trigger("production", "delivery", service="waits", context="ctx-waits", result="pass"))
    for n in range(20):
        ledger.append(trigger("production", "auto", service=f"svc-{n}", context=f"ctx-{n}", result="pass"))
    settle(ctrl)
    assert len(deploy.calls) == 20
    finished = [e for e in ledger.events() if e.type == "sh.keptn.event.production.auto.finished"]
    assert len(finished) == 20 and all(e.result == "pass" for e in finished)
    (waiting,) = [
        e
        for e in ledger.events()
        if e.type == "sh.keptn.event.approval.triggered" and e.shkeptncontext == "ctx-waits"
    ]
    assert ctrl.settled == {(waiting.id, approvals.name)}  # 41 task runs handed out, 1 still open

    settle(ctrl)
    started = [e for e in ledger.events() if e.type == "sh.keptn.event.approval.started"]
    assert [e.triggeredid for e in started].count(waiting.id) == 1
    assert [run.triggered.id for _, run in ctrl.state.open_tasks()] == [waiting.id]

    ledger.append(manual_answer(waiting, approve=True, approver="alice", message="ok", now=utcnow()))
    settle(ctrl)
    assert len(deploy.calls) == 21
    assert last(ledger, "sh.keptn.event.production.delivery.finished").result == "pass"
    assert ctrl.settled == set()
