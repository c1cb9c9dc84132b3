"""Commit to trigger: from a commit on a stage branch to the delivery's `.triggered` in the ledger.

The tutorial upstream (one service) is a local bare repository; the whole
reconciler runs in-process (`App`) with an executor that answers every task at
once, so each delivery runs to its end (qa, then production) before the next
commit. Each commit changes `svc0000/values.yaml` on `qa` (commit-to-deploy).
The clock starts when the commit's ref update returns and stops when the
`sh.keptn.event.qa.delivery.triggered` pinned to that commit has been appended.

- watch: the local upstream is watched (inotify), so a commit starts a poll.
- poll: watching off, `poll_interval` 1 s, no jitter; commits land at a random
  phase of the interval. Reported without the wait for the poll: latency minus
  (start of the fetch that saw the commit - commit); the wait is a figure of its own.
- baseline: a no-op `git fetch` of the same upstream (git CLI), and the same with
  libgit2 (`Mirror.fetch`, what a poll starts with).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from bench.baselines import git_fetch_noop, mirror_fetch_noop
from bench.harness import Budget, Clock, Figure, Result
from bench.inprocess import FetchProbe, InstantExecutor, LedgerProbe, bench_settings, running_app
from bench.upstreamgen import BareUpstream, build_upstream, service_name

TITLE = "Commit to trigger (watch and poll) vs a no-op git fetch of the same upstream"
DELIVERY = "sh.keptn.event.qa.delivery.triggered"
CHAIN_DONE = "sh.keptn.event.production.delivery.finished"
SERVICE = service_name(0)


def _measure(
    up: BareUpstream,
    data: Path,
    *,
    watch: bool,
    interval: float,
    commits: int,
    clock: Clock,
    rng: random.Random,
    first_version: int,
) -> tuple[list[float], list[float]]:
    """(latencies, waits for the poll) in seconds, one per commit."""
    probe, fetches = LedgerProbe(), FetchProbe()
    settings = bench_settings(upstream=str(up.path), data_dir=data, watch=watch, poll_interval=interval)
    latencies: list[float] = []
    waits: list[float] = []
    with running_app(settings, [InstantExecutor()], probes=(probe, fetches)):
        for n in range(commits):
            # a random phase of the poll cycle (and, watching, a quiet moment before each commit)
            time.sleep(rng.uniform(0.0, interval) if not watch else rng.uniform(0.05, 0.15))
            start = len(probe)
            version = first_version + n
            sha = up.commit(
                "qa",
                {f"{SERVICE}/values.yaml": f"image: ghcr.io/example/{SERVICE}:v2.{version}\n".encode()},
                f"deploy v2.{version}",
            )
            committed = time.perf_counter()
            seen = probe.wait_for(
                lambda e, sha=sha: e.type == DELIVERY and e.gitcommitid == sha,  # type: ignore[misc]
                timeout=interval + 30.0,
                start=start,
            )
            if seen is None:
                raise RuntimeError(f"no {DELIVERY} for commit {sha[:12]} within {interval + 30:.0f} s")
            latency = seen.at - committed
            fetch_start = fetches.first_after(committed)
            wait = (fetch_start - committed) if (fetch_start is not None and not watch) else 0.0
            latencies.append(latency - wait)
            waits.append(wait)
            context = seen.event.shkeptncontext
            done = probe.wait_for(
                lambda e, c=context: e.type == CHAIN_DONE and e.shkeptncontext == c,  # type: ignore[misc]
                timeout=30.0,
                start=start,
            )
            if done is None:
                raise RuntimeError(f"delivery of {sha[:12]} did not finish within 30 s")
            if not clock.left():
                break
    return latencies, waits


def run(budget: Budget) -> Result:
    res = Result("trigger", TITLE)
    clock = Clock(budget.deadline)
    commits = budget.pick(50, 5)
    interval = budget.pick(1, 1) * 1.0
    rng = random.Random(10)
    with tempfile.TemporaryDirectory(prefix="bench-trigger-") as tmp:
        root = Path(tmp)
        up = build_upstream(root / "upstream.git", 1)
        fetch_runs = budget.pick(30, 5)
        res.add(
            Figure(
                "git fetch no-op (CLI)", "ms", [s * 1000 for s in git_fetch_noop(up.path, root, fetch_runs)]
            )
        )
        res.add(
            Figure(
                "Mirror.fetch no-op (libgit2)",
                "ms",
                [s * 1000 for s in mirror_fetch_noop(up.path, root, fetch_runs)],
                baseline="git fetch no-op (CLI)",
            )
        )
        watched, _ = _measure(
            up,
            root / "data-watch",
            watch=True,
            interval=30.0,
            commits=commits,
            clock=clock,
            rng=rng,
            first_version=0,
        )
        res.add(
            Figure(
                "watch: commit -> .triggered",
                "ms",
                [s * 1000 for s in watched],
                baseline="git fetch no-op (CLI)",
                note="inotify on refs, 50 ms debounce",
            )
        )
        if clock.left():
            polled, waits = _measure(
                up,
                root / "data-poll",
                watch=False,
                interval=interval,
                commits=commits,
                clock=clock,
                rng=rng,
                first_version=10_000,
            )
            res.add(
                Figure(
                    "poll: commit -> .triggered minus wait",
                    "ms",
                    [s * 1000 for s in polled],
                    baseline="git fetch no-op (CLI)",
                    note=f"poll_interval {interval:g} s, no jitter",
                )
            )
            res.add(
                Figure(
                    "poll: wait for the next poll",
                    "ms",
                    [s * 1000 for s in waits],
                    note=f"uniform in [0, {interval:g} s] when commits land at random",
                )
            )
    res.notes.append(
        "each commit's delivery (qa and production, instant executor) finishes before the next commit"
    )
    return res
