"""Issue 19 part 5: where `Ledger.append`'s time goes at 0 and at 100,000 events, by phase.

Each phase of an append is timed in place (a wrapper around the ledger's own method, wall
clock, inclusive), per 1,000-append sample as the bench takes them (`_ledger_run`: a fresh
`Ledger` on a copy of the bench's cached ledgers, the background merge waited for), the
sizes and layouts alternated per round so a busy minute hits all alike; plus counts that do
not depend on the machine's load: trees read from the repository (not in the writer's cache)
per append, tree bytes serialized per append, system calls (optional, `--strace`).

Layouts: `v1`, the ledger's own (`events/<k0>/<k1>/<k2>/<k3>/<k>.json`); `seq16`, its event
path swapped for a sequence-ordered one (`log/<seq >> 20>/<d4>/<d3>/<d2>/<d1>/<seq:x>.json`,
patching `gitledger._object_path` only: the dedupe check then walks the new path, all of it
in the writer's cache), a cost model of a v2 layout, not a ledger that could be read back.

Run: .venv/bin/python -m bench.experiments.append_phases [rounds] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pygit2

from bench.ledgergen import cached_ledger, copy_ledger
from bench.scenarios.ledger import maintained
from reconciler.ledger import gitledger, objects, packs
from reconciler.ledger.measure import sample_event

PER_SAMPLE = 1000
V1 = gitledger._object_path
acc: dict[str, float] = defaultdict(float)
counts: dict[str, int] = defaultdict(int)


def _timed(owner: Any, name: str, label: str) -> None:
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            acc[label] += time.perf_counter() - began
            counts[label] += 1

    setattr(owner, name, wrapper)


PHASES = [
    (gitledger.Ledger, "_build", "build (blob, trees, commit, signature: in memory)"),
    (objects.ObjectWriter, "child", "  dedupe: the id's path in the tip's tree"),
    (objects.ObjectWriter, "insert", "  insert: the trees on the event's path"),
    (gitledger.Ledger, "_write_batch", "write the batch's pack (write-ahead)"),
    (gitledger.Ledger, "_move_ref", "move the ref (compare-and-swap)"),
    (gitledger.Ledger, "_landed", "read the ref back"),
    (gitledger.Ledger, "_after_append", "after: catalog, log line, tip mark, compaction"),
    (gitledger.Ledger, "compact", "  compaction (one per 1,000 appends)"),
    (gitledger.Ledger, "_renew_handles", "  handle renewal (every 64)"),
    (packs.PackMerger, "maybe_merge", "  start of a background merge"),
    (gitledger.Ledger, "wait_for_maintenance", "end of the sample: the merge waited for"),
]


def _instrument() -> None:
    for owner, name, label in PHASES:
        _timed(owner, name, label)
    entries = objects.ObjectWriter.entries

    def counted_entries(self: objects.ObjectWriter, tree: bytes) -> dict[bytes, tuple[int, bytes]]:
        if tree not in self._trees and tree not in self._pending:
            began = time.perf_counter()
            try:
                return entries(self, tree)
            finally:
                acc["  trees read from the repository (cold)"] += time.perf_counter() - began
                counts["  trees read from the repository (cold)"] += 1
        return entries(self, tree)

    objects.ObjectWriter.entries = counted_entries  # type: ignore[method-assign]
    tree_bytes = objects.tree_bytes

    def counted_tree_bytes(e: objects.Entries) -> bytes:
        began = time.perf_counter()
        out = tree_bytes(e)
        acc["  tree serialization (tree_bytes)"] += time.perf_counter() - began
        counts["  tree serialization (tree_bytes)"] += 1
        counts["tree bytes"] += len(out)
        return out

    objects.tree_bytes = counted_tree_bytes  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rounds", type=int, nargs="?", default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from bench.__main__ import _quiet_logging

    _quiet_logging()
    source = maintained(cached_ledger(100_000, print))
    _instrument()
    sizes = (0, 100_000)
    layouts = ("v1", "seq16")
    counters = {(layout, size): itertools.count(size) for layout in layouts for size in sizes}
    current: dict[str, Any] = {}

    def seq16(key: str) -> list[bytes]:
        seq = next(counters[current["variant"]])
        digits = [f"{(seq >> s) & 15:x}".encode() for s in (16, 12, 8, 4)]
        return [b"log", f"{seq >> 20:x}".encode(), *digits, f"{seq:x}.json".encode()]

    load_before = os.getloadavg()
    samples: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="append-phases-") as tmp:
        root = Path(tmp)
        for layout in layouts:
            for size in sizes:
                path = root / f"{layout}-{size}"
                if size:
                    copy_ledger(source, path)
                else:
                    pygit2.init_repository(str(path), bare=True)
        next_id = 50_000_000
        order = [(layout, size) for layout in layouts for size in sizes]
        for round_no in range(args.rounds):
            # rotated each round: the first sample of a round pays for what the last one left
            # the disk to write back, so no variant is always first
            shift = round_no % len(order)
            for layout, size in order[shift:] + order[:shift]:
                gitledger._object_path = V1 if layout == "v1" else seq16
                current["variant"] = (layout, size)
                events = [sample_event(i) for i in range(next_id, next_id + PER_SAMPLE)]
                next_id += PER_SAMPLE
                acc.clear()
                counts.clear()
                ledger = gitledger.Ledger(root / f"{layout}-{size}")
                began, cpu = time.perf_counter(), time.process_time()
                for event in events:
                    ledger.append(event)
                ledger.wait_for_maintenance()
                wall, on_cpu = time.perf_counter() - began, time.process_time() - cpu
                row = {label: seconds / PER_SAMPLE * 1e6 for label, seconds in acc.items()}
                row["total (wall)"] = wall / PER_SAMPLE * 1e6
                row["total (this process's CPU)"] = on_cpu / PER_SAMPLE * 1e6
                row["cold tree reads per append"] = (
                    counts["  trees read from the repository (cold)"] / PER_SAMPLE
                )
                row["tree bytes per append"] = counts["tree bytes"] / PER_SAMPLE
                samples[f"{layout} @{size:,}"].append(row)
        gitledger._object_path = V1
    load_after = os.getloadavg()
    labels = ["total (wall)", "total (this process's CPU)"] + [label for _, _, label in PHASES]
    labels[5:5] = ["  trees read from the repository (cold)", "  tree serialization (tree_bytes)"]
    labels += ["cold tree reads per append", "tree bytes per append"]
    medians = {
        variant: {label: statistics.median(r.get(label, 0.0) for r in rows) for label in labels}
        for variant, rows in samples.items()
    }
    variants = list(medians)
    print(
        f"median per append over {args.rounds} rounds of {PER_SAMPLE} appends (us unless said), "
        f"load {load_before[0]:.2f} -> {load_after[0]:.2f}"
    )
    print(f"{'':52s}" + "".join(f"{v:>14s}" for v in variants))
    for label in labels:
        print(f"{label:52s}" + "".join(f"{medians[v][label]:14.1f}" for v in variants))
    spread = ["total (wall)", "total (this process's CPU)", PHASES[0][2], PHASES[3][2], PHASES[4][2]]
    print("quartiles (p25-p75) per sample:")
    for label in spread:
        cells = []
        for v in variants:
            q = statistics.quantiles([r.get(label, 0.0) for r in samples[v]], n=4)
            cells.append(f"{q[0]:6.0f}-{q[2]:<6.0f}")
        print(f"{label:52s}" + "".join(f"{c:>14s}" for c in cells))
    for layout in layouts:
        zero, full = medians[f"{layout} @0"], medians[f"{layout} @100,000"]
        cpu_label = "total (this process's CPU)"
        print(
            f"{layout}: flatness (time @0 / time @100,000) wall "
            f"{zero['total (wall)'] / full['total (wall)']:.2f}, CPU "
            f"{zero[cpu_label] / full[cpu_label]:.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"load": [load_before, load_after], "medians": medians, "samples": samples}, indent=1)
        )


if __name__ == "__main__":
    main()
