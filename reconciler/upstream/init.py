"""Turning a branch-per-directory tree (like `example-upstream/`) into a real git upstream.

The example is kept as directories so a reader sees at a glance which file lives
on which branch; the reconciler needs a git repository. Each branch becomes one
commit with a fixed author, committer and date, so the same directory always gives
the same SHAs: a tutorial, a test or a bug report can name a commit and mean the
same thing on every machine.

Branch commits are roots (no parents): every branch holds exactly the files of its
directory and nothing else, which is what `reconciler validate` and a reader of the
directory expect. May import: pygit2, `reconciler.upstream.files`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

from reconciler.upstream.files import DirectoryFiles

AUTHOR_NAME = "reconciler upstream init"
AUTHOR_EMAIL = "upstream-init@reconciler.invalid"
COMMIT_TIME = 1704067200
"""2024-01-01T00:00:00Z: any fixed instant keeps the SHAs stable; this one is easy to recognise."""

IGNORED_NAMES = frozenset({"__pycache__", ".DS_Store", ".git"})
"""Build and editor litter that must not change the commits."""


class InitError(Exception):
    """The source or destination cannot be used; the message says why and what was expected."""


@dataclass(frozen=True)
class InitResult:
    path: Path
    branches: dict[str, str]
    """Branch -> commit SHA, in the order they were written (main first)."""


def signature() -> pygit2.Signature:
    return pygit2.Signature(AUTHOR_NAME, AUTHOR_EMAIL, COMMIT_TIME, 0)


def branch_files(directory: Path) -> dict[str, tuple[bytes, bool]]:
    """Path (posix, relative) -> (content, executable) of every file under `directory`."""
    out: dict[str, tuple[bytes, bool]] = {}
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_NAMES)
        base = Path(root)
        for name in sorted(files):
            if name in IGNORED_NAMES or name.endswith(".pyc"):
                continue
            full = base / name
            info = full.lstat()
            rel = full.relative_to(directory).as_posix()
            if stat.S_ISLNK(info.st_mode):
                raise InitError(
                    f"{full} is a symbolic link; expected regular files only (links would make the commits "
                    "depend on the machine)"
                )
            if not stat.S_ISREG(info.st_mode):
                continue
            out[rel] = (full.read_bytes(), bool(info.st_mode & stat.S_IXUSR))
        for d in list(dirs):
            if (base / d).is_symlink():
                raise InitError(f"{base / d} is a symbolic link; expected regular directories only")
    return out


def write_branch(
    repo: pygit2.Repository, branch: str, files: dict[str, tuple[bytes, bool]], message: str
) -> str:
    """Commit `files` as the single, parentless commit of `branch`; returns its SHA."""
    index = pygit2.Index()
    for path, (data, executable) in sorted(files.items()):
        mode = FileMode.BLOB_EXECUTABLE if executable else FileMode.BLOB
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), mode))
    tree = index.write_tree(repo)
    sig = signature()
    oid = repo.create_commit(f"refs/heads/{branch}", sig, sig, message, tree, [])
    return str(oid)


def init_upstream(source: Path, dest: Path, *, main_branch: str = "main", bare: bool = False) -> InitResult:
    """Create a git repository at `dest` with one commit per branch directory of `source`."""
    source = Path(source)
    dest = Path(dest)
    if not source.is_dir():
        raise InitError(
            f"{source} is not a directory; expected a directory with one sub-directory per branch"
        )
    branches = list(DirectoryFiles(source).branches())
    if main_branch not in branches:
        raise InitError(
            f"{source} has no {main_branch}/ directory (found: {', '.join(branches) or 'none'}); "
            f"expected {main_branch}/ holding shipyard.yaml, plus one directory per stage"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InitError(f"{dest} already exists and is not an empty directory; expected a new path")
    contents = {name: branch_files(source / name) for name in branches}
    for name, files in contents.items():
        if not files:
            raise InitError(f"{source / name} is empty; expected the files of branch {name!r}")
    repo = pygit2.init_repository(str(dest), bare=bare, initial_head=main_branch)
    order = [main_branch, *(b for b in branches if b != main_branch)]
    result: dict[str, str] = {}
    for name in order:
        message = (
            f"{name}: initial files\n\nCreated by `reconciler upstream init` from the {name}/ directory.\n"
        )
        result[name] = write_branch(repo, name, contents[name], message)
    if not bare:
        repo.checkout(f"refs/heads/{main_branch}", strategy=pygit2.enums.CheckoutStrategy.FORCE)
    return InitResult(path=dest, branches=result)
