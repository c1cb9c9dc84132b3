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

Opt-in and cheaper, `BENCH_SCALE_TYPES=<file>` (no tracemalloc; a few seconds per sampled round):
after each round named in `BENCH_SCALE_TYPES_ROUNDS` (default "5,20,35,50"), a `gc.collect()`,
live objects by type, and the length of every container (dict, list, set, deque, array) of over
1,000 items; at the end <file> lists the types whose count grew and the containers that grew
most between the first and last sampled rounds, each with a path of referrers up to its owner
(a module, a class instance's attribute): who holds what the blocks count.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import tracemalloc
import types
from array import array
from collections import Counter, deque
from pathlib import Path
from typing import Any

FRAMES = 25
TOP = 25
BIG = 1000
"""Containers longer than this are followed by `BENCH_SCALE_TYPES`."""


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
        self.types_report = os.environ.get("BENCH_SCALE_TYPES") or None
        rounds = os.environ.get("BENCH_SCALE_TYPES_ROUNDS", "5,20,35,50")
        self.types_rounds = sorted({int(r) for r in rounds.split(",") if r.strip()})
        self.type_counts: dict[int, Counter[str]] = {}
        self.big: dict[int, dict[int, tuple[str, int]]] = {}
        """round -> id(container) -> (its type, its length), for containers over BIG items."""
        self.types_lines: list[str] = []

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
        if self.types_report and n in self.types_rounds:
            self._sample_types(n)
        if not self.report:
            return
        self.traced.append(tracemalloc.get_traced_memory()[0] / 2**20)
        self.types.append(Counter(type(o).__qualname__ for o in gc.get_objects()))
        if n in self.snap_rounds:
            snap = tracemalloc.take_snapshot().filter_traces(
                (tracemalloc.Filter(False, tracemalloc.__file__),)
            )
            self.snapshots[n] = snap

    def _sample_types(self, n: int) -> None:
        gc.collect()
        objects = gc.get_objects()
        self.type_counts[n] = Counter(type(o).__qualname__ for o in objects)
        big: dict[int, tuple[str, int]] = {}
        for o in objects:
            if isinstance(o, dict | list | set | frozenset | deque | array):
                try:
                    size = len(o)
                except Exception:  # a container mid-change on another thread
                    continue
                if size > BIG:
                    big[id(o)] = (type(o).__qualname__, size)
        self.big[n] = big
        del objects
        if n == self.types_rounds[-1]:  # while the app runs: its containers still have owners
            self.types_lines = self._types_lines()

    def _types_lines(self) -> list[str]:
        rounds = sorted(self.type_counts)
        lines = [f"sampled rounds: {rounds}"]
        lines.append(f"allocated blocks after each round: {', '.join(f'{b:.0f}' for b in self.blocks)}")
        if len(rounds) < 2:
            return lines
        lines.append(
            f"\nlive gc-tracked objects by type, round {rounds[-1]} minus {rounds[0]} (counts at {rounds}):"
        )
        lines.extend(_type_growth([self.type_counts[r] for r in rounds]))
        growth: list[tuple[bool, int, int]] = []
        for ident, (kind, size) in self.big[rounds[-1]].items():
            before = self.big[rounds[0]].get(ident)
            # the same container (same id, same type) first; new ones (a cache rebuilt, a
            # config replaced, or an id reused) after, as their whole size is not growth
            same = before is not None and before[0] == kind
            growth.append((same, size - (before[1] if same and before else 0), ident))
        growth.sort(reverse=True)
        by_id = {id(o): o for o in gc.get_objects() if id(o) in self.big[rounds[-1]]}
        lines.append(f"\ncontainers of over {BIG} items that grew most, round {rounds[0]} -> {rounds[-1]}:")
        for same, d, ident in growth[:TOP]:
            kind, size = self.big[rounds[-1]][ident]
            sizes = " ".join(str(self.big[r].get(ident, ("", 0))[1]) for r in rounds)
            lines.append(f"  {d:+8d} {kind} of {size}{'' if same else ' (new)'}: {sizes}")
            obj = by_id.get(ident)
            if obj is not None:
                lines.append(f"      sample: {_sample(obj)}")
                lines.extend(f"      held by {step}" for step in owner_path(obj))
        return lines

    def finish(self) -> None:
        if self.types_report:
            lines = self.types_lines or self._types_lines()
            Path(self.types_report).write_text("\n".join(lines) + "\n")
        if not self.report:
            return
        tracemalloc.stop()
        lines: list[str] = [f"traced MiB after each round: {', '.join(f'{t:.1f}' for t in self.traced)}"]
        lines.append(f"malloc in use MiB: {', '.join(f'{m:.1f}' for m in self.malloc)}")
        lines.append(f"malloc free (kept) MiB: {', '.join(f'{m:.1f}' for m in self.malloc_free)}")
        lines.append(f"allocated blocks: {', '.join(f'{b:.0f}' for b in self.blocks)}")
        if len(self.types) >= 2:
            lines.append("\nlive objects by type, last round minus first (all rounds' counts):")
            lines.extend(_type_growth(self.types))
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


def _type_growth(counts: list[Counter[str]]) -> list[str]:
    """The TOP types whose live count grew most from the first count to the last, each with
    all its counts: both reports (tracemalloc's and BENCH_SCALE_TYPES') print this."""
    first, last = counts[0], counts[-1]
    grew = sorted(((last[k] - first[k], k) for k in last), reverse=True)[:TOP]
    return [f"  {d:+8d} {k}: " + " ".join(str(c[k]) for c in counts) for d, k in grew]


def _sample(obj: Any) -> str:
    """A short look at a container's items: the types of a few of them."""
    items: list[Any]
    if isinstance(obj, dict):
        items = [f"{type(k).__qualname__}->{type(v).__qualname__}" for k, v in list(obj.items())[-3:]]
    else:
        items = [type(v).__qualname__ for v in list(obj)[-3:]]
    return ", ".join(str(i) for i in items)[:200]


def owner_path(obj: Any, depth: int = 8) -> list[str]:
    """One chain of referrers from `obj` up to a module or a class instance holding it, each step
    named (an attribute, a key, a container's type): breadth first, frames and this module's own
    bookkeeping left out."""
    ignore = {id(obj)}
    frame = sys._getframe()
    start: list[tuple[Any, list[str]]] = [(obj, [])]
    seen = {id(obj)}
    for _ in range(depth):
        nxt: list[tuple[Any, list[str]]] = []
        for target, path in start:
            for ref in gc.get_referrers(target):
                if id(ref) in seen or isinstance(ref, types.FrameType) or ref is start or ref is nxt:
                    continue
                if ref is frame or id(ref) in ignore:
                    continue
                seen.add(id(ref))
                if isinstance(ref, types.ModuleType):
                    return [*path, f"module {ref.__name__}"]
                if isinstance(ref, dict):
                    key = next((k for k, v in ref.items() if v is target), None)
                    owners = [o for o in gc.get_referrers(ref) if getattr(o, "__dict__", None) is ref]
                    if owners:
                        return [*path, f"{type(owners[0]).__module__}.{type(owners[0]).__qualname__}.{key}"]
                    mods = [o for o in gc.get_referrers(ref) if isinstance(o, types.ModuleType)]
                    if mods:
                        return [*path, f"module {mods[0].__name__}.{key}"]
                    nxt.append((ref, [*path, f"dict[{key!r:.40}]"]))
                elif hasattr(type(ref), "__slots__") or hasattr(ref, "__dict__"):
                    attr = next(
                        (
                            a
                            for a in (*getattr(type(ref), "__slots__", ()), *getattr(ref, "__dict__", {}))
                            if getattr(ref, a, None) is target
                        ),
                        "?",
                    )
                    nxt.append((ref, [*path, f"{type(ref).__module__}.{type(ref).__qualname__}.{attr}"]))
                else:
                    nxt.append((ref, [*path, type(ref).__qualname__]))
        if not nxt:
            break
        start = nxt[:20]
    return [*(start[0][1] if start else []), "(no owner found)"]
