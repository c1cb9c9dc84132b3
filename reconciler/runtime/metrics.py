"""The reconciler's own Prometheus metrics, served at `/metrics`.

Two kinds, kept apart on purpose:

- **Derived from the ledger** (sequences, tasks, evaluations, job runs, queues):
  computed from the engine state by pure functions (`account`, `gauges`). State is
  the replayed ledger, so after a restart — or on a new leader — the counters
  continue from what the ledger says happened instead of restarting at zero, and
  two replicas report the same history. They are exported by a custom collector
  from an immutable snapshot published once per control-loop cycle, so a scrape
  never reads state the control loop is changing.
- **About this process** (upstream fetches, ledger append latency, leadership):
  ordinary prometheus_client instruments, updated where the work happens.

Every metric lives in the `Metrics.registry` of its own (not the library's global
one), so tests and two apps in one process never share series. Names follow the
Prometheus conventions: `reconciler_` prefix, base units (seconds), `_total` on
counters, `_timestamp_seconds` on times. The list is `METRIC_DOCS` (also the table
in deploy/README.md). Imports: prometheus_client, reconciler.core.planning.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler.core.engine_state import EngineState, Execution, TaskRun
from reconciler.formats.events import KeptnEvent

T = TypeVar("T")

JOB_EXECUTOR = "job-executor-service"

SEQUENCE_STATES = ("waiting", "started", "waitingForApproval", "paused", "finished", "timedOut", "aborted")
"""Every `Execution.display_state`, exported even at zero so dashboards and alerts see the series."""

TASK_DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
"""From an automatic approval (instant) to the 2 h default run deadline of a task."""

FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WEBHOOK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
WEBHOOK_RESULTS = ("success", "failure", "refused", "timeout", "retried")
"""Every `result` of `reconciler_webhook_requests_total`, exported at zero from the start."""
APPEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

METRIC_DOCS: dict[str, tuple[str, str, str]] = {
    # name: (type, labels, help)
    "reconciler_sequences": (
        "gauge",
        "state",
        "Sequence executions the reconciler remembers, by state (waiting, started, waitingForApproval, "
        "paused, finished, timedOut, aborted); finished ones beyond the last 2000 are forgotten",
    ),
    "reconciler_sequences_finished_total": (
        "counter",
        "stage, sequence, result",
        "Sequence executions finished, by stage, sequence and result (pass, warning, fail), from the ledger",
    ),
    "reconciler_task_duration_seconds": (
        "histogram",
        "task, result",
        "Time from a task's .triggered to its last .finished, by task name and aggregated result",
    ),
    "reconciler_evaluations_total": (
        "counter",
        "result",
        "Quality-gate evaluations finished, by result (pass, warning, fail), from the ledger",
    ),
    "reconciler_queue_length": (
        "gauge",
        "project, stage, service",
        "Sequences waiting for an earlier one of the same project/stage/service to finish",
    ),
    "reconciler_upstream_fetch_duration_seconds": (
        "histogram",
        "",
        "Duration of fetches from the upstream git repository (this process)",
    ),
    "reconciler_upstream_fetch_failures_total": (
        "counter",
        "",
        "Upstream fetches that failed (this process)",
    ),
    "reconciler_upstream_last_success_timestamp_seconds": (
        "gauge",
        "",
        "Unix time of the last successful upstream fetch; 0 before the first",
    ),
    "reconciler_ledger_append_duration_seconds": (
        "histogram",
        "",
        "Time to append events to the ledger (one git commit each, this process)",
    ),
    "reconciler_job_runs_total": (
        "counter",
        "result",
        "Job executor runs (Kubernetes Jobs or local processes) finished, by result, from the ledger",
    ),
    "reconciler_webhook_requests_total": (
        "counter",
        "result",
        "Webhook task requests sent by this process, by result (success, failure, refused, timeout), "
        "and attempts retried (retried)",
    ),
    "reconciler_webhook_request_duration_seconds": (
        "histogram",
        "",
        "Time to send one webhook request, its retries included (this process)",
    ),
    "reconciler_leader": (
        "gauge",
        "",
        "1 while this process is the leader (or the only instance), else 0",
    ),
}


def _help(name: str) -> str:
    return METRIC_DOCS[name][2]


# --------------------------------------------------------------------------------------------
# Ledger-derived figures: pure functions over EngineState
# --------------------------------------------------------------------------------------------


@dataclass
class HistogramData:
    """Cumulative-ready bucket counts (non-cumulative here), sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_le(bound), float(running)))
        out.append(("+Inf", float(self.count)))
        return out

    def copy(self) -> HistogramData:
        return HistogramData(self.bounds, list(self.counts), self.total, self.count)


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class Tally:
    """Monotonic counts of what the ledger says finished; fed by `account`, never decreases.

    `closed` holds finished executions already counted; `seen_tasks`/`seen_jobs` the
    tasks and job runs counted in executions still open. So each finished sequence,
    task and job run counts exactly once however often `account` runs, and the sets
    stay as small as the state (pruned when the state forgets executions).
    """

    sequences_finished: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    evaluations: Counter[str] = field(default_factory=Counter)
    job_runs: Counter[str] = field(default_factory=Counter)
    task_durations: dict[tuple[str, str], HistogramData] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    seen_tasks: set[str] = field(default_factory=set)
    seen_jobs: set[str] = field(default_factory=set)
    event_count: int = -1

    def copy(self) -> Tally:
        """A snapshot for the collector (counters and histograms only)."""
        return Tally(
            sequences_finished=Counter(self.sequences_finished),
            evaluations=Counter(self.evaluations),
            job_runs=Counter(self.job_runs),
            task_durations={k: v.copy() for k, v in self.task_durations.items()},
            event_count=self.event_count,
        )


def task_duration(run: TaskRun) -> float | None:
    """Seconds from `.triggered` to completion; None while running."""
    if run.completed_at is None:
        return None
    return max(0.0, (run.completed_at - run.triggered_at).total_seconds())


def job_results(run: TaskRun) -> Iterator[tuple[str, str]]:
    """(finished event id, result) of every job-executor answer to a task."""
    for ev in run.finished:
        if ev.source == JOB_EXECUTOR:
            yield ev.id, ev.result or "fail"


def account(tally: Tally, state: EngineState) -> Tally:
    """Add to `tally` whatever finished in `state` and was not counted yet; returns `tally`.

    Deterministic and free of I/O: the same ledger gives the same counts whether it was
    replayed at start-up or lived through. A finished execution never changes again (the
    engine ignores answers after `.finished`), so once counted it is skipped: a cycle
    costs the open executions, not the history.
    """
    if state.event_count == tally.event_count:
        return tally
    for trigger_id in state.order:
        if trigger_id in tally.closed:
            continue
        ex = state.executions.get(trigger_id)
        if ex is None:
            continue
        for run in ex.tasks:
            for job_id, result in job_results(run):
                if job_id not in tally.seen_jobs:
                    tally.seen_jobs.add(job_id)
                    tally.job_runs[result] += 1
            seconds = task_duration(run)
            if seconds is None or run.triggered.id in tally.seen_tasks:
                continue
            tally.seen_tasks.add(run.triggered.id)
            result = run.result or "fail"
            key = (run.name, result)
            hist = tally.task_durations.get(key)
            if hist is None:
                hist = tally.task_durations[key] = HistogramData(TASK_DURATION_BUCKETS)
            hist.observe(seconds)
            if run.name == "evaluation":
                tally.evaluations[result] += 1
        if ex.finished_event is not None:
            tally.closed.add(trigger_id)
            tally.sequences_finished[(ex.stage, ex.sequence, ex.result or "fail")] += 1
            for run in ex.tasks:  # never looked at again
                tally.seen_tasks.discard(run.triggered.id)
                for job_id, _ in job_results(run):
                    tally.seen_jobs.discard(job_id)
    # Forget ids the state itself forgot (compaction): they cannot come back.
    tally.closed &= state.executions.keys()
    tally.event_count = state.event_count
    return tally


class SavedTally(BaseModel):
    """A `Tally` as the engine-state checkpoint carries it (`TallyPart`), so counters continue
    from the whole ledger after a start that folded only the events after the checkpoint."""

    model_config = ConfigDict(extra="forbid")

    sequences_finished: list[tuple[str, str, str, int]]
    evaluations: dict[str, int]
    job_runs: dict[str, int]
    task_durations: list[tuple[str, str, list[int], float, int]]
    """(task, result, bucket counts, sum, count) with the buckets of TASK_DURATION_BUCKETS."""
    closed: list[str]
    seen_tasks: list[str]
    seen_jobs: list[str]
    event_count: int


def save_tally(tally: Tally) -> dict[str, Any]:
    return SavedTally(
        sequences_finished=[(*key, n) for key, n in tally.sequences_finished.items()],
        evaluations=dict(tally.evaluations),
        job_runs=dict(tally.job_runs),
        task_durations=[
            (task, result, list(h.counts), h.total, h.count)
            for (task, result), h in tally.task_durations.items()
        ],
        closed=sorted(tally.closed),
        seen_tasks=sorted(tally.seen_tasks),
        seen_jobs=sorted(tally.seen_jobs),
        event_count=tally.event_count,
    ).model_dump(mode="json")


def restore_tally(data: Any) -> Tally:
    """The tally saved by `save_tally`; ValueError when it is not one."""
    try:
        saved = SavedTally.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"counters: {' '.join(str(exc).split())[:160]}") from None
    durations: dict[tuple[str, str], HistogramData] = {}
    for task, result, counts, total, count in saved.task_durations:
        if len(counts) != len(TASK_DURATION_BUCKETS) + 1:
            raise ValueError(
                f"counters: {len(counts)} duration buckets, expected {len(TASK_DURATION_BUCKETS) + 1}"
            )
        durations[(task, result)] = HistogramData(TASK_DURATION_BUCKETS, list(counts), total, count)
    return Tally(
        sequences_finished=Counter({(a, b, c): n for a, b, c, n in saved.sequences_finished}),
        evaluations=Counter(saved.evaluations),
        job_runs=Counter(saved.job_runs),
        task_durations=durations,
        closed=set(saved.closed),
        seen_tasks=set(saved.seen_tasks),
        seen_jobs=set(saved.seen_jobs),
        event_count=saved.event_count,
    )


@dataclass(frozen=True)
class EngineGauges:
    """What is true right now, computed from state alone."""

    sequences: dict[str, int]
    queues: dict[tuple[str, str, str], int]


def is_queued(ex: Execution) -> bool:
    """Not started yet (waiting for its turn, or paused before it)."""
    return ex.active and ex.started_event is None


def gauges(state: EngineState, known_queues: Iterable[tuple[str, str, str]] = ()) -> EngineGauges:
    """Sequences by state, and queue length per project/stage/service (keys seen before stay, at 0)."""
    by_state: dict[str, int] = dict.fromkeys(SEQUENCE_STATES, 0)
    queues: dict[tuple[str, str, str], int] = dict.fromkeys(known_queues, 0)
    for ex in state.executions.values():
        display = ex.display_state
        by_state[display] = by_state.get(display, 0) + 1
        if ex.active:
            queues.setdefault(ex.key, 0)
            if is_queued(ex):
                queues[ex.key] += 1
    return EngineGauges(sequences=by_state, queues=queues)


@dataclass(frozen=True)
class EngineFigures:
    tally: Tally
    gauges: EngineGauges


class EngineCollector:
    """Exports the last published EngineFigures; nothing at all before the first (e.g. on a standby)."""

    def __init__(self) -> None:
        self._figures: EngineFigures | None = None
        self._lock = threading.Lock()

    def publish(self, figures: EngineFigures | None) -> None:
        with self._lock:
            self._figures = figures

    def describe(self) -> list[Metric]:
        return []  # figures appear only once published; no fixed description

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            figures = self._figures
        if figures is None:
            return
        yield from engine_metric_families(figures)


def _counts(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    help_key: str,
    labels: list[str],
    counts: Mapping[Any, int],
) -> Metric:
    """One family with a sample per key of `counts` (a label value, or a tuple of them), sorted."""
    out = family(name, _help(help_key), labels=labels)
    for key, n in sorted(counts.items()):
        out.add_metric(list(key) if isinstance(key, tuple) else [key], float(n))
    return out


def engine_metric_families(figures: EngineFigures) -> Iterator[Metric]:
    t, g = figures.tally, figures.gauges
    yield _counts(GaugeMetricFamily, "reconciler_sequences", "reconciler_sequences", ["state"], g.sequences)
    yield _counts(
        CounterMetricFamily,
        "reconciler_sequences_finished",
        "reconciler_sequences_finished_total",
        ["stage", "sequence", "result"],
        t.sequences_finished,
    )
    dur = HistogramMetricFamily(
        "reconciler_task_duration_seconds",
        _help("reconciler_task_duration_seconds"),
        labels=["task", "result"],
    )
    for (task, result), hist in sorted(t.task_durations.items()):
        dur.add_metric([task, result], buckets=hist.cumulative(), sum_value=hist.total)
    yield dur
    yield _counts(
        CounterMetricFamily,
        "reconciler_evaluations",
        "reconciler_evaluations_total",
        ["result"],
        t.evaluations,
    )
    yield _counts(
        CounterMetricFamily, "reconciler_job_runs", "reconciler_job_runs_total", ["result"], t.job_runs
    )
    yield _counts(
        GaugeMetricFamily,
        "reconciler_queue_length",
        "reconciler_queue_length",
        ["project", "stage", "service"],
        g.queues,
    )


# --------------------------------------------------------------------------------------------
# The registry and the process-level instruments
# --------------------------------------------------------------------------------------------


class Metrics:
    """Everything `/metrics` shows. One per app; wire it as described in deploy/README.md."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.engine = EngineCollector()
        self.registry.register(self.engine)
        self._tally = Tally()
        self._queues: set[tuple[str, str, str]] = set()
        self._engine_lock = threading.Lock()
        self.fetch_duration = Histogram(
            "reconciler_upstream_fetch_duration_seconds",
            _help("reconciler_upstream_fetch_duration_seconds"),
            buckets=FETCH_BUCKETS,
            registry=self.registry,
        )
        self.fetch_failures = PromCounter(
            "reconciler_upstream_fetch_failures",
            _help("reconciler_upstream_fetch_failures_total"),
            registry=self.registry,
        )
        self.fetch_last_success = Gauge(
            "reconciler_upstream_last_success_timestamp_seconds",
            _help("reconciler_upstream_last_success_timestamp_seconds"),
            registry=self.registry,
        )
        self.append_duration = Histogram(
            "reconciler_ledger_append_duration_seconds",
            _help("reconciler_ledger_append_duration_seconds"),
            buckets=APPEND_BUCKETS,
            registry=self.registry,
        )
        self.leader = Gauge("reconciler_leader", _help("reconciler_leader"), registry=self.registry)
        self.webhook_requests = PromCounter(
            "reconciler_webhook_requests",
            _help("reconciler_webhook_requests_total"),
            labelnames=["result"],
            registry=self.registry,
        )
        for result in WEBHOOK_RESULTS:
            self.webhook_requests.labels(result=result)
        self.webhook_duration = Histogram(
            "reconciler_webhook_request_duration_seconds",
            _help("reconciler_webhook_request_duration_seconds"),
            buckets=WEBHOOK_BUCKETS,
            registry=self.registry,
        )

    # -- ledger-derived ---------------------------------------------------------------------------

    def observe_engine(self, state: EngineState) -> None:
        """Publish figures for `state`. Call where state is consistent (the controller's on_cycle)."""
        with self._engine_lock:
            account(self._tally, state)
            now = gauges(state, self._queues)
            self._queues.update(now.queues)
            self.engine.publish(EngineFigures(self._tally.copy(), now))

    def forget_engine(self) -> None:
        """Stop exporting engine figures (this process stepped down: the new leader reports them)."""
        with self._engine_lock:
            self._tally = Tally()
            self._queues.clear()
            self.engine.publish(None)

    def on_cycle(self, controller: Any) -> None:
        """A `Controller.on_cycle` hook: `controller.on_cycle.append(metrics.on_cycle)`."""
        self.observe_engine(controller.state)

    def checkpoint_part(self) -> TallyPart:
        """The counters as a part of the engine-state checkpoint (`Controller.checkpoint_parts`)."""
        return TallyPart(self)

    # -- process-level ----------------------------------------------------------------------------

    def record_fetch(self, seconds: float, ok: bool, *, now: float | None = None) -> None:
        self.fetch_duration.observe(max(0.0, seconds))
        if ok:
            self.fetch_last_success.set(time.time() if now is None else now)
        else:
            self.fetch_failures.inc()

    @contextmanager
    def fetching(self) -> Iterator[None]:
        """`with metrics.fetching(): mirror.fetch()` — an exception counts as a failure and propagates."""
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.record_fetch(time.perf_counter() - start, ok=False)
            raise
        self.record_fetch(time.perf_counter() - start, ok=True)

    def timed_fetch(self, fetch: Callable[..., T]) -> Callable[..., T]:
        """Wrap the mirror's fetch: `mirror.fetch = metrics.timed_fetch(mirror.fetch)`."""

        def timed(*args: Any, **kwargs: Any) -> T:
            with self.fetching():
                return fetch(*args, **kwargs)

        return timed

    def record_webhook(self, result: str, seconds: float, retried: int = 0) -> None:
        """One webhook request sent (the webhook executor's observer): `result` is one of
        WEBHOOK_RESULTS, never anything from the request (no URL, no host)."""
        label = result if result in WEBHOOK_RESULTS else "failure"
        self.webhook_requests.labels(result=label).inc()
        if retried > 0:
            self.webhook_requests.labels(result="retried").inc(retried)
        self.webhook_duration.observe(max(0.0, seconds))

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1.0 if leading else 0.0)

    def timed_ledger(self, ledger: Any) -> TimedLedger:
        return TimedLedger(ledger, self.append_duration.observe)

    # -- exposition ---------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """(body, content type) for a `/metrics` response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TallyPart:
    """Saves the counters with the engine state they were counted from, and restores them
    before a start folds the events after it: the same ledger gives the same counts whether
    it was replayed in full, resumed from a checkpoint, or lived through."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def save(self, state: EngineState) -> dict[str, Any]:
        """Called under the control loop's lock with the state being saved."""
        m = self._metrics
        with m._engine_lock:
            account(m._tally, state)  # e.g. a stop right after the replay, before a cycle's hook
            return save_tally(m._tally)

    def restore(self, data: Any) -> None:
        tally = restore_tally(data)  # raises before anything is replaced
        with self._metrics._engine_lock:
            self._metrics._tally = tally


class TimedLedger:
    """The ledger with its appends timed; everything else passes through unchanged."""

    def __init__(self, ledger: Any, observe: Callable[[float], None]) -> None:
        self._ledger = ledger
        self._observe = observe

    def append(self, event: KeptnEvent) -> bool:
        start = time.perf_counter()
        try:
            return bool(self._ledger.append(event))
        finally:
            self._observe(time.perf_counter() - start)

    def extend(self, events: Sequence[KeptnEvent]) -> Any:
        start = time.perf_counter()
        try:
            return self._ledger.extend(events)
        finally:
            self._observe(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def __len__(self) -> int:
        return len(self._ledger)
