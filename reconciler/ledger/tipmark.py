"""The last tip this data directory saw, kept outside the ledger's ref so a vanished ref shows.

A ledger whose branch ref was deleted (by hand, by a tool, by a restore that missed a
file) looks exactly like a new, empty one: with `ledger_push: never` the reconciler
started "ready" on nothing and 78 events were gone without a word. So every ledger
writes its newest tip to `<ledger>.tip` beside the repository (`data_dir/ledger.tip`),
and refuses to load when its branch is missing or no longer contains that tip.

The file is rewritten after appends (a small JSON file replaced atomically: ~30 µs
against ~3 ms per append), at most every MARK_EVERY seconds while appends stream, and
on the first append of every process, so it lags by under a second; a lagging mark is
still an ancestor of the tip, so it never gives a false alarm. Several processes write
it (the CLI appends next to `run`); each writes a tip it saw, all on one line of history.

May import: the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MARK_EVERY = 1.0
"""Seconds between rewrites of the mark while appends stream."""
KEPT = ("signed_from",)
"""Fields a rewrite keeps from the previous mark (facts about the branch, not about its tip)."""


def mark_path(ledger: Path) -> Path:
    """`data_dir/ledger.git` -> `data_dir/ledger.tip`."""
    return ledger.with_name(ledger.stem + ".tip")


def read_marks(path: Path) -> dict[str, Any]:
    """branch -> {"tip": sha, "events": n?}; empty when there is no mark (a new data directory)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a mark half-written by hand is no evidence either way; the next append rewrites it
    branches = data.get("branches") if isinstance(data, dict) else None
    return branches if isinstance(branches, dict) else {}


def marked_tip(path: Path, branch: str) -> str | None:
    entry = read_marks(path).get(branch)
    tip = entry.get("tip") if isinstance(entry, dict) else None
    return tip if isinstance(tip, str) and len(tip) == 40 else None


_write_lock = threading.Lock()


def write_mark(path: Path, branch: str, tip: str | None, **extra: Any) -> None:
    """Record `tip` (None: forget the branch) for `branch`, atomically."""
    with _write_lock:
        branches = read_marks(path)
        if tip is None:
            branches.pop(branch, None)
        else:
            before = branches.get(branch)
            kept = {k: v for k, v in before.items() if k in KEPT} if isinstance(before, dict) else {}
            entry = {**kept, **extra, "tip": tip}  # an event count is only ever the one given now
            entry["written_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            branches[branch] = entry
        text = json.dumps({"branches": branches}, indent=1, sort_keys=True) + "\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def set_aside(path: Path, branch: str, reason: str) -> Path | None:
    """Forget the branch's mark, keeping a copy (`ledger.tip.abandoned`) that says why and when."""
    entry = read_marks(path).get(branch)
    if entry is None:
        return None
    aside = path.with_name(path.name + ".abandoned")
    record = {**entry, "branch": branch, "abandoned_at": datetime.now(UTC).isoformat(timespec="seconds")}
    record["reason"] = reason
    with aside.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    write_mark(path, branch, None)
    return aside
