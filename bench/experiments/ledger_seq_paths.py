"""Issue 19 part 5 (throwaway experiment): `Ledger.append` at 0 and 100,000 events with the
ledger's own v1 layout and with its event path swapped for a sequence-ordered one.

The swap patches `gitledger._object_path` only (the file an append writes; the dedupe check
then walks the new path, which is where the event would be): a cost model of the v2 layout,
not a ledger anyone could read back by id. Runs as the bench does (`_ledger_run`: a fresh
`Ledger` per 1,000-append sample, on copies of the bench's cached ledgers), the two layouts
and two sizes alternated per round.

Run: .venv/bin/python -m bench.experiments.ledger_seq_paths [runs]
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2

from bench.ledgergen import cached_ledger, copy_ledger
from bench.scenarios.ledger import maintained
from reconciler.formats.events import KeptnEvent
from reconciler.ledger import gitledger
from reconciler.ledger.measure import sample_event

V1 = gitledger._object_path


def _ledger_run(path: Path, events: list[KeptnEvent]) -> tuple[float, float]:
    """The bench's sample (`bench.scenarios.ledger._ledger_run`): (events/s wall, events/s of
    this process's CPU time, which a busy machine's other processes disturb less)."""
    ledger = gitledger.Ledger(path)
    began, cpu = time.perf_counter(), time.process_time()
    for event in events:
        ledger.append(event)
    ledger.wait_for_maintenance()
    return len(events) / (time.perf_counter() - began), len(events) / (time.process_time() - cpu)


def main() -> None:
    from bench.__main__ import _quiet_logging

    _quiet_logging()
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    source = maintained(cached_ledger(100_000, print))
    counters = {0: itertools.count(0), 100_000: itertools.count(100_000)}
    current = {"size": 0}

    def seq16(key: str) -> list[bytes]:
        seq = next(counters[current["size"]])
        digits = [f"{(seq >> s) & 15:x}".encode() for s in (16, 12, 8, 4)]
        return [b"log", f"{seq >> 20:x}".encode(), *digits, f"{seq:x}.json".encode()]

    with tempfile.TemporaryDirectory(prefix="ledger-seq-") as tmp:
        root = Path(tmp)
        rates: dict[tuple[str, int], list[float]] = {}
        cpu: dict[tuple[str, int], list[float]] = {}
        for layout in ("v1", "seq16"):
            for size in (0, 100_000):
                p = root / f"{layout}-{size}"
                if size:
                    copy_ledger(source, p)
                else:
                    pygit2.init_repository(str(p), bare=True)
                rates[(layout, size)] = []
                cpu[(layout, size)] = []
        next_id = 40_000_000
        for _ in range(runs):
            for (layout, size), samples in rates.items():
                gitledger._object_path = V1 if layout == "v1" else seq16
                current["size"] = size
                events = [sample_event(i) for i in range(next_id, next_id + 1000)]
                next_id += 1000
                wall, on_cpu = _ledger_run(root / f"{layout}-{size}", events)
                samples.append(wall)
                cpu[(layout, size)].append(on_cpu)
        gitledger._object_path = V1
        for layout in ("v1", "seq16"):
            czero = statistics.median(cpu[(layout, 0)])
            cfull = statistics.median(cpu[(layout, 100_000)])
            print(
                f"{layout:6s} CPU @0 {czero:6.0f}/s  @100k {cfull:6.0f}/s  CPU flatness {cfull / czero:.2f}"
            )
            zero = statistics.median(rates[(layout, 0)])
            full = statistics.median(rates[(layout, 100_000)])
            print(
                f"{layout:6s} @0 {zero:6.0f}/s {[round(r) for r in rates[(layout, 0)]]}  "
                f"@100k {full:6.0f}/s {[round(r) for r in rates[(layout, 100_000)]]}  flatness {full / zero:.2f}"
            )


if __name__ == "__main__":
    main()
