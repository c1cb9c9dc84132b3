"""Scale: the curve at 100, 1,000 and 10,000 services, and 50 deliveries at once on 10,000.

The curve (each size: the tutorial's files per service on 2 stages, as in `poll` and `memory`):

- idle RSS of `reconciler run --runner local` (a subprocess, ledger push off) on a data
  directory holding a copy of the 100,000-event ledger, once it is running and its RSS
  has stopped moving, and its start-up time; then its start-up again on the data directory
  it left (the catalog checkpoint, the mirror); baseline: `python -c 'import reconciler.app'`;
- a poll without change, in-process (`App` on a fresh data directory, the bench calling
  `Poller.poll_once()`), against libgit2's no-op fetch (`Mirror.fetch`) of the same upstream.

The scenario: 10,000 services (a `values.yaml` each) on `qa`, whose delivery is three tasks
answered by no-op jobs (`true`, the only command on the local runner's allow-list,
`local_commands`), the real local runner and job executor, the whole reconciler in-process.
One commit changes 50 services' `values.yaml`; one poll starts 50 deliveries at once; four
such rounds, one after the other (RSS after each: flat if memory is bounded; the engine
forgets all but the newest 100 finished executions every 5,000 events, ~385 deliveries, so
`BENCH_SCALE_ROUNDS=10` shows that; `BENCH_SCALE_CURVE=0` leaves the curve out).

- engine overhead per task transition: from a task's `.finished` becoming a commit to the
  delivery's next event (the next task's `.triggered`, or the sequence's `.finished`)
  becoming one: the control loop waking, folding, deciding and appending. Baseline: the
  append of that next event alone (its share of the `extend` call). The same first with
  one delivery at a time (no queue behind 49 others), and a sampling profile of the
  control-loop thread during the 50 (`StackSampler`: where its time goes, in the notes);
- memory over time: VmRSS of this process every half second, from before `App.start` to
  the last delivery's end (the figure's samples, in order; `SAMPLE_EVERY` apart). This part
  runs first, so the process holds nothing of the curve's in-process apps.
"""

from __future__ import annotations

import itertools
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import yaml

from bench.baselines import mirror_fetch_noop
from bench.harness import Budget, Derived, Figure, Result
from bench.inprocess import Appended, InstantExecutor, LedgerProbe, bench_settings, running_app
from bench.ledgergen import cached_count
from bench.memsteps import rss_mib
from bench.scenarios.memory import BASE, _idle_run, baseline_rss, served_ledger
from bench.upstreamgen import BareUpstream, build_upstream, service_name

TITLE = "Scale: idle RSS and no-change poll at 100, 1,000 and 10,000 services; 50 deliveries at once"
SAMPLE_EVERY = 0.5
PROFILE_EVERY = 0.005
DONE = "sh.keptn.event.qa.delivery.finished"
TASKS = ("deploy", "test", "release")
FETCH = "Mirror.fetch no-op (libgit2)"


def curve_sizes(quick: bool) -> list[int]:
    return [20, 100] if quick else [100, 1000, 10_000]


def shipyard() -> bytes:
    tasks = "".join(f"            - name: {t}\n" for t in TASKS)
    return (
        "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata: {name: scale}\nspec:\n  stages:\n"
        "    - name: qa\n      sequences:\n        - name: delivery\n          tasks:\n" + tasks
    ).encode()


def job_config() -> bytes:
    """Every task of the delivery answered by a job that does nothing (`true`)."""
    action = {
        "name": "no-op",
        "events": [{"name": f"sh.keptn.event.{t}.triggered"} for t in TASKS],
        "tasks": [{"name": "nothing", "image": "alpine:3", "cmd": ["true"], "maxPollDuration": 60}],
    }
    return yaml.safe_dump({"apiVersion": "v2", "actions": [action]}).encode()


def scale_upstream(path: Path, services: int) -> BareUpstream:
    up = BareUpstream(path)
    up.commit("main", {"shipyard.yaml": shipyard(), "metadata.yaml": b"projectName: scale\n"}, "shipyard")
    files = {"job/config.yaml": job_config()}
    files.update({f"{service_name(n)}/values.yaml": b"image: web:1.0\n" for n in range(services)})
    up.commit("qa", files, f"qa: {services} services")
    return up


class RssSampler:
    """VmRSS of this process every SAMPLE_EVERY seconds, on a thread, until stopped."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mib())
            self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _curve(res: Result, budget: Budget, root: Path) -> None:
    sizes = curve_sizes(budget.quick)
    events = budget.pick(100_000, 1_000)
    source = served_ledger(events, budget.log)
    events = cached_count(source)
    res.add(Figure(BASE, "MiB", baseline_rss(budget.pick(6, 2))))
    idle: dict[int, float] = {}
    for services in sizes:
        began = time.perf_counter()
        up = build_upstream(root / f"upstream-{services}.git", services)
        budget.log(f"  {services:,} services x 2 stages built in {time.perf_counter() - began:.1f} s")
        (root / f"run-{services}").mkdir()
        run = _idle_run(up, source, root / f"run-{services}", events, budget.pick(6, 2), push="never")
        idle[services] = statistics.median(run.rss)
        res.add(
            Figure(
                f"RSS idle @{services:,} services",
                "MiB",
                run.rss,
                baseline=BASE,
                note=f"reconciler run, {events:,}-event ledger, push off; peak (VmHWM) {run.peak:.0f} MiB",
            )
        )
        res.add(Figure(f"start-up to running @{services:,} services", "s", [run.startup]))
        again = _idle_run(up, source, root / f"run-{services}", events, 1, push="never", restart=True)
        res.add(
            Figure(
                f"start-up to running, restart @{services:,} services",
                "s",
                [again.startup],
                note=f"the same data dir again (catalog checkpoint, mirror); idle RSS {again.rss[0]:.0f} MiB",
            )
        )
        fetch = f"{FETCH} @{services:,}"
        (root / f"f-{services}").mkdir()
        res.add(
            Figure(fetch, "ms", [s * 1000 for s in mirror_fetch_noop(up.path, root / f"f-{services}", 10)])
        )
        settings = bench_settings(
            upstream=str(up.path), data_dir=root / f"poll-{services}", watch=False, poll_interval=3600
        )
        with running_app(settings, [InstantExecutor()]) as app:
            deadline = time.monotonic() + 60
            while app.poller.health().polls < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # the scheduler's immediate poll after start
            polls: list[float] = []
            for _ in range(budget.pick(10, 3)):
                t0 = time.perf_counter()
                changes = app.poller.poll_once()
                polls.append((time.perf_counter() - t0) * 1000)
                if changes is None or changes.branches:
                    raise RuntimeError("a poll without upstream change reported changes (or failed)")
        res.add(Figure(f"poll, no change @{services:,}", "ms", polls, baseline=fetch))
        up.repo.free()
    for small, large in itertools.pairwise(sizes):
        res.derived.append(
            Derived(
                f"RSS per service {small:,} -> {large:,}",
                (idle[large] - idle[small]) * 1024 / (large - small),
                "KiB per service (2 stages, the tutorial's files)",
            )
        )


class StackSampler:
    """Where one thread's time goes: its stack every PROFILE_EVERY seconds (`sys._current_frames`),
    counted by the innermost frame in reconciler/ and by whether `Ledger.extend` is on it. A
    sampling profile, unlike cProfile, leaves the figures it runs beside nearly untouched."""

    def __init__(self, thread: threading.Thread) -> None:
        self.ident = thread.ident
        self.samples = 0
        self.where: Counter[str] = Counter()
        self.in_extend = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-stacks", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(PROFILE_EVERY):
            frame = sys._current_frames().get(self.ident or -1)
            if frame is None:
                continue
            self.samples += 1
            innermost: str | None = None
            extend = False
            while frame is not None:
                code = frame.f_code
                if "/reconciler/" in code.co_filename:
                    if innermost is None:
                        module = code.co_filename.rsplit("/reconciler/", 1)[1].removesuffix(".py")
                        innermost = f"{module}:{code.co_name}"
                    extend = extend or (
                        code.co_name == "extend" and code.co_filename.endswith("gitledger.py")
                    )
                frame = frame.f_back
            self.where[innermost or "(outside reconciler/)"] += 1
            self.in_extend += extend

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self, top: int = 8) -> str:
        if not self.samples:
            return "no samples"
        parts = [f"{100 * n / self.samples:.0f} % {name}" for name, n in self.where.most_common(top)]
        return (
            f"{self.samples} samples every {PROFILE_EVERY * 1000:.0f} ms; Ledger.extend on the stack in "
            f"{100 * self.in_extend / self.samples:.0f} %; innermost reconciler frame: " + ", ".join(parts)
        )


def transitions_of(seen: list[Appended]) -> tuple[list[float], list[float]]:
    """(transition ms, append-of-the-next-event ms): from each task's `.finished` commit to its
    delivery's next `.triggered` or the delivery's `.finished`."""
    transitions: list[float] = []
    appends: list[float] = []
    by_context: dict[str, list[int]] = {}
    for i, item in enumerate(seen):
        by_context.setdefault(item.event.shkeptncontext, []).append(i)
    finished = {f"sh.keptn.event.{t}.finished" for t in TASKS}
    for positions in by_context.values():
        for n, i in enumerate(positions):
            if seen[i].event.type not in finished:
                continue
            after = next(
                (
                    seen[j]
                    for j in positions[n + 1 :]
                    if seen[j].event.type.endswith(".triggered") or seen[j].event.type == DONE
                ),
                None,
            )
            if after is not None:
                transitions.append((after.at - seen[i].at) * 1000)
                appends.append(after.seconds * 1000)
    return transitions, appends


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_finished(probe: LedgerProbe, mark: int, count: int, limit: float) -> set[str]:
    """The contexts of the first `count` deliveries finished after `mark`, waiting up to `limit` s."""
    finished: set[str] = set()
    deadline = time.monotonic() + limit
    while len(finished) < count and time.monotonic() < deadline:
        item = probe.wait_for(lambda e: e.type == DONE and e.shkeptncontext not in finished, 5, mark)
        if item is not None:
            finished.add(item.event.shkeptncontext)
    return finished


def _deliveries(res: Result, budget: Budget, root: Path) -> None:
    services = budget.pick(10_000, 200)
    parallel = budget.pick(50, 5)
    rounds = budget.pick(int(os.environ.get("BENCH_SCALE_ROUNDS", "4")), 2)
    began = time.perf_counter()
    up = scale_upstream(root / "scale.git", services)
    budget.log(
        f"  {services:,}-service upstream (values.yaml each) built in {time.perf_counter() - began:.1f} s"
    )
    probe = LedgerProbe()
    settings = bench_settings(
        upstream=str(up.path),
        data_dir=root / "scale-data",
        watch=False,
        poll_interval=3600,
        local_commands=["true"],
    )
    alone: list[float] = []
    alone_appends: list[float] = []
    with RssSampler() as sampler:
        before = rss_mib()
        t_start = time.perf_counter()
        with running_app(settings, probes=(probe,)) as app:
            started = time.perf_counter() - t_start
            deadline = time.monotonic() + 120
            while app.poller.health().polls < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            idle = rss_mib()
            # one delivery at a time first: the transition without 49 others in the queue
            for k in range(budget.pick(5, 2)):
                service = service_name(services - 1 - k)
                up.commit("qa", {f"{service}/values.yaml": b"image: web:1.1\n"}, f"{service} alone")
                mark = len(probe)
                app.poller.poll_once()
                if len(_wait_finished(probe, mark, 1, 60)) < 1:
                    raise RuntimeError(f"the delivery of {service} alone did not finish within 60 s")
                t, a = transitions_of(list(probe.seen[mark:]))
                alone += t
                alone_appends += a
            loop = next(t for t in threading.enumerate() if t.name == "bench-control-loop")
            mark = len(probe)
            rss_mark = len(sampler.samples)
            elapsed: list[float] = []
            round_ends: list[float] = []
            after_round: list[float] = []
            with StackSampler(loop) as stacks:
                cpu0, children0 = time.process_time(), _children_cpu()
                for r in range(rounds):
                    step = max(1, services // parallel)
                    chosen = [service_name(n + r) for n in range(0, services, step)][:parallel]
                    image = f"image: web:2.{r}\n".encode()
                    up.commit(
                        "qa", {f"{s}/values.yaml": image for s in chosen}, f"round {r}: {parallel} services"
                    )
                    round_mark = len(probe)
                    t0 = time.perf_counter()
                    changes = app.poller.poll_once()
                    if changes is None or sorted(changes.branches[0].services) != sorted(chosen):
                        raise RuntimeError(f"expected {parallel} changed services, got {changes}")
                    finished = _wait_finished(probe, round_mark, parallel, 600)
                    elapsed.append(time.perf_counter() - t0)
                    if len(finished) < parallel:
                        raise RuntimeError(
                            f"only {len(finished)} of {parallel} deliveries finished within 600 s"
                        )
                    round_ends.append(len(sampler.samples) * SAMPLE_EVERY)
                    after_round.append(rss_mib())
                cpu, children = time.process_time() - cpu0, _children_cpu() - children0
            peak_during = max(sampler.samples[rss_mark:] or [rss_mib()])
            seen = list(probe.seen[mark:])
    transitions, appends = transitions_of(seen)
    res.add(Figure("append of the next event", "ms", appends, note="its share of the extend call"))
    res.add(
        Figure(
            "engine overhead per task transition",
            "ms",
            transitions,
            baseline="append of the next event",
            note=f"{parallel} deliveries of {len(TASKS)} no-op jobs at once, {services:,} services, local runner",
        )
    )
    res.add(Figure("append of the next event, one delivery alone", "ms", alone_appends))
    res.add(
        Figure(
            "task transition, one delivery alone",
            "ms",
            alone,
            baseline="append of the next event, one delivery alone",
            note=f"the same deliveries one at a time, {services:,} services",
        )
    )
    res.add(
        Figure(
            f"{parallel} deliveries, commit polled -> all finished",
            "s",
            elapsed,
            note=f"{rounds} rounds, {len(seen):,} events recorded; job_workers {settings.job_workers}",
        )
    )
    res.add(
        Figure(f"RSS after each round of {parallel}", "MiB", after_round, note="in order: bounded if flat")
    )
    res.add(Figure("round ends", "s", round_ends, note="seconds into 'RSS over the scenario'"))
    res.notes.append(f"control loop during the {rounds} x {parallel} deliveries: {stacks.summary()}")
    res.notes.append(
        f"CPU during the {rounds} x {parallel} deliveries ({sum(elapsed):.1f} s): the reconciler's process "
        f"{cpu:.1f} s (all its threads), the jobs {children:.1f} s; load average {os.getloadavg()[0]:.2f}"
    )
    res.add(Figure("RSS before App.start (the bench process)", "MiB", [before]))
    res.add(
        Figure(f"RSS idle, {services:,} services served", "MiB", [idle], note=f"start-up {started:.1f} s")
    )
    res.add(Figure(f"RSS peak with {parallel} deliveries in flight", "MiB", [peak_during]))
    res.add(
        Figure(
            "RSS over the scenario",
            "MiB",
            sampler.samples,
            note=f"every {SAMPLE_EVERY} s from before App.start to the last delivery's end",
        )
    )
    up.repo.free()


def run(budget: Budget) -> Result:
    res = Result("scale", TITLE)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        _deliveries(res, budget, root)  # first: this process's RSS is the figure, before the curve's apps
        if os.environ.get("BENCH_SCALE_CURVE", "1") != "0":
            _curve(res, budget, root)
    return res
