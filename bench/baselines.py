"""Physical limits the figures are compared with: what git itself takes for the same work."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench.ledgergen import GIT
from reconciler.settings import Settings
from reconciler.upstream.credentials import resolve_upstream
from reconciler.upstream.mirror import Mirror


def git_fetch_noop(upstream: Path, work: Path, runs: int) -> list[float]:
    """Seconds per `git fetch` of every branch into a bare mirror that is already up to date."""
    mirror = work / "git-fetch-mirror.git"
    subprocess.run([GIT, "init", "--bare", "-q", str(mirror)], check=True, timeout=60)
    fetch = [GIT, "-C", str(mirror), "fetch", "-q", "--prune", str(upstream), "+refs/heads/*:refs/heads/*"]
    subprocess.run(fetch, check=True, timeout=300)
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(fetch, check=True, timeout=300)
        samples.append(time.perf_counter() - began)
    return samples


def mirror_fetch_noop(upstream: Path, work: Path, runs: int) -> list[float]:
    """Seconds per no-op `Mirror.fetch()` (libgit2, what a poll does first) on an up-to-date mirror."""
    mirror = Mirror(work / "libgit2-mirror.git", resolve_upstream(Settings(upstream=str(upstream))))
    mirror.fetch()
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        mirror.fetch()
        samples.append(time.perf_counter() - began)
    return samples
