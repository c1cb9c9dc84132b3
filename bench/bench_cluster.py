"""Cluster figures: leader hand-over times, Lease traffic, and the cost of the engine metrics.

    python bench/bench_cluster.py [--lease 15 --renew 10 --retry 2] [--sequences 2000]

Hand-over: two LeaseElectors (official client) against the kmock API double with
resourceVersion semantics (tests/support/kube_leases.py); the leader is stopped once
without releasing (as a killed process) and once releasing (as on SIGTERM), and the
time until the standby leads is printed, with the requests per second the pair sends.
Metrics: an EngineState with N finished qa deliveries of the tutorial's shipyard,
then the time of `Metrics.observe_engine` (first = after a restart, then a cycle with
one new event) and of rendering `/metrics`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reconciler.core.engine_state import apply, replay  # noqa: E402
from reconciler.formats.events import KeptnEvent  # noqa: E402
from reconciler.runtime.leadership import LeaseElector  # noqa: E402
from reconciler.runtime.metrics import Metrics  # noqa: E402
from tests.support.engine import EngineHarness, trigger  # noqa: E402
from tests.support.kube_leases import VersionedEmulator, _serve  # noqa: E402


def handover(lease: int, renew: float, retry: float, release: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        serving = _serve(VersionedEmulator, Path(tmp))
        api = next(serving)
        try:
            a = LeaseElector(
                api.client(), "bench", "lease", "a", lease, renew, retry, release_on_stop=release
            )
            b = LeaseElector(api.client(), "bench", "lease", "b", lease, renew, retry)
            a.start()
            assert a.wait_for_leadership(30)
            b.start()
            settle_from, n0 = time.monotonic(), len(api.calls)
            time.sleep(3 * retry)
            rate = (len(api.calls) - n0) / (time.monotonic() - settle_from)
            stopped = time.monotonic()
            a.stop()
            assert b.wait_for_leadership(4 * lease)
            took = time.monotonic() - stopped
            b.stop()
            return took, rate
        finally:
            serving.close()


def delivery(shipyard: str, context: str) -> list[KeptnEvent]:
    """The events of one qa + production delivery of the tutorial's shipyard, every task passing."""
    h = EngineHarness(shipyard)
    for task, source in (
        ("je-deployment", "job-executor-service"),
        ("je-test", "job-executor-service"),
        ("evaluation", "lighthouse-service"),
        ("approval", "approval-service"),
    ):
        h.passing(task, source=source)
    h.run(trigger("qa", "delivery", context=context))
    return h.ledger


def metrics_cost(n: int) -> None:
    shipyard = (REPO / "example-upstream" / "main" / "shipyard.yaml").read_text()
    events: list[KeptnEvent] = []
    for i in range(n):
        events.extend(delivery(shipyard, f"ctx-{i}"))
    state = replay(events)
    metrics = Metrics()
    t0 = time.perf_counter()
    metrics.observe_engine(state)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics.observe_engine(state)
    unchanged = time.perf_counter() - t0
    for event in delivery(shipyard, "one-more")[:1]:
        apply(state, event)
    t0 = time.perf_counter()
    metrics.observe_engine(state)
    again = time.perf_counter() - t0
    renders = []
    for _ in range(5):
        t0 = time.perf_counter()
        body, _ = metrics.render()
        renders.append(time.perf_counter() - t0)
    print(
        f"{len(state.executions)} sequence executions ({len(events)} events): observe_engine after a restart "
        f"{first * 1000:.1f} ms, a cycle without new events {unchanged * 1000:.3f} ms, a cycle after one new "
        f"event {again * 1000:.1f} ms; rendering /metrics {statistics.median(renders) * 1000:.2f} ms ({len(body)} bytes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lease", type=int, default=15)
    parser.add_argument("--renew", type=float, default=10.0)
    parser.add_argument("--retry", type=float, default=2.0)
    parser.add_argument("--sequences", type=int, default=2000)
    args = parser.parse_args()
    for release in (False, True):
        took, rate = handover(args.lease, args.renew, args.retry, release)
        how = "leader released the Lease (SIGTERM)" if release else "leader died without releasing"
        print(
            f"lease {args.lease}s renew {args.renew}s retry {args.retry}s, {how}: standby leads after {took:.2f}s; "
            f"{rate:.2f} API requests/s for leader plus standby"
        )
    metrics_cost(args.sequences)


if __name__ == "__main__":
    main()
