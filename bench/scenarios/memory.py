"""Memory: resident set of an idle `reconciler run` with a 1,000-service upstream and a
100,000-event ledger, against a bare `python -c 'import reconciler.app'`.

The reconciler is a real subprocess (`python -m reconciler run --api-listen ''
--runner local`, defaults otherwise) on a data directory holding a copy of the
generated 100,000-event ledger; the upstream is a local bare repository with the
tutorial's files for 1,000 services on 2 stages. Once `status.json` says it is
running with the whole ledger replayed, VmRSS is read from /proc/<pid>/status
every half second (the samples); VmHWM gives the peak of start-up. Start-up time
(process start to `running`) is reported too. A step-by-step breakdown in a fresh
process (`bench.memsteps`) says where the memory goes.
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
from pathlib import Path

from bench.harness import Budget, Figure, Result
from bench.ledgergen import cached_ledger, copy_ledger
from bench.upstreamgen import REPO_ROOT, build_upstream

TITLE = "Memory of an idle reconciler (1,000 services, 100,000-event ledger) vs importing it"
BASE = "RSS of python -c 'import reconciler.app'"


def status_of(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])  # kB
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _samples(pid: int, count: int) -> list[float]:
    values = []
    for _ in range(count):
        values.append(status_of(pid)["VmRSS"] / 1024)
        time.sleep(0.5)
    return values


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


def run(budget: Budget) -> Result:
    res = Result("memory", TITLE)
    events = budget.pick(100_000, 1_000)
    services = budget.pick(1000, 50)
    count = budget.pick(10, 3)
    source = cached_ledger(events, budget.log)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        up = build_upstream(root / "upstream.git", services)
        data = root / "data"
        data.mkdir()
        copy_ledger(source, data / "ledger.git")
        res.add(Figure(BASE, "MiB", baseline_rss(count)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
        env["RECONCILER_LOG_FORMAT"] = "json"
        log = (root / "reconciler.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--upstream", str(up.path), "--data-dir", str(data),
             "--api-listen", "", "--runner", "local"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, env=env,
        )
        try:
            startup = _wait_running(proc, data / "status.json", events, root / "reconciler.log", timeout=600)
            time.sleep(2.0)  # let the first scheduled poll and the status loop settle: idle
            res.add(Figure("RSS idle reconciler", "MiB", _samples(proc.pid, count), baseline=BASE,
                           note=f"{events:,}-event ledger replayed, {services} services x 2 stages served"))
            res.add(Figure("peak RSS during start-up (VmHWM)", "MiB", [status_of(proc.pid)["VmHWM"] / 1024],
                           baseline=BASE))
            res.add(Figure("start-up to running", "s", [startup],
                           note="clone, ledger load and replay, validation of the upstream, first records"))
        finally:
            _stop(proc)
            log.close()
        steps = subprocess.run(
            [sys.executable, "-m", "bench.memsteps", str(source), str(up.path)],
            capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env, check=True,
        )
        breakdown = json.loads(steps.stdout)
    rss = breakdown["rss_mib"]
    names = list(rss)
    for before, after in itertools.pairwise(names):
        res.add(Figure(f"step: {after}", "MiB", [rss[after] - rss[before]], note="RSS growth of this step"))
    res.notes.append(
        f"breakdown process: {breakdown['events']:,} events -> {breakdown['executions']:,} sequence executions; "
        f"ledger load {breakdown['load_seconds']:.1f} s, engine replay {breakdown['replay_seconds']:.1f} s"
    )
    return res


def _wait_running(proc: subprocess.Popen[bytes], status: Path, events: int, log: Path, timeout: float) -> float:
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
