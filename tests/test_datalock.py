"""Two local reconcilers never both own one data directory; a crashed one never blocks a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.runtime.datalock import DataDirLock, DataDirLocked, parse_holder

HOLD = """
import sys, time
from reconciler.runtime.datalock import DataDirLock
lock = DataDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.readline()   # hold until the test closes stdin (or kills us)
lock.release()
print("released", flush=True)
"""


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_second_process_is_refused_with_the_holders_pid(
    tmp_path: Path, holder_process: subprocess.Popen[str]
) -> None:
    with pytest.raises(DataDirLocked) as info:
        DataDirLock(tmp_path).acquire()
    message = str(info.value)
    assert f"pid {holder_process.pid}" in message
    assert str(tmp_path) in message
    assert "--data-dir" in message
    assert info.value.holder is not None and info.value.holder.pid == holder_process.pid


def test_lock_of_a_killed_process_is_free_at_once(
    tmp_path: Path, holder_process: subprocess.Popen[str]
) -> None:
    holder_process.send_signal(signal.SIGKILL)
    holder_process.wait(timeout=10)
    lock = DataDirLock(tmp_path).acquire()
    try:
        holder = lock.holder()
        assert holder is not None and holder.pid == os.getpid()
    finally:
        lock.release()


def test_waiting_acquire_gets_the_lock_when_the_holder_lets_go(
    tmp_path: Path, holder_process: subprocess.Popen[str]
) -> None:
    def let_go() -> None:
        assert holder_process.stdin is not None
        holder_process.stdin.write("\n")
        holder_process.stdin.flush()

    timer = threading.Timer(0.3, let_go)
    timer.start()
    try:
        lock = DataDirLock(tmp_path, poll=0.05).acquire(timeout=20)
    finally:
        timer.cancel()
    try:
        assert lock.held
    finally:
        lock.release()


def test_two_locks_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    with DataDirLock(tmp_path), pytest.raises(DataDirLocked):
        DataDirLock(tmp_path).acquire()
    with DataDirLock(tmp_path) as again:
        assert again.held


def test_released_lock_file_names_nobody(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path / "data").acquire()
    lock.release()
    assert (tmp_path / "data" / "lock").exists()
    assert DataDirLock(tmp_path / "data").holder() is None


def test_garbled_lock_file_is_not_mistaken_for_a_holder() -> None:
    assert parse_holder("") is None
    assert parse_holder("pid=abc\nhost=x\n") is None
    holder = parse_holder("pid=42\nhost=node-1\nsince=oops\n")
    assert holder is not None and (holder.pid, holder.host, holder.since) == (42, "node-1", 0.0)
