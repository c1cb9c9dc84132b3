"""localhelm for tests: a private state directory whose processes are gone after the test.

- `localhelm_dir`: a fresh state directory; at teardown `cleanup()` stops every replica
  and proxy started under it, and the test fails if any process of it survived.
- `run_localhelm(state_dir, *args, cwd=..., mode=...)`: the command line, as a job runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from reconciler.demo import localhelm


def run_localhelm(
    state_dir: Path, *args: str, cwd: Path | None = None, mode: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_LOCALHELM_")}
    env[localhelm.ENV_DIR] = str(state_dir)
    if mode is not None:
        env[localhelm.ENV_MODE] = mode
    return subprocess.run(
        [sys.executable, "-m", "reconciler.demo.localhelm", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def processes_of(state_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line points into this state directory."""
    marker = str(state_dir.resolve() / "run") + os.sep
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("status") != psutil.STATUS_ZOMBIE and any(marker in part for part in cmdline):
            found.append(proc)
    return found


@pytest.fixture
def localhelm_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "localhelm"
    state.mkdir()
    yield state
    localhelm.cleanup(state)
    left = processes_of(state)
    for proc in left:  # never leave anything behind, even when the assertion below fails
        proc.kill()
    assert not left, f"localhelm processes survived cleanup: {[p.pid for p in left]}"
