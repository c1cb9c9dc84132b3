"""Where an idle reconciler's memory goes, step by step, in a fresh process.

    python -m bench.memsteps LEDGER_GIT UPSTREAM_GIT

Does what `App.start` does, one part at a time, and prints one JSON object: the
resident set (VmRSS, MiB) after each step. Run as its own process so nothing the
bench loaded first is counted.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast


def rss_mib(pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def main(ledger_path: str, upstream: str) -> None:
    steps: dict[str, float] = {"python": rss_mib()}
    from reconciler.app import App  # noqa: F401  (what the CLI imports)

    steps["import reconciler.app"] = rss_mib()
    from reconciler.runtime.observability import configure_logging

    configure_logging("json", "warning", sys.stderr)  # stdout is the one JSON object, nothing else
    from reconciler.controller.loop import Controller
    from reconciler.ledger.gitledger import Ledger
    from reconciler.settings import Settings
    from reconciler.upstream.credentials import resolve_upstream
    from reconciler.upstream.mirror import Mirror
    from reconciler.upstream.snapshot import SnapshotStore

    ledger = Ledger(Path(ledger_path))
    began = time.perf_counter()
    events = ledger.events()
    load = time.perf_counter() - began
    gc.collect()
    steps["ledger cache loaded"] = rss_mib()
    began = time.perf_counter()
    # the controller's own replay (chunks, old finished executions forgotten); it needs
    # nothing but the ledger, so the rest of its wiring stays empty
    controller = Controller(
        ledger=ledger, config=cast(Any, None), executors=[], context_factory=cast(Any, None)
    )
    controller.replay()
    state = controller.state
    engine = time.perf_counter() - began
    gc.collect()
    steps["engine state replayed"] = rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        mirror = Mirror(Path(tmp) / "upstream.git", resolve_upstream(Settings(upstream=upstream)))
        mirror.fetch()
        store = SnapshotStore(mirror.files(), main_branch="main", project="")
        store.restore(events)
        from reconciler.ledger.gitledger import DEFAULT_BRANCH
        from reconciler.upstream.poll import diff_branches

        changes = diff_branches(mirror.repo, store.baseline(), mirror.branches(), ignore={DEFAULT_BRANCH})
        store.fold(store.decide(changes))
        gc.collect()
        steps["upstream validated and served"] = rss_mib()
        ledger.shed_memory()  # what App.start does last
        steps["Ledger.shed_memory (start-up done)"] = rss_mib()
    print(
        json.dumps(
            {
                "rss_mib": steps,
                "events": len(events),
                "executions": len(state.executions) + sum(state.forgotten_runs.values()),
                "load_seconds": load,
                "replay_seconds": engine,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
