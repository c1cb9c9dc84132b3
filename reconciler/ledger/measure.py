"""Measurements of the ledger for `bench/`: append throughput, cold replay time, disk use.

Measured, never asserted: the numbers depend on the machine. Each function works on
a ledger path of its own so a bench can build ledgers of any size side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import DEFAULT_BRANCH, Ledger


@dataclass(frozen=True)
class AppendRate:
    events: int
    seconds: float
    batch: int

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def sample_event(i: int) -> KeptnEvent:
    """A typical event: a task .finished with a small data block (~500 bytes of JSON)."""
    return KeptnEvent(
        id=f"bench-{i:08d}",
        source="job-executor-service",
        type="sh.keptn.event.je-test.finished",
        time="2024-05-01T10:00:00.000Z",
        shkeptncontext=f"{i // 12:08x}-0000-4000-8000-000000000000",
        triggeredid=f"trig-{i:08d}",
        data={
            "project": "fulltour",
            "stage": "qa",
            "service": "helloservice",
            "status": "succeeded",
            "result": "pass",
            "message": "Job job-executor-service-je-test-1 finished successfully",
            "test": {"start": "2024-05-01T09:58:00.000Z", "end": "2024-05-01T10:00:00.000Z"},
        },
    )


def append_rate(
    path: Path,
    count: int,
    *,
    batch: int = 1,
    start: int = 0,
    make: Callable[[int], KeptnEvent] = sample_event,
) -> AppendRate:
    """Append `count` new events (ids from `start`) in batches of `batch`; wall time of the appends."""
    ledger = Ledger(path)
    events = [make(i) for i in range(start, start + count)]
    began = time.perf_counter()
    for i in range(0, count, batch):
        chunk = events[i : i + batch]
        if batch == 1:
            ledger.append(chunk[0])
        else:
            ledger.extend(chunk)
    return AppendRate(events=count, seconds=time.perf_counter() - began, batch=batch)


def replay_seconds(path: Path, branch: str = DEFAULT_BRANCH) -> tuple[int, float]:
    """Open a ledger cold and load every event; returns (events, seconds)."""
    began = time.perf_counter()
    n = len(Ledger(path, branch))
    return n, time.perf_counter() - began


def disk_bytes(path: Path) -> int:
    """Bytes the ledger repository occupies (files only)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
