"""What this process holds after each round of a scenario, next to its RSS: where memory grows.

Always (cheap): the C allocator's bytes in use (glibc `mallinfo2`: libgit2's caches and pack
windows, pygit2's objects, Python's objects over 512 bytes) and the interpreter's live
blocks (`sys.getallocatedblocks`). If the Python figures stay flat while RSS rises, what grows
is outside Python's objects (libgit2, allocator fragmentation); if they rise with it, it is
Python's.

Opt-in, `BENCH_SCALE_TRACEMALLOC=<file>` (slow: every allocation is traced with 25 frames, and
each round ends with a full `gc.collect()`): tracemalloc from before `App.start`, a snapshot
after each round named in `BENCH_SCALE_TRACEMALLOC_ROUNDS` (default "3,8", 1-based), live
objects by type (`gc.get_objects`) after every round, and at the end a report in <file>: the
top growths between the first and last of those rounds, grouped by traceback and by file, and
the types whose count grew.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

FRAMES = 25
TOP = 25


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.restype = _Mallinfo2
    return fn


_MALLINFO2 = _mallinfo2()


def malloc_in_use_mib() -> float:
    """Bytes glibc's malloc has handed out and not had back (heap and mmapped chunks), in MiB;
    -1 where there is no mallinfo2."""
    if _MALLINFO2 is None:
        return -1.0
    info = _MALLINFO2()
    return float(info.uordblks + info.hblkhd) / 2**20


def malloc_free_mib() -> float:
    """Bytes glibc's heap holds free (fragments it keeps), in MiB; -1 where there is no mallinfo2."""
    if _MALLINFO2 is None:
        return -1.0
    return float(_MALLINFO2().fordblks) / 2**20


def rss_parts_mib() -> tuple[float, float]:
    """(anonymous, file-backed) resident MiB of this process (/proc/self/status RssAnon, RssFile):
    file-backed is mostly libgit2's mapped packs and their indexes, capped by its mapped limit."""
    parts = {"RssAnon:": 0.0, "RssFile:": 0.0}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(maxsplit=1)[0] if line else ""
        if key in parts:
            parts[key] = int(line.split()[1]) / 1024
    return parts["RssAnon:"], parts["RssFile:"]


class RoundMemory:
    """Call `start()` before the app starts and `after_round(n)` after each round (1-based)."""

    def __init__(self) -> None:
        self.report = os.environ.get("BENCH_SCALE_TRACEMALLOC") or None
        rounds = os.environ.get("BENCH_SCALE_TRACEMALLOC_ROUNDS", "3,8")
        self.snap_rounds = sorted({int(r) for r in rounds.split(",") if r.strip()})
        self.malloc: list[float] = []
        self.malloc_free: list[float] = []
        self.blocks: list[float] = []
        self.rss_anon: list[float] = []
        self.rss_file: list[float] = []
        self.traced: list[float] = []
        self.types: list[Counter[str]] = []
        self.snapshots: dict[int, tracemalloc.Snapshot] = {}

    def start(self) -> None:
        if self.report:
            tracemalloc.start(FRAMES)

    def after_round(self, n: int) -> None:
        if self.report:
            gc.collect()
        self.malloc.append(malloc_in_use_mib())
        self.malloc_free.append(malloc_free_mib())
        self.blocks.append(float(sys.getallocatedblocks()))
        anon, mapped = rss_parts_mib()
        self.rss_anon.append(anon)
        self.rss_file.append(mapped)
        if not self.report:
            return
        self.traced.append(tracemalloc.get_traced_memory()[0] / 2**20)
        self.types.append(Counter(type(o).__qualname__ for o in gc.get_objects()))
        if n in self.snap_rounds:
            snap = tracemalloc.take_snapshot().filter_traces(
                (tracemalloc.Filter(False, tracemalloc.__file__),)
            )
            self.snapshots[n] = snap

    def finish(self) -> None:
        if not self.report:
            return
        tracemalloc.stop()
        lines: list[str] = [f"traced MiB after each round: {', '.join(f'{t:.1f}' for t in self.traced)}"]
        lines.append(f"malloc in use MiB: {', '.join(f'{m:.1f}' for m in self.malloc)}")
        lines.append(f"malloc free (kept) MiB: {', '.join(f'{m:.1f}' for m in self.malloc_free)}")
        lines.append(f"allocated blocks: {', '.join(f'{b:.0f}' for b in self.blocks)}")
        if len(self.types) >= 2:
            first, last = self.types[0], self.types[-1]
            grew = sorted(((last[k] - first[k], k) for k in last), reverse=True)[:TOP]
            lines.append("\nlive objects by type, last round minus first (all rounds' counts):")
            for d, k in grew:
                lines.append(f"  {d:+8d} {k}: " + " ".join(str(t[k]) for t in self.types))
        if len(self.snapshots) >= 2:
            a, b = min(self.snapshots), max(self.snapshots)
            old, new = self.snapshots[a], self.snapshots[b]
            for key in ("filename", "traceback"):
                lines.append(f"\n=== round {a} -> {b}, by {key} ===")
                for stat in new.compare_to(old, key)[:TOP]:
                    lines.append(f"{stat.size_diff / 2**10:+10.1f} KiB {stat.count_diff:+8d} blocks")
                    if key == "traceback":
                        lines.extend("    " + line for line in stat.traceback.format())
                    else:
                        lines.append(f"    {stat.traceback[0].filename}")
        Path(self.report).write_text("\n".join(lines) + "\n")
