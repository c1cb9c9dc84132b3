"""Probes and SIGTERM: what Kubernetes sees while the reconciler starts, leads, stands by and stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reconciler.runtime.lifecycle import Heartbeat, Shutdown, liveness, readiness

# -- readiness --------------------------------------------------------------------------------------


def test_leader_is_ready_only_after_replaying_the_ledger_and_fetching_the_upstream() -> None:
    early = readiness("leader", ledger_replayed=False, upstream_fetched=False)
    assert not early.ok and early.status_code == 503
    assert early.reasons == ("ledger not replayed yet", "upstream not fetched yet")
    half = readiness("single", ledger_replayed=True, upstream_fetched=False)
    assert not half.ok and half.reasons == ("upstream not fetched yet",)
    assert readiness("leader", ledger_replayed=True, upstream_fetched=True).ok


def test_standby_is_ready_so_rolling_updates_can_proceed() -> None:
    result = readiness("standby", ledger_replayed=False, upstream_fetched=False)
    assert result.ok and result.body()["role"] == "standby"


def test_unknown_leadership_and_shutdown_are_not_ready_and_say_why() -> None:
    unknown = readiness("unknown", ledger_replayed=True, upstream_fetched=True)
    assert not unknown.ok and "API server" in unknown.reasons[0]
    stopping = readiness("leader", ledger_replayed=True, upstream_fetched=True, stopping=True)
    assert not stopping.ok and stopping.reasons == ("shutting down",)
    assert stopping.body() == {
        "ok": False,
        "reasons": ["shutting down"],
        "role": "leader",
        "ledgerReplayed": True,
        "upstreamFetched": True,
        "stopping": True,
    }


def test_liveness_fails_only_for_a_control_loop_stuck_beyond_the_limit() -> None:
    now = [100.0]
    beat = Heartbeat(clock=lambda: now[0])
    assert liveness(beat.age(), max_silence=60).ok  # no loop yet (standby): alive
    beat.beat()
    now[0] += 30
    assert liveness(beat.age(), max_silence=60).ok
    now[0] += 60
    stuck = liveness(beat.age(), max_silence=60)
    assert not stuck.ok and "silent for 90s" in stuck.reasons[0]
    assert liveness(beat.age(), max_silence=None).ok


# -- shutdown steps ---------------------------------------------------------------------------------


def test_steps_run_in_order_and_a_failing_step_does_not_stop_the_rest() -> None:
    done: list[str] = []

    def boom(_: float) -> None:
        raise RuntimeError("push refused")

    shutdown = Shutdown(grace=10)
    shutdown.add("stop intake", lambda t: done.append("stop intake"))
    shutdown.add("push ledger", boom)
    shutdown.add("release lease", lambda t: done.append("release lease"))
    report = shutdown.run()
    assert done == ["stop intake", "release lease"]
    assert [(s.name, s.outcome) for s in report.steps] == [
        ("stop intake", "done"),
        ("push ledger", "failed"),
        ("release lease", "done"),
    ]
    assert "push refused" in report.steps[1].error
    assert report.exit_code == 1


def test_a_hanging_step_cannot_take_the_time_reserved_for_releasing_the_lease() -> None:
    released = threading.Event()
    never = threading.Event()
    shutdown = Shutdown(grace=1.5)
    shutdown.add("flush ledger", lambda t: never.wait(30))
    shutdown.add("release lease", lambda t: released.set(), reserve=0.5)
    report = shutdown.run()
    never.set()
    assert released.is_set()
    assert [(s.name, s.outcome) for s in report.steps] == [
        ("flush ledger", "timed out"),
        ("release lease", "done"),
    ]
    assert report.seconds < shutdown.grace + 1.0  # bounded by the grace period, not by the hang


def test_each_step_is_told_its_budget() -> None:
    budgets: list[float] = []
    shutdown = Shutdown(grace=10)
    shutdown.add("first", budgets.append)
    shutdown.add("last", budgets.append, reserve=3)
    shutdown.run()
    assert 6.0 < budgets[0] <= 7.0  # 10 s minus the 3 s kept for "last"
    assert 9.0 < budgets[1] <= 10.0


def test_secrets_in_step_errors_are_redacted() -> None:
    from reconciler.base.redact import register_secrets

    register_secrets(["s3cr3t-token-value"])

    def fail(_: float) -> None:
        raise RuntimeError("push to https://user:s3cr3t-token-value@git.example/repo failed")

    report = Shutdown(grace=5).add("push ledger", fail).run()
    assert "s3cr3t-token-value" not in report.steps[0].error


# -- signals, in a real process -----------------------------------------------------------------------

CHILD = """
import sys, threading, time
from pathlib import Path
from reconciler.runtime.lifecycle import Shutdown
out = Path(sys.argv[1]); hang = sys.argv[2] == "hang"
def note(text):
    with out.open("a") as f:
        f.write(text + "\\n")
shutdown = Shutdown(grace=float(sys.argv[3]))
shutdown.add("stop intake", lambda t: note("stop intake"))
shutdown.add("flush ledger", lambda t: time.sleep(60) if hang else note("flush ledger"))
shutdown.add("release lease", lambda t: note("release lease"), reserve=0.5)
shutdown.install()
print("ready", flush=True)
while not shutdown.requested.wait(0.05):
    pass
note("signal " + shutdown.signal_name)
sys.exit(shutdown.run().exit_code)
"""


def start_child(tmp_path: Path, mode: str, grace: float) -> tuple[subprocess.Popen[str], Path]:
    out = tmp_path / "steps.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), mode, str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_runs_every_step_and_exits_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    proc, out = start_child(tmp_path, "ok", grace=10)
    try:
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert out.read_text().splitlines() == [
        f"signal {sig.name}",
        "stop intake",
        "flush ledger",
        "release lease",
    ]


def test_sigterm_exits_within_the_grace_period_even_when_a_step_hangs(tmp_path: Path) -> None:
    proc, out = start_child(tmp_path, "hang", grace=2)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 1  # not clean: the flush timed out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert out.read_text().splitlines() == ["signal SIGTERM", "stop intake", "release lease"]


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    proc, out = start_child(tmp_path, "hang", grace=60)
    try:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "stop intake" not in (out.read_text() if out.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert "release lease" not in out.read_text()
