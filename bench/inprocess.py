"""The whole reconciler in this process, instrumented only by timing what it already does.

`running_app` starts `App` (as `reconciler run` does, minus the HTTP API) with its
control loop on a thread and always stops it. `LedgerProbe` wraps the app's
ledger `extend` and `append` (every append goes through one of them) to note, for each recorded event,
when it became a commit and how long the append took; `FetchProbe` notes when each
mirror fetch started. Nothing is replaced: the real methods run.
"""

from __future__ import annotations

import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from reconciler.app import App
from reconciler.core.outcomes import Outcome, Succeeded, started_event
from reconciler.executors.base import TaskContext, TaskExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings


class InstantExecutor(TaskExecutor):
    """Answers every task at once with `.started` and a passing `.finished`: an executor
    that does nothing, so what is left is the engine, the loop and the ledger."""

    name = "bench-instant"

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        etype = event.etype
        return etype is not None and etype.is_task and etype.kind == "triggered"

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        if not started:
            ctx.emit(started_event(event, self.name, now=ctx.now()))
        return Succeeded()


class Seen(NamedTuple):
    """What `LedgerProbe(keep_events=False)` keeps of a recorded event: its type and context."""

    type: str
    shkeptncontext: str


@dataclass
class Appended:
    event: KeptnEvent | Seen
    at: float
    """perf_counter() when the append returned (the event is a commit on the ledger branch)."""
    seconds: float
    """Its share of the wall time of the `extend` call that recorded it (split evenly over a batch)."""


class SeenLog:
    """What `LedgerProbe(keep_events=False)` keeps: each recorded event's type and context as
    references to one shared string each, its times in two arrays; an `Appended` is made when
    read. A list of `Appended`s cost ~6-7 of Python's blocks per event (the object, its values,
    two floats, the `Seen` tuple, its own copies of the strings), ~4,000 a round of the scale
    scenario's 50 deliveries: the bench's own records then made most of the measured process's
    growth in live blocks (bench/README.md, issue 19 part 5). Here an event costs none (the
    arrays' and lists' buffers are single large allocations, and only a new context adds a
    string)."""

    def __init__(self) -> None:
        self._types: list[str] = []
        self._contexts: list[str] = []
        self._at = array("d")
        self._seconds = array("d")

    def append(self, item: Appended) -> None:
        self._types.append(sys.intern(item.event.type))
        self._contexts.append(sys.intern(item.event.shkeptncontext))
        self._at.append(item.at)
        self._seconds.append(item.seconds)

    def __len__(self) -> int:
        return len(self._at)

    def _item(self, i: int) -> Appended:
        return Appended(Seen(self._types[i], self._contexts[i]), self._at[i], self._seconds[i])

    def __getitem__(self, index: slice) -> list[Appended]:
        return [self._item(i) for i in range(*index.indices(len(self)))]

    def __iter__(self) -> Iterator[Appended]:
        return iter(self[:])


@dataclass
class LedgerProbe:
    seen: list[Appended] | SeenLog = field(default_factory=list)
    keep_events: bool = True
    """False: keep only each event's type and context (`Seen`, in a `SeenLog`), so a long run's
    probe holds neither the recorded events nor an object per event in the process whose memory
    it measures (and `wait_for`'s predicate gets a `Seen`)."""
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        if not self.keep_events and not self.seen:
            self.seen = SeenLog()

    def install(self, app: App) -> None:
        ledger = app.ledger
        original = ledger.extend

        def extend(events: Iterable[KeptnEvent]) -> list[bool]:
            batch = list(events)
            began = time.perf_counter()
            results = original(batch)
            done = time.perf_counter()
            recorded: list[KeptnEvent | Seen] = [
                event for event, new in zip(batch, results, strict=True) if new
            ]
            if not self.keep_events:
                recorded = [Seen(e.type, e.shkeptncontext) for e in recorded]
            with self._cond:
                for event in recorded:  # a batch's wall time is split over its events: sums stay true
                    self.seen.append(Appended(event, done, (done - began) / len(recorded)))
                self._cond.notify_all()
            return results

        def append(event: KeptnEvent) -> bool:
            return extend([event])[0]

        ledger.extend = extend  # type: ignore[method-assign]
        # The app's ledger is wrapped (metrics.TimedLedger), whose `append` calls the inner
        # ledger's directly: the executors' `.started` and `.finished` come that way and would
        # pass unseen.
        ledger.append = append  # type: ignore[method-assign]

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float, start: int = 0) -> Appended | None:
        """The first appended event (from index `start`) matching, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.seen[start:]:
                    if predicate(item.event):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.5))

    def wait_beyond(self, count: int, timeout: float) -> list[Appended]:
        """The events appended after the first `count`, waiting up to `timeout` seconds for one:
        a waiter that scans only what is new (`wait_for` scans from `start` at each wake)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.seen) <= count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(min(remaining, 0.5))
            return self.seen[count:]

    def __len__(self) -> int:
        with self._cond:
            return len(self.seen)


@dataclass
class FetchProbe:
    starts: list[float] = field(default_factory=list)

    def install(self, app: App) -> None:
        mirror = app.mirror
        original = mirror.fetch

        def fetch() -> dict[str, str]:
            self.starts.append(time.perf_counter())
            return original()

        mirror.fetch = fetch  # type: ignore[method-assign]

    def first_after(self, t: float) -> float | None:
        return next((s for s in list(self.starts) if s >= t), None)


@contextmanager
def running_app(
    settings: Settings, executors: list[Any] | None = None, *, loop: bool = True, probes: Iterable[Any] = ()
) -> Iterator[App]:
    """`App.start()`, probes installed, the control loop on a thread; stopped on exit."""
    app = App(settings, executors=executors, serve_api=False).start()
    thread: threading.Thread | None = None
    try:
        for probe in probes:
            probe.install(app)
        if loop:
            thread = threading.Thread(target=app.run_forever, name="bench-control-loop", daemon=True)
            thread.start()
        yield app
    finally:
        app.stop(grace=10)
        if thread is not None:
            thread.join(timeout=15)


def bench_settings(**overrides: Any) -> Settings:
    """Settings of an in-process run: no API, local runner, no ledger push, no jitter."""
    values: dict[str, Any] = {
        "api_listen": "",
        "runner": "local",
        "ledger_push": "never",
        "poll_jitter": 0.0,
        "log_level": "info",
    }
    values.update(overrides)
    return Settings(**values)
