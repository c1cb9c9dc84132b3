"""Issue 19 part 5: does a sequence-ordered layout make raw appends flat? (throwaway experiment)

Raw pygit2 commits (TreeBuilder, as `bench/scenarios/ledger.py` `_raw_layout_run`) of the same
events, 1,000 per sample, into:

- hash: the ledger's v1 layout (`events/<k0>/<k1>/<k2>/<k3>/<k>.json`, `gitledger._insert`);
- seq16: `log/<seq >> 20>/<d4>/<d3>/<d2>/<d1>/<seq:x>.json` (16-way, leaf by the last digit);
- seq256: `log/<seq >> 24>/<b2>/<b1>/<seq:x>.json` (256-way, leaf by the last byte);

at 0 events and at 100,000 (hash: the bench's cached, maintained 100,000-event ledger; seq:
the same repository with a full 100,000-entry seq tree built beside it first, every entry
naming one blob: the trees an append walks and rewrites have the sizes a 100,000-event
sequence ledger's would). Each append's time is split into reading the trees on its path
(`read`) and building/writing the new ones plus the commit and ref (`write`).

Run: .venv/bin/python -m bench.experiments.layout_flatness [runs]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

from bench.ledgergen import cached_ledger, copy_ledger
from bench.scenarios.ledger import maintained
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import DEFAULT_BRANCH, commit_message, event_key
from reconciler.ledger.measure import sample_event

PathOf = Callable[[str, int], list[str]]


def hash_path(event_id: str, seq: int) -> list[str]:
    key = event_key(event_id)
    return ["events", *key[:4], f"{key}.json"]


def seq16_path(event_id: str, seq: int) -> list[str]:
    return ["log", f"{seq >> 20:x}", *(f"{(seq >> s) & 15:x}" for s in (16, 12, 8, 4)), f"{seq:x}.json"]


def seq256_path(event_id: str, seq: int) -> list[str]:
    return ["log", f"{seq >> 24:x}", f"{(seq >> 16) & 255:02x}", f"{(seq >> 8) & 255:02x}", f"{seq:x}.json"]


class Timer:
    read = 0.0
    write = 0.0


def insert(
    repo: pygit2.Repository, root: pygit2.Tree | None, names: list[str], blob: pygit2.Oid, t: Timer
) -> pygit2.Oid:
    began = time.perf_counter()
    chain: list[pygit2.Tree | None] = []
    tree = root
    for name in names[:-1]:
        if tree is not None:
            try:
                tree = repo[tree[name].id].peel(pygit2.Tree)
            except KeyError:
                tree = None
        chain.append(tree)
    mid = time.perf_counter()
    t.read += mid - began
    tb = repo.TreeBuilder(chain[-1]) if chain[-1] is not None else repo.TreeBuilder()
    tb.insert(names[-1], blob, FileMode.BLOB)
    oid: pygit2.Oid = tb.write()
    for depth in range(len(names) - 2, -1, -1):
        parent = chain[depth - 1] if depth > 0 else root
        tb = repo.TreeBuilder(parent) if parent is not None else repo.TreeBuilder()
        tb.insert(names[depth], oid, FileMode.TREE)
        oid = tb.write()
    t.write += time.perf_counter() - mid
    return oid


def prefill(repo: pygit2.Repository, path_of: PathOf, count: int) -> pygit2.Oid:
    """A commit on the branch whose tree holds the v1 tip's tree plus `count` seq entries."""
    ref = repo.references[f"refs/heads/{DEFAULT_BRANCH}"]
    tip = ref.peel(pygit2.Commit)
    blob = repo.create_blob(b"{}")
    nested: dict[str, object] = {}
    for seq in range(count):
        names = path_of("", seq)
        node = nested
        for name in names[:-1]:
            node = node.setdefault(name, {})  # type: ignore[assignment]
        node[names[-1]] = blob

    def build(node: dict[str, object]) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        for name, child in node.items():
            if isinstance(child, dict):
                tb.insert(name, build(child), FileMode.TREE)
            else:
                tb.insert(name, child, FileMode.BLOB)  # type: ignore[arg-type]
        out: pygit2.Oid = tb.write()
        return out

    tb = repo.TreeBuilder(tip.tree)
    tb.insert("log", build(nested["log"]), FileMode.TREE)  # type: ignore[arg-type]
    sig = pygit2.Signature("raw", "raw@localhost")
    oid = repo.create_commit(None, sig, sig, "prefill", tb.write(), [tip.id])
    ref.set_target(oid, "prefill")
    return oid


def run(path: Path, path_of: PathOf, first_seq: int, events: list[KeptnEvent], t: Timer) -> float:
    repo = pygit2.Repository(str(path))
    sig = pygit2.Signature("raw", "raw@localhost")
    ref = repo.references.get(f"refs/heads/{DEFAULT_BRANCH}")
    parent = ref.peel(pygit2.Commit) if ref is not None else None
    began = time.perf_counter()
    for i, event in enumerate(events):
        blob = repo.create_blob(event.to_json().encode("utf-8"))
        tree = insert(
            repo, parent.tree if parent is not None else None, path_of(event.id, first_seq + i), blob, t
        )
        oid = repo.create_commit(None, sig, sig, commit_message(event), tree, [parent.id] if parent else [])
        w = time.perf_counter()
        if ref is None:
            ref = repo.references.create(f"refs/heads/{DEFAULT_BRANCH}", oid)
        else:
            ref.set_target(oid, "raw")
        parent = repo[oid].peel(pygit2.Commit)
        t.write += time.perf_counter() - w
    return len(events) / (time.perf_counter() - began)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    per = 1000
    source = maintained(cached_ledger(100_000, print))
    layouts: dict[str, PathOf] = {"hash": hash_path, "seq16": seq16_path, "seq256": seq256_path}
    with tempfile.TemporaryDirectory(prefix="layout-exp-") as tmp:
        root = Path(tmp)
        repos: dict[tuple[str, int], Path] = {}
        seqs: dict[tuple[str, int], int] = {}
        for name, path_of in layouts.items():
            for size in (0, 100_000):
                p = root / f"{name}-{size}"
                if size == 0:
                    pygit2.init_repository(str(p), bare=True)
                else:
                    copy_ledger(source, p)
                    if name != "hash":
                        prefill(pygit2.Repository(str(p)), path_of, size)
                repos[(name, size)] = p
                seqs[(name, size)] = size if name != "hash" else 0
        rates: dict[tuple[str, int], list[float]] = {k: [] for k in repos}
        timers: dict[tuple[str, int], Timer] = {k: Timer() for k in repos}
        next_id = 20_000_000
        for _ in range(runs):
            for key, p in repos.items():
                events = [sample_event(i) for i in range(next_id, next_id + per)]
                next_id += per
                rates[key].append(run(p, layouts[key[0]], seqs[key], events, timers[key]))
                seqs[key] += per
        for name in layouts:
            zero = statistics.median(rates[(name, 0)])
            full = statistics.median(rates[(name, 100_000)])
            line = [f"{name:7s} @0 {zero:7.0f}/s  @100k {full:7.0f}/s  flatness {full / zero:.2f}"]
            for size in (0, 100_000):
                t = timers[(name, size)]
                n = runs * per
                line.append(f"@{size}: read {t.read / n * 1e6:5.1f} us write {t.write / n * 1e6:5.1f} us")
            print("  ".join(line))
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
