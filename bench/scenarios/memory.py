"""Memory: resident set of an idle `reconciler run` with a 1,000-service upstream and a
100,000-event ledger, against a bare `python -c 'import reconciler.app'`.

The reconciler is a real subprocess (`python -m reconciler run --api-listen ''
--runner local`, defaults otherwise) on a data directory holding a copy of the
generated 100,000-event ledger; the upstream is a local bare repository with the
tutorial's files for 1,000 services on 2 stages. Once `status.json` says it is
running with the whole ledger replayed and VmRSS has stopped moving (no change
above 1 % for 3 s), VmRSS is read from /proc/<pid>/status every half second (the
samples); VmHWM gives the peak of start-up.

Two runs: with the ledger copy off (`RECONCILER_LEDGER_PUSH=never`), and with the
default (`auto`: a local upstream takes the ledger branch), measured after the
first push of the whole ledger has been logged. A step-by-step breakdown in a
fresh process (`bench.memsteps`) says where the memory goes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import Budget, Figure, Result
from bench.ledgergen import cached_count, cached_ledger, copy_ledger
from bench.upstreamgen import REPO_ROOT, BareUpstream, build_upstream

TITLE = "Memory of an idle reconciler (1,000 services, 100,000-event ledger) vs importing it"
BASE = "RSS of python -c 'import reconciler.app'"


def status_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _samples(pid: int, count: int) -> list[float]:
    values = []
    for _ in range(count):
        values.append(status_of(pid)["VmRSS"] / 1024)
        time.sleep(0.5)
    return values


def _settle(pid: int, limit: float = 60.0) -> float:
    """Wait until VmRSS stays within 1 % for 3 s (bounded); returns the seconds waited."""
    began = time.monotonic()
    window: list[int] = []
    while time.monotonic() - began < limit:
        window = [*window[-5:], status_of(pid)["VmRSS"]]
        if len(window) == 6 and max(window) - min(window) <= 0.01 * max(window):
            break
        time.sleep(0.5)
    return time.monotonic() - began


def served_ledger(events: int, log: Any = print) -> Path:
    """The generated ledger with its packs as a running reconciler's maintenance leaves them
    (`bench.scenarios.ledger.maintained`: ~10 packs, not the generator's ~100 of 1,000 events
    each). A read of a loose object (the newest events) searches every pack index first, and
    the kernel maps what it touches with its neighbours: with ~100 packs one such read left
    18 MiB of index pages resident, which no ledger that ran its own maintenance would show.
    `BENCH_LEDGER_PACKS=generated` measures the generator's packs as they are."""
    source = cached_ledger(events, log)
    if os.environ.get("BENCH_LEDGER_PACKS", "maintained") == "generated":
        return source
    from bench.scenarios.ledger import maintained

    return maintained(source)


def baseline_rss(count: int) -> list[float]:
    code = "import sys, time, reconciler.app; print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("python -c 'import reconciler.app' did not start")
        return _samples(proc.pid, count)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _log_has(log: Path, marker: str) -> bool:
    with contextlib.suppress(OSError):
        return marker in log.read_text(errors="replace")
    return False


@dataclass
class IdleRun:
    startup: float
    """Seconds from process start to `running` with the whole ledger replayed."""
    rss: list[float]
    peak: float
    push: float | None = None
    """Seconds from `running` to the first `ledger.pushed` (None: push off)."""
    replay: dict[str, object] | None = None
    """The run's `ledger_replayed` log line: events, folded, from_checkpoint, seconds."""
    resumed: dict[str, object] | None = None
    """Its `engine_state_resumed` line (a start that folded the whole ledger): seconds."""


def _log_line(log: Path, event: str = "ledger_replayed") -> dict[str, object] | None:
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    return record
    return None


def _idle_run(
    up: BareUpstream, ledger: Path, root: Path, events: int, count: int, *, push: str, restart: bool = False
) -> IdleRun:
    """`reconciler run` on a copy of `ledger` until idle; `restart`: again on the data directory
    an earlier run left (its checkpoints, its mirror) instead of a fresh copy."""
    data = root / f"data-{push}"
    if not restart:
        data.mkdir()
        copy_ledger(ledger, data / "ledger.git")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env["RECONCILER_LOG_FORMAT"] = "json"
    env["RECONCILER_LEDGER_PUSH"] = push
    env["RECONCILER_LOCAL_COMMANDS"] = "*"  # the tutorial's helm jobs: accepted, as measured before
    log_path = root / f"reconciler-{push}{'-restart' if restart else ''}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "run",
                "--upstream",
                str(up.path),
                "--data-dir",
                str(data),
                "--api-listen",
                "",
                "--runner",
                "local",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=root,
            env=env,
        )
        try:
            startup = _wait_running(proc, data / "status.json", events, log_path, timeout=600)
            pushed: float | None = None
            if push != "never":
                running = time.monotonic()
                deadline = running + 600
                while not _log_has(log_path, '"ledger.pushed"') and time.monotonic() < deadline:
                    if proc.poll() is not None:
                        raise RuntimeError(f"reconciler run exited: {log_path.read_text()[-2000:]}")
                    time.sleep(0.5)
                if not _log_has(log_path, '"ledger.pushed"'):
                    raise RuntimeError("the first ledger push was not logged within 600 s")
                pushed = time.monotonic() - running
            _settle(proc.pid)
            rss = _samples(proc.pid, count)
            return IdleRun(
                startup,
                rss,
                status_of(proc.pid)["VmHWM"] / 1024,
                pushed,
                _log_line(log_path),
                _log_line(log_path, "engine_state_resumed"),
            )
        finally:
            _stop(proc)


def run(budget: Budget) -> Result:
    res = Result("memory", TITLE)
    events = budget.pick(100_000, 1_000)
    services = budget.pick(1000, 50)
    count = budget.pick(10, 3)
    source = served_ledger(events, budget.log)
    events = cached_count(source)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        up = build_upstream(root / "upstream.git", services)
        res.add(Figure(BASE, "MiB", baseline_rss(count)))
        off = _idle_run(up, source, root, events, count, push="never")
        res.add(
            Figure(
                "RSS idle, ledger push off",
                "MiB",
                off.rss,
                baseline=BASE,
                note=f"{events:,}-event ledger replayed, {services} services x 2 stages served",
            )
        )
        res.add(Figure("peak RSS (VmHWM), ledger push off", "MiB", [off.peak], baseline=BASE))
        res.add(
            Figure(
                "start-up to running",
                "s",
                [off.startup],
                note="clone, ledger load and replay, validation of the upstream, first records",
            )
        )
        # on the data directory the first run left: its checkpoints (catalog, engine state), its mirror
        again = _idle_run(up, source, root, events, count, push="never", restart=True)
        res.add(
            Figure(
                "RSS idle, restart",
                "MiB",
                again.rss,
                baseline=BASE,
                note="the same data directory again (catalog and engine-state checkpoints), push off",
            )
        )
        res.add(
            Figure(
                "start-up to running, restart",
                "s",
                [again.startup],
                note="the same data directory again: catalog and engine-state checkpoints, the mirror",
            )
        )
        for label, run_ in (("fresh data dir", off), ("restart", again)):
            line = run_.replay or {}
            seconds = line.get("seconds")
            if isinstance(seconds, int | float):
                res.add(
                    Figure(
                        f"engine replay, {label}",
                        "s",
                        [float(seconds)],
                        note=f"{line.get('folded')} events folded, {line.get('from_checkpoint')} from the checkpoint",
                    )
                )
        seconds = (off.resumed or {}).get("seconds")
        if isinstance(seconds, int | float):
            res.add(
                Figure(
                    "engine state resumed from its own checkpoint, fresh data dir",
                    "s",
                    [float(seconds)],
                    note="part of the start-up: the checkpoint written, the folded state dropped, read back",
                )
            )
        # before the pushing run: afterwards the upstream also holds the ledger branch
        steps = subprocess.run(
            [sys.executable, "-m", "bench.memsteps", str(source), str(up.path)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO_ROOT,
            check=True,
        )
        breakdown = json.loads(steps.stdout.strip().splitlines()[-1])  # its one JSON line, whatever logged
        if not budget.quick:
            auto = _idle_run(up, source, root, events, count, push="auto")
            res.add(
                Figure(
                    "RSS idle after the first ledger push (default)",
                    "MiB",
                    auto.rss,
                    baseline=BASE,
                    note="ledger_push auto: the local upstream takes the ledger branch",
                )
            )
            res.add(
                Figure(
                    "first ledger push (running -> pushed)",
                    "s",
                    [auto.push or 0.0],
                    note=f"the whole {events:,}-event branch into the upstream, libgit2 local transport",
                )
            )
    rss = breakdown["rss_mib"]
    for before, after in itertools.pairwise(list(rss)):
        res.add(Figure(f"step: {after}", "MiB", [rss[after] - rss[before]], note="RSS growth of this step"))
    res.notes.append(
        f"breakdown process: {breakdown['events']:,} events -> {breakdown['executions']:,} sequence executions; "
        f"ledger load {breakdown['load_seconds']:.1f} s, engine replay {breakdown['replay_seconds']:.1f} s"
    )
    return res


def _wait_running(
    proc: subprocess.Popen[bytes], status: Path, events: int, log: Path, timeout: float
) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"reconciler run exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(status.read_text())
            if data.get("phase") == "running" and data.get("ledger", {}).get("events", 0) >= events:
                return time.monotonic() - began
        time.sleep(0.1)
    raise RuntimeError(f"reconciler run not running within {timeout:.0f} s: {log.read_text()[-2000:]}")
