"""Poll cost at scale: an upstream of 1,000 services on 2 stages (the tutorial's files each).

The whole reconciler runs in-process (`App`, watching off, the scheduled poll an
hour away) and the bench calls `Poller.poll_once()` itself, as the schedule would:

- no change: fetch, compare tips with the recorded baseline, nothing to decide;
- one service changed: one commit changing `svc0421/slo.yaml` on `qa` (a
  threshold), then a poll: fetch, tree diff, validation of the upstream with the
  changed branch, the `reconciler.upstream.accepted` record appended, the served
  snapshot rebuilt;
- the first poll of a fresh data directory (start-up: clone and validate all).

Baseline: a no-op `git fetch` of the same upstream (git CLI); libgit2's no-op
fetch (`Mirror.fetch`) is shown too. `BENCH_POLL_SERVICES=10000` measures the same at
another size (the figures' names stay; the note says the size).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.baselines import git_fetch_noop, mirror_fetch_noop
from bench.harness import Budget, Clock, Figure, Result
from bench.inprocess import InstantExecutor, LedgerProbe, bench_settings, running_app
from bench.upstreamgen import build_upstream, service_name, tutorial_service_files

TITLE = "Poll cost with 1,000 services (BENCH_POLL_SERVICES) on 2 stages: no change, one service changed, first poll"
BASE = "git fetch no-op (CLI)"


def run(budget: Budget) -> Result:
    res = Result("poll", TITLE)
    clock = Clock(budget.deadline)
    services = budget.pick(int(os.environ.get("BENCH_POLL_SERVICES", "1000")), 50)
    runs = budget.pick(10, 3)
    changed_runs = budget.pick(7, 2)
    with tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        up = build_upstream(root / "upstream.git", services)
        budget.log(f"  built a {services}-service upstream in {time.perf_counter() - began:.1f} s")
        res.add(Figure(BASE, "ms", [s * 1000 for s in git_fetch_noop(up.path, root, runs)]))
        res.add(
            Figure(
                "Mirror.fetch no-op (libgit2)",
                "ms",
                [s * 1000 for s in mirror_fetch_noop(up.path, root, runs)],
                baseline=BASE,
            )
        )
        first: list[float] = []
        for n in range(budget.pick(2, 1)):
            settings = bench_settings(
                upstream=str(up.path), data_dir=root / f"data-first-{n}", watch=False, poll_interval=3600
            )
            began = time.perf_counter()
            with running_app(settings, [InstantExecutor()], loop=False) as app:
                first.append(time.perf_counter() - began)
                if not app.store.current().ready:
                    raise RuntimeError("the generated upstream was not accepted")
            if not clock.left():
                break
        res.add(
            Figure(
                "first poll (App.start on a fresh data dir)",
                "ms",
                [s * 1000 for s in first],
                baseline=BASE,
                note="includes clone, validation of every file, records",
            )
        )
        probe = LedgerProbe()
        settings = bench_settings(
            upstream=str(up.path), data_dir=root / "data", watch=False, poll_interval=3600
        )
        with running_app(settings, [InstantExecutor()], probes=(probe,)) as app:
            deadline = time.monotonic() + 30
            while app.poller.health().polls < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # the scheduler's immediate poll after start
            unchanged: list[float] = []
            for _ in range(runs):
                began = time.perf_counter()
                changes = app.poller.poll_once()
                unchanged.append(time.perf_counter() - began)
                if changes is None or changes.branches:
                    raise RuntimeError("a poll without upstream change reported changes (or failed)")
            res.add(Figure("poll, no change", "ms", [s * 1000 for s in unchanged], baseline=BASE))
            service = service_name(min(421, services - 1))
            slo = tutorial_service_files("qa")["slo.yaml"]
            changed: list[float] = []
            for n in range(changed_runs):
                text = slo.replace(b'"<=30"', f'"<={31 + n}"'.encode())
                if text == slo:
                    raise RuntimeError("the tutorial slo.yaml changed: the bench's edit no longer applies")
                sha = up.commit("qa", {f"{service}/slo.yaml": text}, f"{service}: go_routines <= {31 + n}")
                before = len(probe)
                began = time.perf_counter()
                changes = app.poller.poll_once()
                changed.append(time.perf_counter() - began)
                if changes is None or [c.services for c in changes.branches] != [[service]]:
                    raise RuntimeError(f"expected one changed service, got {changes}")
                if app.store.current().commit("qa") != sha or len(probe) <= before:
                    raise RuntimeError("the changed commit was not accepted")
                if not clock.left():
                    break
            res.add(
                Figure(
                    "poll, one service changed",
                    "ms",
                    [s * 1000 for s in changed],
                    baseline=BASE,
                    note="validation with the changed branch, accepted record appended",
                )
            )
    res.notes.append(
        f"{services} services x 2 stages, {len(tutorial_service_files('qa'))} files per service on qa"
    )
    return res
