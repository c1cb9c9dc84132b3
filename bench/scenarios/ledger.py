"""Ledger append: events per second through `Ledger.append` against raw pygit2 commits of the
same events on the same repository state, at 0, 10,000 and 100,000 events already recorded;
and a cold load (what a restart reads) against walking the same commits with pygit2 alone.

- Ledger: one `append` per event (as the control loop and executors do), through one
  `Ledger` per variant over a copy of a generated ledger, kept across the rounds as the
  daemon keeps the one it opens at start; a sample is 1,000 appends, so it includes the
  one compaction the ledger does per thousand appends, and ends when a pack merge it
  started in the background has ended (so its cost is this sample's and never slows the
  next figure). At 100,000 also the first 1,000 appends of a `Ledger` just opened (a
  fresh one each sample, on a copy of its own), what a restarted process pays while its
  writer's kept trees fill (`ledger/objects.py`).
- Raw: the floor of "one commit per event": the same JSON blob, a one-entry tree,
  a commit with the same message, and the branch ref moved, on a second copy of
  the same repository (same packs).
- Raw, the ledger's trees: the same commits as the ledger's format makes them (the
  blob at `event_path`, so the 6 trees an insert rewrites: root, events/ and the 4
  shard levels, with pygit2's TreeBuilder, `gitledger._insert`), the same message,
  the ref moved: 8 objects per event where the plain raw run writes 3. What the
  format costs, without what the ledger adds to it (signing, the readback, the
  catalog, the log line, the tip mark, compaction); never packed either.
- The packs as the ledger's own maintenance keeps them (`ledger/packs.py`: a merge of
  every pack into one whenever there are more than MERGE_ABOVE): the generated ledger's
  packs (one per thousand events) but the newest MAINTAINED_SMALL merged into one, the
  middle of the 1-to-9 packs a living ledger cycles through; at 100,000 also after a
  full repack (one pack, as `Ledger.repack()` leaves it), and as generated (a pack per
  thousand events, ~100: what a ledger written by a version without maintenance, or by
  many short-lived writers, looks like; the ledger's own geometric merge starts in the
  background at its 64th append, and the first sample waits for it).
- Cold load: `len(Ledger(path))` in a fresh instance (walk, blob lookups, JSON
  parsing into `KeptnEvent`) against a pygit2 walk reading the same blobs and
  `json.loads` only.
"""

from __future__ import annotations

import inspect
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pygit2
from pygit2.enums import FileMode, SortMode

from bench.harness import Budget, Clock, Derived, Figure, Result
from bench.ledgergen import GIT, cached_ledger, copy_ledger
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import DEFAULT_BRANCH, Ledger, _insert, commit_message, event_key, event_path
from reconciler.ledger.measure import sample_event
from reconciler.ledger.packs import index_object_ids

TITLE = "Ledger append and cold load (events/s through Ledger vs raw pygit2 commits)"


MAINTAINED_SMALL = 4
"""Packs of one compaction each left beside the merged one in the maintained copies."""


def _ledger_run(ledger: Ledger, events: list[KeptnEvent]) -> float:
    began = time.perf_counter()
    for event in events:
        ledger.append(event)
    ledger.wait_for_maintenance()
    return len(events) / (time.perf_counter() - began)


def _raw_run(path: Path, events: list[KeptnEvent]) -> float:
    repo = pygit2.Repository(str(path))
    sig = pygit2.Signature("raw", "raw@localhost")
    ref_name = "refs/heads/raw"
    began = time.perf_counter()
    ref = repo.references.get(ref_name)
    parent = ref.target if ref is not None else None
    for event in events:
        blob = repo.create_blob(event.to_json().encode("utf-8"))
        tb = repo.TreeBuilder()
        tb.insert("event.json", blob, FileMode.BLOB)
        tree = tb.write()
        commit = repo.create_commit(None, sig, sig, commit_message(event), tree, [parent] if parent else [])
        if ref is None:
            ref = repo.references.create(ref_name, commit)
        else:
            ref.set_target(commit, "raw")
        parent = commit
    return len(events) / (time.perf_counter() - began)


def _raw_layout_run(path: Path, events: list[KeptnEvent]) -> float:
    repo = pygit2.Repository(str(path))
    sig = pygit2.Signature("raw", "raw@localhost")
    began = time.perf_counter()
    ref = repo.references.get(f"refs/heads/{DEFAULT_BRANCH}")
    parent = ref.peel(pygit2.Commit) if ref is not None else None
    for event in events:
        blob = repo.create_blob(event.to_json().encode("utf-8"))
        tree = _insert(repo, parent.tree if parent is not None else None, event_key(event.id), blob)
        oid = repo.create_commit(None, sig, sig, commit_message(event), tree, [parent.id] if parent else [])
        if ref is None:
            ref = repo.references.create(f"refs/heads/{DEFAULT_BRANCH}", oid)
        else:
            ref.set_target(oid, "raw")
        parent = repo[oid].peel(pygit2.Commit)
    return len(events) / (time.perf_counter() - began)


CHECKPOINTS = "catalog_checkpoint" in inspect.signature(Ledger).parameters
"""False when the bench measures an older checkout's ledger (before/after figures)."""


def _cold_load(path: Path, checkpoint: Path) -> tuple[int, float]:
    """`len(Ledger(path))` reading `checkpoint` (a missing file: the whole ledger), writing none."""
    began = time.perf_counter()
    kwargs: dict[str, Any] = {"catalog_checkpoint": checkpoint, "checkpoint_every": 0} if CHECKPOINTS else {}
    n = len(Ledger(path, **kwargs))
    return n, time.perf_counter() - began


def _saved_checkpoint(path: Path, target: Path) -> Path:
    """A catalog checkpoint of the ledger at `path` covering all but its last 100 events, as a
    restart finds it (a shutdown's checkpoint, then some appends by others)."""
    writer = Ledger(path, catalog_checkpoint=target, checkpoint_every=0)
    catalog = writer._ensure_loaded()
    repo = pygit2.Repository(str(path))
    older = str(repo.revparse_single(f"{writer.ref_name}~100").id)
    writer.checkpoint_every = 1
    if not writer._write_checkpoint(catalog, len(catalog) - 100, older):
        raise RuntimeError("the catalog checkpoint was not written")
    return target


def _raw_walk(path: Path) -> tuple[int, float]:
    """The same reads with pygit2 and json.loads only: walk oldest first, blob by path from the tip."""
    began = time.perf_counter()
    repo = pygit2.Repository(str(path))
    tip = repo.references[f"refs/heads/{DEFAULT_BRANCH}"].peel(pygit2.Commit)
    tree = tip.tree
    n = 0
    for commit in repo.walk(tip.id, SortMode.TOPOLOGICAL | SortMode.REVERSE):
        event_id = commit.message.rsplit("Event-Id: ", 1)[1].strip()
        json.loads(repo[tree[event_path(event_id)].id].peel(pygit2.Blob).data)
        n += 1
    return n, time.perf_counter() - began


def _cached_copy(source: Path, suffix: str) -> tuple[Path, bool]:
    """The cache entry `<source's entry><suffix>/ledger.git`: (path, already complete), or a
    fresh copy of `source` there to be transformed and marked complete by the caller."""
    target = source.parent.parent / (source.parent.name + suffix) / "ledger.git"
    if (target.parent / "complete").is_file():
        return target, True
    if target.parent.exists():
        shutil.rmtree(target.parent)
    target.parent.mkdir(parents=True)
    copy_ledger(source, target)
    return target, False


def repacked(source: Path) -> Path:
    """A cached copy of `source` with every object in one pack (what `Ledger.repack()` leaves)."""
    target, done = _cached_copy(source, "-repacked")
    if done:
        return target
    subprocess.run([GIT, "-C", str(target), "repack", "-a", "-d", "-q"], check=True, timeout=900)
    (target.parent / "complete").write_text((source.parent / "complete").read_text())
    return target


def maintained(source: Path) -> Path:
    """A cached copy of `source` with its packs as the ledger's maintenance leaves them: all
    but the newest MAINTAINED_SMALL (one per compaction) merged into one, with libgit2's pack
    builder as `PackMerger` does without the git CLI."""
    target, done = _cached_copy(source, "-maintained")
    if done:
        return target
    pack_dir = target / "objects" / "pack"
    by_age = sorted(pack_dir.glob("pack-*.idx"), key=lambda f: (f.stat().st_mtime_ns, f.name))
    old = by_age[:-MAINTAINED_SMALL] if len(by_age) > MAINTAINED_SMALL else []
    if len(old) > 1:
        repo = pygit2.Repository(str(target))
        try:
            builder = pygit2.PackBuilder(repo)
            for idx in old:
                for raw in index_object_ids(idx):
                    builder.add(pygit2.Oid(raw=raw))
            builder.write(str(pack_dir))
        finally:
            repo.free()
        for idx in old:
            for suffix in (".pack", ".idx", ".rev"):
                idx.with_suffix(suffix).unlink(missing_ok=True)
    (target.parent / "complete").write_text((source.parent / "complete").read_text())
    return target


def _packs(path: Path) -> int:
    return sum(1 for _ in (path / "objects" / "pack").glob("pack-*.pack"))


def run(budget: Budget) -> Result:
    res = Result("ledger", TITLE)
    sizes = [0, 10_000, 100_000] if not budget.quick else [0, 1_000]
    per_sample = budget.pick(1000, 200)
    runs = budget.pick(5, 2)
    variants: list[tuple[str, int, Path | None]] = []
    for size in sizes:
        generated = cached_ledger(size, budget.log) if size else None
        source = None
        if generated is not None:
            budget.log(f"  {size:,} events with their packs as the ledger's maintenance keeps them (cached)")
            source = maintained(generated)
        variants.append((f"{size:,}", size, source))
        if size == 100_000 and generated is not None:
            budget.log("  one-pack variant of the 100,000-event ledger (git repack -a -d, cached)")
            variants.append((f"{size:,} repacked", size, repacked(generated)))
            variants.append((f"{size:,} as generated", size, generated))
    clock = Clock(budget.deadline)  # building caches is not measuring

    # cold loads first, on the cached repositories themselves (reading changes nothing; the
    # checkpoints go to a directory of their own)
    scratch = Path(tempfile.mkdtemp(prefix="bench-ledger-load-"))
    try:
        for label, size, source in variants:
            if source is None or "repacked" in label or "generated" in label:
                continue
            loads: list[float] = []
            walks: list[float] = []
            resumed: list[float] = []
            saved = _saved_checkpoint(source, scratch / f"{size}.catalog") if CHECKPOINTS else None
            n = 0
            for _ in range(budget.pick(3, 1) if size >= 100_000 else budget.pick(5, 2)):
                walks.append(_raw_walk(source)[1])
                n, seconds = _cold_load(source, scratch / "missing.catalog")
                loads.append(seconds)
                if saved is not None:
                    resumed.append(_cold_load(source, saved)[1])
                if not clock.left():
                    break
            walk = f"raw walk+json @{label}"
            res.add(Figure(walk, "s", walks, note="pygit2 walk, blob by path, json.loads"))
            res.add(
                Figure(
                    f"cold load @{label}",
                    "s",
                    loads,
                    baseline=walk,
                    note=f"len(Ledger(path)), no checkpoint: {n:,} events read from git",
                )
            )
            if resumed:
                res.add(
                    Figure(
                        f"load from checkpoint @{label}",
                        "s",
                        resumed,
                        baseline=walk,
                        note="catalog checkpoint covering all but the last 100 commits, those read from git",
                    )
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    # appends: every variant once per round, so a busy moment of the machine hits all sizes alike
    rates: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    raw_rates: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    layout_rates: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    opened_rates: list[float] = []
    opened = f"{sizes[-1]:,}"
    packs: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        root = Path(tmp)
        for label, _, source in variants:
            for prefix in ("l", "r", "t", "f") if label == opened else ("l", "r", "t"):
                path = root / f"{prefix}-{label}"
                if source is None:
                    pygit2.init_repository(str(path), bare=True)
                else:
                    copy_ledger(source, path)
            packs[label] = _packs(root / f"l-{label}")
        ledgers = {label: Ledger(root / f"l-{label}") for label, _, _ in variants}
        next_id = 10_000_000
        for _ in range(runs):
            for label, _, _ in variants:
                events = [sample_event(i) for i in range(next_id, next_id + per_sample)]
                next_id += per_sample
                rates[label].append(_ledger_run(ledgers[label], events))
                raw_rates[label].append(_raw_run(root / f"r-{label}", events))
                layout_rates[label].append(_raw_layout_run(root / f"t-{label}", events))
                if label == opened:
                    events = [sample_event(i) for i in range(next_id, next_id + per_sample)]
                    next_id += per_sample
                    opened_rates.append(_ledger_run(Ledger(root / f"f-{label}"), events))
            if not clock.left():
                break
        for ledger in ledgers.values():  # their background writes end before the directory goes
            ledger.wait_for_maintenance()
            ledger.wait_for_checkpoint()
            ledger.flush_mark()
    for label, _, _ in variants:
        base = f"raw pygit2 @{label}"
        res.add(
            Figure(
                base,
                "events/s",
                raw_rates[label],
                higher_is_better=True,
                note=f"{packs[label]} pack(s) at start",
            )
        )
        layout = f"raw pygit2, the ledger's trees @{label}"
        res.add(
            Figure(
                layout,
                "events/s",
                layout_rates[label],
                higher_is_better=True,
                note="8 objects per event as the ledger's format writes them (3 in the plain raw run)",
            )
        )
        appended = res.add(
            Figure(
                f"Ledger.append @{label}",
                "events/s",
                rates[label],
                higher_is_better=True,
                baseline=base,
                note=f"{per_sample} appends per sample, {packs[label]} pack(s) at start",
            )
        )
        if layout_rates[label] and appended.samples:
            res.derived.append(
                Derived(
                    f"Ledger.append @{label} / raw pygit2, the ledger's trees",
                    appended.median / statistics.median(layout_rates[label]),
                    "the same commits; what the ledger adds to its format",
                )
            )
    if opened_rates:
        res.add(
            Figure(
                f"Ledger.append @{opened}, just opened",
                "events/s",
                opened_rates,
                higher_is_better=True,
                baseline=f"raw pygit2 @{opened}",
                note=f"the first {per_sample} appends of a fresh Ledger each sample (a restarted process)",
            )
        )
    zero = rates.get("0")
    if zero:
        for label, values in rates.items():
            if label != "0" and values:
                res.derived.append(
                    Derived(
                        f"flatness: append rate @{label} / @0",
                        statistics.median(values) / statistics.median(zero),
                        "1.0 = flat",
                    )
                )
    return res
