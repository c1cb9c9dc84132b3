"""Issue 19 part 6: paired rounds of appends at 0 and at 100,000 events, with the process's
user and system time and page faults per append.

One `Ledger` per size for the whole run (as the daemon keeps its one), on an empty repository
and on a copy of the bench's maintained 100,000-event ledger; each round makes 1,000 appends
into each, one after the other, so a slow minute of the machine hits both alike, and the
ratio is taken per round. `getrusage` gives the split the wall clock hides: user time (what
`append_instructions` counts), system time (file creation, renames, page faults) and minor
faults.

Run: .venv/bin/python -m bench.experiments.append_rounds [rounds]
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2

from bench.ledgergen import cached_ledger, copy_ledger
from bench.scenarios.ledger import maintained
from reconciler.ledger.gitledger import Ledger
from reconciler.ledger.measure import sample_event
from reconciler.runtime.observability import configure_logging

PER_ROUND = 1000


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    configure_logging("json", "info", open(os.devnull, "w"))  # noqa: SIM115 - the process's whole life
    root = Path(tempfile.mkdtemp(prefix="bench-rounds-"))
    try:
        pygit2.init_repository(str(root / "0"), bare=True)
        copy_ledger(maintained(cached_ledger(100_000, print)), root / "100,000")
        ledgers = {size: Ledger(root / size) for size in ("0", "100,000")}
        rows: dict[str, list[tuple[float, float, float, float]]] = {size: [] for size in ledgers}
        next_id = 70_000_000
        for _ in range(rounds):
            for size, ledger in ledgers.items():
                events = [sample_event(i) for i in range(next_id, next_id + PER_ROUND)]
                next_id += PER_ROUND
                before = resource.getrusage(resource.RUSAGE_SELF)
                began = time.perf_counter()
                for event in events:
                    ledger.append(event)
                ledger.wait_for_maintenance()
                wall = time.perf_counter() - began
                after = resource.getrusage(resource.RUSAGE_SELF)
                rows[size].append(
                    (
                        PER_ROUND / wall,
                        (after.ru_utime - before.ru_utime) / PER_ROUND * 1e6,
                        (after.ru_stime - before.ru_stime) / PER_ROUND * 1e6,
                        (after.ru_minflt - before.ru_minflt) / PER_ROUND,
                    )
                )
        for ledger in ledgers.values():
            ledger.wait_for_checkpoint()
            ledger.flush_mark()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = [big[0] / empty[0] for empty, big in zip(rows["0"], rows["100,000"], strict=True)]
    print("rate @100,000 / @0 per round:", " ".join(f"{r:.2f}" for r in ratios))
    print(f"median of the rounds' ratios: {statistics.median(ratios):.3f}")
    for size, values in rows.items():
        rate, user, system, faults = (statistics.median(v[i] for v in values) for i in range(4))
        print(
            f"@{size}: {rate:,.0f} events/s, user {user:.0f} µs, system {system:.0f} µs, "
            f"{faults:.1f} minor faults an append (medians)"
        )


if __name__ == "__main__":
    main()
