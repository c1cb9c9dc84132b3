"""The control loop: ledger -> state -> plan -> ledger, and open tasks -> executors.

One thread owns the engine state. It reads every new ledger event (whoever wrote
it: this loop, an executor thread, the CLI in another process), folds it into
state, asks the pure engine what should happen, records that in the ledger, and
hands open tasks to the executors that claim them. Nothing acts on an event
before it is a commit on the ledger (write-ahead), so a crash at any point is
recovered by replaying the ledger and running the same loop again: decisions
already recorded are state, decisions not yet recorded are made again (with the
same derived ids), and executors adopt the work they had started.

Each executor has its own pool of workers, so approvals, evaluations and get-action
never wait behind long jobs. A task waiting for a worker can still hit its start
deadline; the engine then says it was queued (and behind how many), and the task
never starts: the worker checks the ledger before running it, and an executor's
`.started` is recorded only while the task has no `.finished`, under the loop's start
guard (`Controller.start_lock`, `AppContext.emit`). The loop takes that guard only to
record a round that ends a task (a deadline): it folds what arrived meanwhile and, if
anything did, plans the round again instead of recording it, so a `.started` cannot slip
in between the state a deadline was decided on and its record. The loop never waits for an
executor's `.started`; an executor's write waits for the step under way to end (at most
0.1 s, `wait_between_steps`), so the loop has the ledger's lock to itself during a step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from reconciler.base.clock import utcnow
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.engine import earliest, pinned_shipyards, settle
from reconciler.core.engine_payload import EngineStatePayload, to_payload
from reconciler.core.engine_state import (
    CONTROLLER,
    REASON_NO_EXECUTOR,
    EngineState,
    Execution,
    TaskRun,
    apply,
)
from reconciler.core.outcomes import FAILED_CRASHED, Failed, Retry, Stalled
from reconciler.core.planning import ConfigView, Policy, Queued
from reconciler.executors.base import Executor, TaskAlreadyFinished, TaskContext, record_answer
from reconciler.formats.events import KeptnEvent, derived_id, format_time, task_type
from reconciler.formats.gotime import parse_go_duration
from reconciler.ledger.enginecheckpoint import EngineCheckpoint, last_event_id
from reconciler.ledger.heap import BULK_EVENTS, release_freed_memory
from reconciler.runtime import health
from reconciler.settings import Settings

log = get_logger("reconciler.controller.loop")

COMPACT_EVERY = 5000
"""Events folded between compactions of the engine state (and the chunk size of a replay)."""
KEEP_FINISHED = 100
"""Finished executions the control loop remembers (only gauges and hooks look at them)."""
RECORD_RETRY_MAX = 30.0
"""Cap in seconds of the backoff between re-runs of an executor whose answer the ledger could not take."""
STEP_RETRY_FIRST = 0.5
STEP_RETRY_MAX = 30.0
"""Backoff in seconds between re-runs of a control-loop step that failed (first, cap)."""


class SnapshotSource(Protocol):
    """Where the served configuration comes from (the upstream's snapshot store)."""

    def snapshot_for(self, shipyard_commits: Iterable[str]) -> ConfigView:
        """The current snapshot, holding the shipyards at these main commits too."""
        ...


class EventLog(Protocol):
    """The ledger as the controller uses it."""

    def append(self, event: KeptnEvent) -> bool: ...

    def extend(self, events: Iterable[KeptnEvent]) -> list[bool]: ...

    def events(self) -> Sequence[KeptnEvent]: ...

    def refresh(self) -> list[KeptnEvent]: ...

    def wait_for_change(self, timeout: float) -> bool: ...


class CheckpointPart(Protocol):
    """Something else derived from the same fold, saved with the engine state (the metrics' counters)."""

    def save(self, state: EngineState) -> dict[str, Any]:
        """JSON-able data; called under the loop's lock with the state being saved."""
        ...

    def restore(self, data: Any) -> None:
        """Take back what `save` returned; ValueError (replacing nothing) when it is not that."""
        ...


def policy_from(settings: Settings) -> Policy:
    """The engine's settings, derived once at wiring."""
    return Policy(
        start_deadline=parse_go_duration(settings.task_start_deadline),
        run_deadline=parse_go_duration(settings.task_run_deadline),
        max_iterations=settings.remediation_max_iterations,
    )


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class ExecutorRun:
    triggered_id: str
    executor: str
    task: str
    started_at: datetime
    error: str = ""
    order: int = 0
    """Submission order, for "queued behind N tasks"."""
    began: bool = False
    """A worker picked it up (until then it waits in its executor's queue)."""


@dataclass(frozen=True)
class ReplayReport:
    """How the start-up replay went (the `ledger_replayed` log line and status.json `engine.replay`)."""

    events: int
    """Ledger events the state covers after the replay."""
    folded: int
    """Of them, folded one by one at this start (all of them without a checkpoint)."""
    from_checkpoint: int
    """Of them, covered by the engine-state checkpoint loaded (0: none was usable)."""
    seconds: float

    def as_dict(self) -> dict[str, int | float]:
        return {
            "events": self.events,
            "folded": self.folded,
            "from_checkpoint": self.from_checkpoint,
            "seconds": self.seconds,
        }


@dataclass
class Controller:
    """Drives the engine and the executors from one ledger."""

    ledger: EventLog
    config: ConfigView
    executors: list[Executor]
    context_factory: Callable[[], TaskContext]
    policy: Policy = field(default_factory=Policy)
    snapshots: SnapshotSource | None = None
    """When given, each step plans over its newest snapshot (`config` is then only the first)."""
    clock: Callable[[], datetime] = utcnow
    max_workers: int = 16
    """Workers of each executor's own pool, unless `pool_sizes` names it."""
    pool_sizes: dict[str, int] = field(default_factory=dict)
    state: EngineState = field(default_factory=EngineState)
    cursor: int = 0
    wake_at: datetime | None = None
    running: dict[tuple[str, str], ExecutorRun] = field(default_factory=dict)
    settled: set[tuple[str, str]] = field(default_factory=set)
    """(task's triggered id, executor) runs that returned in this process, not to be handed over
    again while the task is open (e.g. an approval waiting for a person); forgotten once the task
    is no longer open (`_forget_settled`), so it holds the open tasks, not every task run so far."""
    _pools: dict[str, ThreadPoolExecutor] = field(default_factory=dict)
    _submitted: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _start_guard: threading.RLock = field(default_factory=threading.RLock)
    """Held by executors while a `.started` is checked and recorded, and by the loop while it
    folds what arrived and records a round that ends a task (`_record_round`)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _between_steps: threading.Event = field(default_factory=_set_event)
    """Set while no step runs: executors' writes wait for it (`wait_between_steps`)."""
    _kick: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    on_cycle: list[Callable[[Controller], None]] = field(default_factory=list)
    retry_at: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    """Executor runs whose answer could not be recorded: (monotonic time of the next try, failures)."""
    compact_every: int = COMPACT_EVERY
    keep_finished: int = KEEP_FINISHED
    _folded: int = 0
    """Events folded since the state was last compacted."""
    cycles: int = 0
    """Steps completed (status.json `controller.cycles`; tests wait on it instead of sleeping)."""
    checkpoint: EngineCheckpoint | None = None
    """Where the folded state is saved now and then and loaded at start-up (a cache; see
    `ledger.enginecheckpoint`); None: every start folds the whole ledger."""
    checkpoint_parts: dict[str, CheckpointPart] = field(default_factory=dict)
    replay_report: ReplayReport | None = None

    # -- state --------------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Fold every ledger event not yet applied; returns how many."""
        events = self.ledger.events()
        n = 0
        while self.cursor < len(events):
            apply(self.state, events[self.cursor])
            self.cursor += 1
            n += 1
        self._folded += n
        return n

    def replay(self) -> int:
        """Rebuild state from the ledger (start-up); nothing is executed here.

        Folded in chunks with a compaction between them, so a long history never sits in
        memory at once (finished executions hold their events); the `on_cycle` hooks see
        each chunk's state first, so observers such as metrics count every execution.
        """
        began = time.monotonic()
        self.state = EngineState()
        self.cursor = 0
        self._folded = 0
        events = self.ledger.events()
        total = len(events)
        resumed = self.checkpoint.load(events, self.keep_finished) if self.checkpoint is not None else None
        if resumed is not None and not self._restore_parts(resumed.parts):
            resumed = None
        if resumed is not None:  # the state after its first `events` events: fold only the rest
            self.state = resumed.state
            self.cursor = resumed.events
        start = self.cursor
        while self.cursor < total:
            stop = min(total, self.cursor + max(1, self.compact_every))
            while self.cursor < stop:
                apply(self.state, events[self.cursor])
                self.cursor += 1
            if self.cursor < total:
                self._observe_and_compact()
        self._folded = total
        n = total + self.catch_up()
        if n - start >= BULK_EVENTS:
            release_freed_memory()
        self.replay_report = ReplayReport(
            events=self.cursor,
            folded=self.cursor - start,
            from_checkpoint=start,
            seconds=round(time.monotonic() - began, 3),
        )
        return n

    def _restore_parts(self, parts: dict[str, Any]) -> bool:
        """Hand each part its saved data; False (the checkpoint is then not used) if one refuses it."""
        for name, part in self.checkpoint_parts.items():
            if name not in parts:
                continue  # saved before this part was wired: it counts from the resumed state on
            try:
                part.restore(parts[name])
            except ValueError as exc:
                log.warning(
                    "engine_checkpoint_ignored",
                    reason=f"damaged: part {name!r}: {redact(str(exc))[:200]}",
                    action="folding the whole ledger",
                )
                return False
        return True

    def _checkpoint_if_due(self) -> None:
        """After a cycle's compaction: hand a copy of the state to the background writer every
        `checkpoint.save_every` events (the copy is lists of references; encoding is off the loop)."""
        ckpt = self.checkpoint
        if ckpt is None or self.cursor <= 0 or not ckpt.due(self.cursor):
            return
        try:  # a cache: failing to save costs the next start time, never this step
            payload = self._payload()
            last = last_event_id(self.ledger.events(), self.cursor)
            ckpt.save_soon(payload, self.cursor, last, self.keep_finished)
        except Exception as exc:
            ckpt.saved_events = self.cursor  # tried again after the next `save_every` events
            log.warning("engine_checkpoint_not_written", error=redact(f"{type(exc).__name__}: {exc}"))

    def _payload(self) -> EngineStatePayload:
        """The state as the next compaction would leave it, without compacting the live state
        (a copy of its containers; executions and events are shared, `compact` only drops them)."""
        s = self.state
        copy = EngineState(
            executions=dict(s.executions),
            order=list(s.order),
            live=dict(s.live),
            contexts={c: list(ids) for c, ids in s.contexts.items()},
            by_task=dict(s.by_task),
            paused=set(s.paused),
            event_count=s.event_count,
            forgotten_runs=dict(s.forgotten_runs),
        )
        copy.compact(self.keep_finished)
        payload = to_payload(copy)
        payload.parts = {name: part.save(s) for name, part in self.checkpoint_parts.items()}
        return payload

    def save_checkpoint(self, timeout: float = 30.0) -> bool:
        """At a clean stop: save the state now if it moved since the last save; True if written."""
        ckpt = self.checkpoint
        if ckpt is None:
            return False
        ckpt.wait(timeout)
        with self._lock:
            if self.cursor <= 0 or self.cursor == ckpt.saved_events or self.cursor < ckpt.save_every:
                return False
            payload = self._payload()
            n, last = self.cursor, last_event_id(self.ledger.events(), self.cursor)
        return ckpt.save(payload, n, last, self.keep_finished)

    def resume_from_own_checkpoint(
        self, *, forget: Callable[[], None], shed: Callable[[], None]
    ) -> str | None:
        """Write the engine-state checkpoint now and take the state back from it; why not, or None.
        "not written" (a full disk, say) keeps the folded state.

        A long fold allocates each event it decodes and frees most of them again; the executions,
        events and counters it keeps end up spread over the freed space, so pymalloc's pools (and
        their 1 MiB arenas) stay partly used for good: at 100,000 events the same state held
        ~14 MiB more than loaded from its checkpoint. Dropped first (`forget` drops what the
        checkpoint's parts hold, `shed` what the ledger kept of the fold), then read back, the
        state fills pools of its own and the rest go back to the system. A checkpoint written but
        not read back intact is no use: the ledger is folded again and the next cycle rewrites it."""
        checkpoint = self.checkpoint
        if checkpoint is None or not self.save_checkpoint():
            return "not written"
        with self._lock:
            cursor = self.cursor
            # nothing of the fold may stay referenced while the saved state is read, or the new
            # objects fill its pools' holes and no pool empties
            self.state = EngineState()
            forget()
            shed()
            resumed = checkpoint.load(self.ledger.events(), self.keep_finished)
            problem = None if resumed is not None else "the checkpoint just written did not load"
            if resumed is not None and resumed.events != cursor:
                problem = f"it covers {resumed.events} events, the fold {cursor}"
            if resumed is not None and problem is None and not self._restore_parts(resumed.parts):
                problem = "a part of it was refused"
            if resumed is None or problem is not None:
                self.replay()  # its hooks count into the parts forgotten above
                checkpoint.saved_events = 0
                return problem
            self.state = resumed.state
        return None

    def _observe_and_compact(self) -> None:
        for hook in self.on_cycle:
            hook(self)
        self.state.compact(self.keep_finished)
        self._folded = 0

    def _compact_if_due(self) -> None:
        """After a cycle's hooks ran: forget old finished executions every `compact_every` events."""
        if self.compact_every and self._folded >= self.compact_every:
            self.state.compact(self.keep_finished)
            self._folded = 0

    # -- one cycle -----------------------------------------------------------------------------

    def step(self) -> list[KeptnEvent]:
        """Apply new events, plan to a fixed point, dispatch open tasks. Returns emitted events."""
        with self._lock:
            self._between_steps.clear()
            try:
                return self._step()
            finally:
                self._between_steps.set()

    def wait_between_steps(self, timeout: float) -> None:
        """Until the step under way (if any) ends, at most `timeout` s: where executors' writes wait,
        so the loop's refresh, folds and records do not queue behind them for the ledger's lock.
        A transition's latency is the loop's; an executor's answer waits one step at most."""
        self._between_steps.wait(timeout)

    def _step(self) -> list[KeptnEvent]:
        self.ledger.refresh()
        self.catch_up()
        emitted: list[KeptnEvent] = []
        self.wake_at = None
        if self.snapshots is not None:  # immutable, in memory: plan reads no git
            self.config = self.snapshots.snapshot_for(pinned_shipyards(self.state))
        for decided in settle(self.state, self.config, self.clock(), self.policy, self.queued()):
            self.wake_at = earliest(self.wake_at, decided.wake_at)
            if decided.events:
                # One write for the round: a crash records all or none of it. A sequence's
                # .finished and the sequence it chains to are one round; recorded one by one,
                # a kill between them lost the chain (the finished sequence is never planned again).
                if not self._record_round(decided.events):
                    continue  # events arrived since the fold (folded now): plan this round again
                emitted.extend(decided.events)
                self.catch_up()
        emitted.extend(self._dispatch())
        self.catch_up()
        for hook in self.on_cycle:
            hook(self)
        self._compact_if_due()
        self._checkpoint_if_due()
        self.cycles += 1
        return emitted

    def _record_round(self, events: list[KeptnEvent]) -> bool:
        """Record a planned round; False (nothing recorded) when it ends a task and events arrived
        since the fold it was planned on: they are folded now and the caller plans again.

        A round that ends a task (a start or run deadline) is recorded under the start guard,
        after folding whatever arrived: an executor checks and records a `.started` under the same
        guard, so it lands either before (folded here: the deadline is planned again on it) or
        after this record (it then sees the `.finished` and does not start). Other rounds need
        no guard: nothing an executor records can make them wrong."""
        if not any(_ends_a_task(e) for e in events):
            self.ledger.extend(events)
            return True
        with self._start_guard:
            self.ledger.refresh()
            if self.catch_up():
                return False
            self.ledger.extend(events)
            return True

    def _forget_settled(self) -> None:
        """Drop the settled runs of tasks the engine no longer has open (finished, or their
        execution forgotten): only an open task can be handed over again. Kept for every task
        run, the set grew by one entry per task for as long as the process ran (~170 bytes each,
        150 a round in the scale bench: bench/README.md, issue 19 part 5). In place, not
        rebuilt: a worker adds to it from its thread."""
        open_tasks = self.state.by_task
        for key in [k for k in list(self.settled) if k[0] not in open_tasks]:
            self.settled.discard(key)

    def _dispatch(self) -> list[KeptnEvent]:
        self._forget_settled()
        out: list[KeptnEvent] = []
        ctx = self.context_factory()
        for ex, run in self.state.open_tasks():
            claimed = 0
            for executor in self.executors:
                key = (run.triggered.id, executor.name)
                answered = {e.source for e in run.finished}
                if executor.name in answered:
                    claimed += 1
                    continue
                if key in self.running or key in self.settled or self._backing_off(key):
                    claimed += 1
                    continue
                try:
                    claims = executor.claims(run.triggered, ctx)
                except Exception as exc:  # a broken config must not stop the loop
                    log.warning("executor_claim_failed", executor=executor.name, error=redact(str(exc)))
                    claims = False
                if not claims:
                    continue
                claimed += 1
                started = executor.name in {e.source for e in run.started}
                self._submit(executor, run, started)
            if claimed == 0 and not run.started and not run.finished:
                event = no_executor_event(ex, run, self.clock(), self._explain(run.triggered, ctx))
                self.ledger.append(event)
                out.append(event)
        return out

    def _explain(self, triggered: KeptnEvent, ctx: TaskContext) -> str | None:
        """What the executors that could have claimed say (which job config, which webhook file),
        joined; an executor with nothing to say (no file of its kind) returns None."""
        reasons: list[str] = []
        for executor in self.executors:
            explain = getattr(executor, "explain_unclaimed", None)
            if explain is None:
                continue
            try:
                said = explain(triggered, ctx)
            except Exception as exc:
                log.warning("executor_explain_failed", executor=executor.name, error=redact(str(exc)))
                continue
            if said:
                reasons.append(str(said))
        return "; ".join(reasons) or None

    def workers(self, executor: str) -> int:
        return max(1, self.pool_sizes.get(executor, self.max_workers))

    def _pool_of(self, executor: str) -> ThreadPoolExecutor:
        """Each executor's own workers: a long job never holds up an approval or an evaluation."""
        pool = self._pools.get(executor)
        if pool is None:
            pool = self._pools[executor] = ThreadPoolExecutor(
                max_workers=self.workers(executor), thread_name_prefix=f"executor-{executor}"
            )
        return pool

    def queued(self) -> dict[str, Queued]:
        """Tasks handed to an executor that no worker has begun, with how many are ahead of each."""
        out: dict[str, Queued] = {}
        ahead: dict[str, int] = {}
        for run in sorted(list(self.running.values()), key=lambda r: r.order):
            if not run.began:
                out[run.triggered_id] = Queued(
                    run.executor, ahead.get(run.executor, 0), self.workers(run.executor)
                )
            ahead[run.executor] = ahead.get(run.executor, 0) + 1
        return out

    def _submit(self, executor: Executor, run: TaskRun, started: bool) -> None:
        key = (run.triggered.id, executor.name)
        self._submitted += 1
        record = ExecutorRun(run.triggered.id, executor.name, run.name, self.clock(), order=self._submitted)
        self.running[key] = record
        triggered = run.triggered

        def work() -> None:
            settle = True
            record.began = True
            try:
                ctx = self.context_factory()
                finished = getattr(ctx, "task_finished", None)
                if finished is not None and finished(triggered):
                    # e.g. timed out by the engine while it waited for a worker: it must not run
                    log.info(
                        "task_not_started", executor=executor.name, task=run.name, reason="already finished"
                    )
                    return
                outcome = executor.run(triggered, ctx, started=started)
                for part in outcome.health:
                    health.note(part)
                if isinstance(outcome, Retry):  # nothing recorded: run it again later, the task stays open
                    settle = False
                    self._back_off(key, run.name, outcome.message or outcome.reason, after=outcome.after)
                elif isinstance(outcome, Stalled):
                    log.info("task_stalled", executor=executor.name, task=run.name, reason=outcome.reason)
            except TaskAlreadyFinished as exc:
                log.info("task_not_started", executor=executor.name, task=run.name, reason=str(exc))
            except Exception as exc:
                message = redact(f"{type(exc).__name__}: {exc}")
                log.error("executor_failed", executor=executor.name, task=run.name, error=message)
                self.errors.append(message)
                try:
                    crashed = Failed(FAILED_CRASHED, f"executor error: {message}")
                    record_answer(
                        self.context_factory(), triggered, executor.name, crashed, with_started=True
                    )
                except TaskAlreadyFinished:
                    pass  # the engine ended the task meanwhile; nothing is owed
                except Exception as unrecorded:
                    # The ledger cannot take even that (e.g. a full disk): the task's outcome
                    # would be lost until a restart. Run the executor again later instead
                    # (it adopts its job); until then the task stays open.
                    settle = False
                    self._back_off(key, run.name, redact(f"{type(unrecorded).__name__}: {unrecorded}"))
            finally:
                # Returned without finishing (e.g. a manual approval waiting for a person):
                # do not hand it over again in this process; a restart adopts it.
                if settle:
                    self.settled.add(key)
                    if self.retry_at.pop(key, None) is not None and not self.retry_at:
                        health.clear("ledger")
                self.running.pop(key, None)
                self.kick()

        self._pool_of(executor.name).submit(work)

    def _backing_off(self, key: tuple[str, str]) -> bool:
        entry = self.retry_at.get(key)
        return entry is not None and time.monotonic() < entry[0]

    def _back_off(self, key: tuple[str, str], task: str, error: str, after: timedelta | None = None) -> None:
        """Run the executor again later: after `after` when it asked (`Retry`), else with a backoff
        doubling up to RECORD_RETRY_MAX (its answer could not be recorded)."""
        failures = self.retry_at.get(key, (0.0, 0))[1] + 1
        delay = after.total_seconds() if after is not None else min(RECORD_RETRY_MAX, 2.0 ** (failures - 1))
        self.retry_at[key] = (time.monotonic() + delay, failures)
        if after is not None:
            log.info("executor_retry", executor=key[1], task=task, reason=error, retry_in=delay)
            return
        log.warning("executor_answer_unrecorded", executor=key[1], task=task, error=error, retry_in=delay)
        health.report(
            "ledger", f"cannot record the answer of task {task!r} ({key[1]}): {error}; retrying in {delay:g}s"
        )

    # -- the loop -------------------------------------------------------------------------------

    def kick(self) -> None:
        self._kick.set()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()

    def run_forever(self, *, idle: float = 1.0) -> None:
        """Step until stopped; wake on ledger changes, kicks, timers, or after `idle` seconds.

        Nothing that goes wrong inside ends the loop: a failed step or wait (a full disk,
        no descriptors left, a damaged object) is logged, shown on the problems board and
        retried with a backoff doubling up to `STEP_RETRY_MAX`; the state stays the last
        good one, and the ledger, written ahead, loses nothing.
        """
        failures = 0
        while not self._stop.is_set():
            try:
                self.step()
                if failures:
                    failures = 0
                    log.info("controller_step_recovered")
                health.clear("control loop")
                self._wait(idle)
            except Exception as exc:  # keep running on the last good state
                failures += 1
                delay = min(STEP_RETRY_MAX, STEP_RETRY_FIRST * 2 ** (failures - 1))
                error = redact(f"{type(exc).__name__}: {exc}")
                log.error("controller_step_failed", error=error, failures=failures, retry_in=delay)
                health.report(
                    "control loop",
                    f"a step failed ({failures} in a row) and is retried in {delay:g}s: {error}",
                )
                self._stop.wait(delay)

    def _wait(self, idle: float) -> None:
        timeout = idle
        if self.wake_at is not None:
            timeout = max(0.0, min(idle, (self.wake_at - self.clock()).total_seconds()))
        if self._kick.wait(timeout=min(timeout, 0.2)):
            self._kick.clear()
            return
        self.ledger.wait_for_change(max(0.0, timeout - 0.2))

    @property
    def lock(self) -> threading.RLock:
        """Held while a step folds, plans and records (executors do not take it)."""
        return self._lock

    @property
    def start_lock(self) -> threading.RLock:
        """The guard an executor's `.started` is checked and recorded under (`AppContext.start_lock`);
        the loop holds it only while it records a round that ends a task (`_record_round`)."""
        return self._start_guard

    def drain(self) -> None:
        """Wait until every task handed to an executor has returned (new pools start on demand)."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.shutdown(wait=True)

    def shutdown(self, wait: bool = True, timeout: float = 30.0) -> None:
        self.stop()
        for pool in list(self._pools.values()):
            pool.shutdown(wait=wait, cancel_futures=True)

    def idle(self) -> bool:
        return not self.running


def _ends_a_task(event: KeptnEvent) -> bool:
    """A task's `.finished` decided by the engine (a deadline): what a racing `.started` contradicts."""
    etype = event.etype
    return etype is not None and etype.is_task and etype.kind == "finished"


def no_executor_event(
    ex: Execution, run: TaskRun, now: datetime, explanation: str | None = None
) -> KeptnEvent:
    """A task nobody claims fails at once, naming what was looked at (not after 10 silent minutes)."""
    data: dict[str, Any] = {
        "project": ex.project,
        "stage": ex.stage,
        "service": ex.service,
        "status": "errored",
        "result": "fail",
        "message": explanation
        or (
            f"no executor handles task {run.name!r}: it is not built in (approval, evaluation, get-action) and "
            f"no action in {ex.service}/job/config.yaml, job/config.yaml on branch {ex.stage}, or "
            f"job/config.yaml on main (at commit {ex.commit[:12] or 'head'}) matches {run.triggered.type}"
        ),
        "reconciler": {"reason": REASON_NO_EXECUTOR},
    }
    return KeptnEvent(
        id=derived_id(run.triggered.id, CONTROLLER, "finished"),
        source=CONTROLLER,
        type=task_type(run.name, "finished"),
        time=format_time(now),
        shkeptncontext=ex.context,
        triggeredid=run.triggered.id,
        gitcommitid=ex.commit or None,
        data=data,
    )


def seconds_until(when: datetime | None, now: datetime) -> float | None:
    return None if when is None else max(0.0, (when - now) / timedelta(seconds=1))
