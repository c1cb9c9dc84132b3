"""The machine a run measured: figures mean nothing without it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _version(*cmd: str) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe() -> dict[str, Any]:
    ram = _ram_bytes()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "pygit2": getattr(pygit2, "__version__", "unknown"),
        "libgit2": pygit2.LIBGIT2_VERSION,
        "git": _version("git", "--version"),
        "prometheus": _version("prometheus", "--version"),
        "load_average_at_start": _load(),
    }


def summary(info: dict[str, Any]) -> str:
    return (
        f"{info['nproc']} CPUs ({info['cpu']}), {info['ram_gib']} GiB RAM, Python {info['python']}, "
        f"pygit2 {info['pygit2']} (libgit2 {info['libgit2']}), {info['git']}, "
        f"load average at start {info['load_average_at_start']}"
    )
