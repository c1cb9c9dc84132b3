"""Copying the ledger branch to and from the upstream without holding the history in memory.

libgit2 builds the whole pack of a push or a local fetch in-process, computing every
delta anew: the first push of a 100,000-event ledger into a local upstream took
~100 s and left the reconciler 1.2 GiB larger. Two remedies, each measured:

- Local upstreams (a path or file://) are written with the git CLI when it is
  installed: `git push` (or `git fetch` into a repository with a work tree) reuses
  the deltas already in our packs and does the work in its own process; the same
  100,000 events take ~14 s and nothing in ours.
- Any other upstream gets a first push of a long history in steps: intermediate
  commits every PUSH_STEP commits, each pushed through a temporary ref (libgit2
  pushes refs, not commits), so each pack libgit2 builds stays small.

May import: pygit2, stdlib.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pygit2
from pygit2.enums import SortMode

GIT_TIMEOUT = 900.0
"""Seconds a git CLI transfer may take (a first copy of a large ledger takes tens of seconds)."""
PUSH_STEP = 5000
"""Commits per push when a remote lacks a long stretch of the branch."""
STEP_REF = "refs/reconciler/push-step"
QUARANTINE_REF = "refs/reconciler/upstream-ledger"
"""Where the upstream's ledger branch is fetched to be verified before it may become ours."""


def git_cli() -> str | None:
    return shutil.which("git")


def local_repository(remote_url: str) -> Path | None:
    """The path of a local repository (bare or with a work tree) named by a path or file:// URL."""
    if "://" in remote_url and not remote_url.startswith("file://"):
        return None
    path = Path(remote_url[len("file://") :] if remote_url.startswith("file://") else remote_url)
    if (path / ".git").exists() or (path / "HEAD").is_file():
        return path
    return None


def _run_git(git: str, args: list[str]) -> str | None:
    """Run git; None when it succeeded, else what it said (the caller redacts)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    env.pop("GIT_DIR", None)
    try:
        done = subprocess.run(
            [git, *args], env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"git {args[1] if len(args) > 1 else ''} did not finish within {GIT_TIMEOUT:.0f} s"
    except OSError as exc:
        return f"cannot run git: {exc}"
    if done.returncode == 0:
        return None
    said = " ".join((done.stderr + " " + done.stdout).split())
    return f"git exited {done.returncode}: {said[-600:]}"


def push_with_git(git: str, ledger: Path, ref_name: str, target: Path) -> str | None:
    """`git push` of the branch into a local repository (fast-forward only, as libgit2's push)."""
    return _run_git(git, [f"--git-dir={ledger}", "push", "--quiet", str(target), f"{ref_name}:{ref_name}"])


def fetch_with_git(
    git: str, into: Path, source: Path, ref_name: str, *, target: str | None = None, force: bool = False
) -> str | None:
    """`git fetch` of the branch from `source` into `target` (default: the same ref) of the repository at
    `into`. Fast-forward only unless `force` (a quarantine ref, overwritten on purpose): the ledger
    branch of an upstream is never rewound by us."""
    git_dir = into / ".git" if (into / ".git").exists() else into
    spec = f"{'+' if force else ''}{ref_name}:{target or ref_name}"
    # no `gc --auto` in a repository others append to (the ledger packs itself; see `packs`)
    quiet = ["-c", "gc.auto=0", "-c", "maintenance.auto=0"]
    return _run_git(git, [*quiet, f"--git-dir={git_dir}", "fetch", "--quiet", "--no-tags", str(source), spec])


def local_tip(path: Path, ref_name: str) -> str | None:
    """The commit a local repository's branch points at (None: no such branch)."""
    repo = pygit2.Repository(str(path))
    try:
        ref = repo.references.get(ref_name)
        return str(ref.resolve().target) if ref is not None else None
    finally:
        repo.free()


def push_steps(repo: pygit2.Repository, tip: str, remote_tip: str | None, step: int = PUSH_STEP) -> list[str]:
    """Commits to push one after the other so no push sends more than `step` commits; the last is `tip`.

    Only for a remote that has nothing of the branch or an ancestor of `tip`; any other
    remote tip gets one push (and its refusal, if it is not a fast-forward).
    """
    start = pygit2.Oid(hex=tip)
    walker = repo.walk(start, SortMode.TOPOLOGICAL | SortMode.REVERSE)
    if remote_tip is not None:
        try:
            known = repo.get(remote_tip)
        except (ValueError, pygit2.GitError):
            known = None
        if known is None or not (remote_tip == tip or repo.descendant_of(start, known.id)):
            return [tip]
        walker.hide(known.id)
    steps: list[str] = []
    for n, commit in enumerate(walker, start=1):
        if n % step == 0:
            steps.append(str(commit.id))
    if not steps or steps[-1] != tip:
        steps.append(tip)
    return steps
