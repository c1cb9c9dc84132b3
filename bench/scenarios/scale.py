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
`BENCH_SCALE_ROUNDS=10` shows that; `BENCH_SCALE_CURVE=0` leaves the curve out; `BENCH_SCALE_TRACEMALLOC=<file>`
writes a tracemalloc diff between rounds and `BENCH_SCALE_TYPES=<file>` (cheaper) live types and the
containers that grew, with their owners, `bench/roundmem.py`; `BENCH_SCALE_CPROFILE=<file>` writes a cProfile of
the control loop's steps, timed by that thread's CPU, and slows them).

- engine overhead per task transition: from a task's `.finished` becoming a commit to the
  delivery's next event (the next task's `.triggered`, or the sequence's `.finished`)
  becoming one: the control loop waking, folding, deciding and appending. Baseline: the
  append of that next event alone (its share of the `extend` call). The same first with
  one delivery at a time (no queue behind 49 others), and a sampling profile of the
  control-loop thread during the 50 (`StackSampler`: where its time goes, in the notes);
  next to it, not instead of it, `LoopTimer`'s split of each transition into the queue (to the
  loop's first fold that began after the `.finished` commit) and the rest (fold, decide,
  record), the loop's lock wait and CPU per step (with and without `Ledger.extend`), and
  each thread's CPU;
- memory over time: VmRSS of this process every half second, from before `App.start` to
  the last delivery's end (the figure's samples, in order; `SAMPLE_EVERY` apart). This part
  runs first, so the process holds nothing of the curve's in-process apps.
"""

from __future__ import annotations

import bisect
import cProfile
import itertools
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.baselines import mirror_fetch_noop
from bench.harness import Budget, Derived, Figure, Result
from bench.inprocess import Appended, InstantExecutor, LedgerProbe, bench_settings, running_app
from bench.ledgergen import cached_count
from bench.memsteps import rss_mib
from bench.roundmem import RoundMemory
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
        self.samples = array("d")
        """Floats in an array: a list of them is a block each in the memory measured."""
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


class LoopTimer:
    """When the control loop's steps run and what each does, timed from outside (the real methods run):
    each `step` (entered, lock taken = its `refresh` began, left; events folded and recorded), and
    each `catch_up` that folded something (began, ended), on the control-loop thread only."""

    def __init__(self, app: Any) -> None:
        self.controller = app.controller
        self._steps = array("d")
        """Per step, flat: (entered, locked, left, folded, recorded, extend calls, the thread's CPU s,
        s in extend); flat floats, not a tuple per step, so the bench's own records add none of
        Python's blocks to the memory it measures (~6 a step, ~1,700 a round of 50 otherwise)."""
        self.extend_cpu = 0.0
        """The loop thread's CPU inside Ledger.extend (thread_time)."""
        self._folds = array("d")
        """(began, ended) of each fold, flat."""
        self._ident: int | None = None
        self._locked = 0.0
        self._extends = 0
        self._in_extend = 0.0
        self.profile: cProfile.Profile | None = (
            cProfile.Profile(timer=time.thread_time) if os.environ.get("BENCH_SCALE_CPROFILE") else None
        )

    @property
    def steps(self) -> list[tuple[float, float, float, int, int, int, float, float]]:
        """(entered, locked, left, folded, recorded, extend calls, the thread's CPU s, s in extend)"""
        f = self._steps
        return [
            (f[i], f[i + 1], f[i + 2], int(f[i + 3]), int(f[i + 4]), int(f[i + 5]), f[i + 6], f[i + 7])
            for i in range(0, len(f), 8)
        ]

    @property
    def folds(self) -> list[tuple[float, float]]:
        f = self._folds
        return [(f[i], f[i + 1]) for i in range(0, len(f), 2)]

    def install(self) -> None:
        ctl = self.controller
        step, catch_up, refresh, extend = ctl.step, ctl.catch_up, ctl.ledger.refresh, ctl.ledger.extend

        def timed_step() -> list[Any]:
            self._ident = threading.get_ident()
            entered, cursor, cpu = time.perf_counter(), ctl.cursor, time.thread_time()
            self._extends, self._in_extend = 0, 0.0
            if self.profile is not None:  # CPU of this thread only (thread_time), per function
                self.profile.enable()
            try:
                emitted = step()
            finally:
                if self.profile is not None:
                    self.profile.disable()
            left = time.perf_counter()
            self._steps.extend(
                (
                    entered,
                    self._locked,
                    left,
                    ctl.cursor - cursor,
                    len(emitted),
                    self._extends,
                    time.thread_time() - cpu,
                    self._in_extend,
                )
            )
            return emitted

        def timed_refresh() -> Any:
            if threading.get_ident() == self._ident:
                self._locked = time.perf_counter()
            return refresh()

        def counted_extend(events: Any) -> Any:
            if threading.get_ident() != self._ident:
                return extend(events)
            self._extends += 1
            began, cpu = time.perf_counter(), time.thread_time()
            try:
                return extend(events)
            finally:
                self._in_extend += time.perf_counter() - began
                self.extend_cpu += time.thread_time() - cpu

        def timed_catch_up() -> int:
            began = time.perf_counter()
            n = catch_up()
            if n and threading.get_ident() == self._ident:
                self._folds.extend((began, time.perf_counter()))
            return n

        ctl.step, ctl.catch_up = timed_step, timed_catch_up  # type: ignore[method-assign]
        ctl.ledger.refresh, ctl.ledger.extend = timed_refresh, counted_extend

    def split(self, seen: list[Appended]) -> tuple[list[float], list[float]]:
        """Each transition as (queue ms, engine ms): from the `.finished` commit to the control loop's
        first fold that began after it (waking, waiting for the lock, the rest of a step under way),
        then from that fold to the next event's commit (folding, deciding, recording that step's
        whole batch)."""
        starts = [b for b, _ in self.folds]
        queue: list[float] = []
        engine: list[float] = []
        for finished, after in transition_pairs(seen):
            k = bisect.bisect_right(starts, finished.at)
            if k < len(starts) and starts[k] <= after.at:
                queue.append((starts[k] - finished.at) * 1000)
                engine.append((after.at - starts[k]) * 1000)
        return queue, engine


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process's threads, by name without its worker number
    (/proc/self/task/<tid>/stat), so the control loop's share shows next to the executors'."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: Counter[str] = Counter()
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), "(other)")
        group = name.rstrip("0123456789").rstrip("_-") or name
        out[group] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def transition_pairs(seen: list[Appended]) -> list[tuple[Appended, Appended]]:
    """Each task's `.finished` with its delivery's next `.triggered` or the delivery's `.finished`."""
    pairs: list[tuple[Appended, Appended]] = []
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
                pairs.append((seen[i], after))
    return pairs


def transitions_of(seen: list[Appended]) -> tuple[list[float], list[float]]:
    """(transition ms, append-of-the-next-event ms): from each task's `.finished` commit to its
    delivery's next `.triggered` or the delivery's `.finished`."""
    pairs = transition_pairs(seen)
    return [(a.at - f.at) * 1000 for f, a in pairs], [a.seconds * 1000 for _, a in pairs]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_finished(probe: LedgerProbe, mark: int, count: int, limit: float) -> set[str]:
    """The contexts of the first `count` deliveries finished after `mark`, waiting up to `limit` s
    (scanning each recorded event once: this thread shares the CPU with what it measures)."""
    finished: set[str] = set()
    deadline = time.monotonic() + limit
    position = mark
    while len(finished) < count and time.monotonic() < deadline:
        new = probe.wait_beyond(position, min(5.0, max(0.0, deadline - time.monotonic())))
        position += len(new)
        finished.update(item.event.shkeptncontext for item in new if item.event.type == DONE)
    return finished


def _growth(values: Sequence[float]) -> float | None:
    """Least-squares slope per round over the second half of the rounds (after the first
    half has filled what is bounded: the compacted states, the caches), or None if too few."""
    tail = values[len(values) // 2 :]
    if len(tail) < 3:
        return None
    return statistics.linear_regression(range(len(tail)), tail).slope


def _growth_figures(
    res: Result, series: dict[str, tuple[Sequence[float], str]], events_per_round: float
) -> None:
    """Bounded or not, as a number: what each per-round figure still gains a round in the
    second half, and per 1,000 events recorded (the ledger's catalog is O(events) by design)."""
    for name, (values, unit) in series.items():
        slope = _growth(values)
        if slope is None:
            continue
        per_k = slope / events_per_round * 1000 if events_per_round else 0.0
        res.derived.append(
            Derived(
                f"{name}: growth a round, second half",
                slope,
                f"{unit} a round; {per_k:.3g} {unit} per 1,000 events recorded",
            )
        )


def _round_memory_figures(res: Result, memory: RoundMemory, parallel: int) -> None:
    """Next to RSS after each round: the C allocator's bytes in use and Python's live blocks."""
    res.add(
        Figure(
            f"malloc in use after each round of {parallel}",
            "MiB",
            memory.malloc,
            note="glibc mallinfo2 uordblks + hblkhd: libgit2, pygit2, Python objects over 512 bytes",
        )
    )
    res.add(Figure(f"malloc free, kept, after each round of {parallel}", "MiB", memory.malloc_free))
    res.add(Figure(f"Python blocks after each round of {parallel}", "blocks", memory.blocks))
    res.add(Figure(f"RSS anonymous after each round of {parallel}", "MiB", memory.rss_anon))
    res.add(
        Figure(
            f"RSS file-backed after each round of {parallel}",
            "MiB",
            memory.rss_file,
            note="mapped files: libgit2's pack windows and indexes (capped), the interpreter's libraries",
        )
    )
    if memory.traced:
        res.add(Figure(f"tracemalloc traced after each round of {parallel}", "MiB", memory.traced))


def _deliveries(res: Result, budget: Budget, root: Path) -> None:
    services = budget.pick(10_000, 200)
    parallel = budget.pick(50, 5)
    rounds = budget.pick(int(os.environ.get("BENCH_SCALE_ROUNDS", "4")), 2)
    began = time.perf_counter()
    up = scale_upstream(root / "scale.git", services)
    budget.log(
        f"  {services:,}-service upstream (values.yaml each) built in {time.perf_counter() - began:.1f} s"
    )
    probe = LedgerProbe(keep_events=False)  # what it keeps is not counted as the reconciler's memory
    memory = RoundMemory()
    settings = bench_settings(
        upstream=str(up.path),
        data_dir=root / "scale-data",
        watch=False,
        poll_interval=3600,
        local_commands=["true"],
    )
    alone: list[float] = []
    alone_appends: list[float] = []
    memory.start()
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
            timer = LoopTimer(app)
            timer.install()
            with StackSampler(loop) as stacks:
                cpu0, children0, threads0 = time.process_time(), _children_cpu(), thread_cpu()
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
                    memory.after_round(r + 1)
                cpu, children = time.process_time() - cpu0, _children_cpu() - children0
                threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu().items()}
            peak_during = max(sampler.samples[rss_mark:], default=rss_mib())
            seen = probe.seen[mark:]  # a list already, for a list or a SeenLog
    memory.finish()
    _round_memory_figures(res, memory, parallel)
    _growth_figures(
        res,
        {
            "RSS": (after_round, "MiB"),
            "RSS anonymous": (memory.rss_anon, "MiB"),
            "malloc in use": (memory.malloc, "MiB"),
            "Python blocks": (memory.blocks, "blocks"),
        },
        len(seen) / max(1, rounds),
    )
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
    queue, engine = timer.split(seen)
    res.add(
        Figure(
            "transition: .finished commit -> the loop's fold",
            "ms",
            queue,
            note="the queue: waking, the lock, the rest of a step under way",
        )
    )
    res.add(
        Figure(
            "transition: the loop's fold -> next event's commit",
            "ms",
            engine,
            note="the engine's own part: fold, decide, record (the step's whole batch)",
        )
    )
    busy = [s for s in timer.steps if s[3] or s[4]]
    res.add(
        Figure(
            "control-loop CPU per transition",
            "ms",
            [1000 * sum(s[6] for s in timer.steps) / max(1, len(transitions))],
            note="the loop thread's CPU in steps (thread_time, ledger writes included) / transitions",
        )
    )
    res.add(
        Figure(
            "control-loop CPU per transition, Ledger.extend left out",
            "ms",
            [1000 * (sum(s[6] for s in timer.steps) - timer.extend_cpu) / max(1, len(transitions))],
            note="the engine's own share: folding, deciding, dispatching, hooks",
        )
    )
    res.add(
        Figure(
            "control-loop step (lock taken -> done)",
            "ms",
            [(s[2] - s[1]) * 1000 for s in busy],
            note=f"{len(busy)} steps that folded or recorded something, of {len(timer.steps)}",
        )
    )
    res.add(Figure("lock wait per step", "ms", [(s[1] - s[0]) * 1000 for s in busy]))
    res.add(Figure("events folded per step", "events", [float(s[3]) for s in busy]))
    res.add(
        Figure(
            "events recorded per step",
            "events",
            [float(s[4]) for s in busy],
            note=f"in {sum(s[5] for s in busy)} extend calls",
        )
    )
    if timer.profile is not None:  # BENCH_SCALE_CPROFILE=<file>: the loop's steps, CPU per function
        timer.profile.dump_stats(os.environ["BENCH_SCALE_CPROFILE"])
    steps_wall = sum(s[2] - s[0] for s in timer.steps)
    locked_wait = sum(s[1] - s[0] for s in timer.steps)
    in_extend = sum(s[7] for s in timer.steps)
    step_cpu = sum(s[6] for s in timer.steps)
    res.notes.append(
        f"the control loop during the {rounds} x {parallel} deliveries ({sum(elapsed):.1f} s): {len(timer.steps)} "
        f"steps, {steps_wall:.1f} s in them: {locked_wait:.1f} s waiting for its step lock (a checkpoint "
        f"save; executors take the start guard instead), {in_extend:.1f} s in Ledger.extend, the rest folding, deciding, dispatching; its CPU in "
        f"steps {step_cpu:.1f} s (the rest of the wall: waiting for a core, the GIL, the ledger's own lock)"
    )
    res.notes.append(
        f"threads' CPU during the {rounds} x {parallel} deliveries ({sum(elapsed):.1f} s wall): "
        + ", ".join(f"{name} {sec:.1f} s" for name, sec in sorted(threads.items(), key=lambda kv: -kv[1]))
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
            list(sampler.samples),
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
