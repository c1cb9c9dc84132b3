"""Reading an upstream's files without a work tree: from a git repository or a directory.

Validation, config snapshots and executors all read "file F on branch B at commit
C". One small protocol serves a pygit2 repository (the mirror, or any local repo)
and a directory laid out like `example-upstream/` (one sub-directory per branch),
so the same checks run on both.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.core.validation import MAX_BLOB_BYTES, UpstreamFiles


class GitFiles:
    """Files of a (bare or normal) git repository, read from trees, never from a checkout."""

    TREE_CACHE = 64
    """Root trees kept per commit: validating a 1,000-service branch reads ~10,000 files, and
    parsing the commit's 1,000-entry root tree for each read was most of a poll's time."""

    TREE_ENTRIES = 1 << 16
    """...and at most this many root-tree entries in all (the newest tree is always kept). A
    kept tree holds libgit2's inflated object and its parsed entries, ~65 bytes an entry
    outside Python's heap: at 10,000 services 64 trees were ~42 MiB, which the app's one
    long-lived reader filled by ~0.65 MiB a commit (the scale bench's RSS over rounds, issue
    19 part 5). 65,536 entries (~4 MiB) still hold every stage's tree of a poll at 10,000
    services x 2 stages, and all 64 below ~1,000 services."""

    def __init__(
        self, repo: pygit2.Repository | str | Path, *, branch_filter: frozenset[str] | None = None
    ) -> None:
        self.repo = repo if isinstance(repo, pygit2.Repository) else pygit2.Repository(str(repo))
        self.branch_filter = branch_filter
        self._trees: OrderedDict[str, pygit2.Tree] = OrderedDict()
        self._tree_entries = 0
        self._trees_lock = threading.Lock()

    def branches(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in self.repo.branches.local:
            if self.branch_filter is not None and name not in self.branch_filter:
                continue
            ref = self.repo.lookup_reference(sys.intern(f"refs/heads/{name}")).resolve()  # see tree_entry
            out[name] = str(ref.target)
        return out

    def _tree(self, branch: str, commit: str | None) -> pygit2.Tree | None:
        try:
            if not commit:
                commit = str(self.repo.lookup_reference(sys.intern(f"refs/heads/{branch}")).resolve().target)
            with self._trees_lock:
                tree = self._trees.get(commit)
                if tree is not None:
                    self._trees.move_to_end(commit)
                    return tree
            obj = self.repo.get(commit)
            if obj is None:
                return None
            tree = obj.peel(pygit2.Commit).tree
        except (KeyError, ValueError, pygit2.GitError):
            return None
        with self._trees_lock:
            if commit in self._trees:
                self._trees.move_to_end(commit)  # another thread read it meanwhile
            else:
                self._trees[commit] = tree
                self._tree_entries += len(tree)
            while len(self._trees) > 1 and (
                len(self._trees) > self.TREE_CACHE or self._tree_entries > self.TREE_ENTRIES
            ):
                self._tree_entries -= len(self._trees.popitem(last=False)[1])
        return tree

    def shed_memory(self) -> None:
        """Let go of the trees read so far: the root trees kept here and libgit2's object cache
        behind this handle (`Repository.free` drops it; the handle reopens what it needs on the
        next read). Validating 10,000 services x 2 stages cold reads ~60,000 trees, and the
        cache kept them (~35 MiB of native heap) for as long as the process ran; a later poll
        reads only what changed. Call it where no other thread reads through this handle."""
        with self._trees_lock:
            self._trees.clear()
            self._tree_entries = 0
            self.repo.free()

    def read(self, branch: str, path: str, commit: str | None = None) -> bytes | None:
        tree = self._tree(branch, commit)
        if tree is None:
            return None
        try:
            obj = tree_entry(tree, path.strip("/"))
        except KeyError:
            return None
        if obj.type != pygit2.GIT_OBJECT_BLOB:
            return None
        blob = self.repo[obj.id]
        assert isinstance(blob, pygit2.Blob)
        if blob.size > MAX_BLOB_BYTES:
            return None
        data: bytes = blob.data
        return data

    def list(self, branch: str, prefix: str = "", commit: str | None = None) -> list[str]:
        tree = self._tree(branch, commit)
        if tree is None:
            return []
        prefix = prefix.strip("/")
        if prefix:
            try:
                sub = tree_entry(tree, prefix)
            except KeyError:
                return []
            if sub.type != pygit2.GIT_OBJECT_TREE:
                return [prefix]
            return sorted(f"{prefix}/{p}" for p in _walk(self.repo, self.repo[sub.id].peel(pygit2.Tree)))
        return sorted(_walk(self.repo, tree))

    def dirs(self, branch: str, commit: str | None = None) -> dict[str, str] | None:
        """Top-level directories and their tree ids (`validation.TreeFiles`): validation lists
        and re-checks only the service directories whose id changed."""
        tree = self._tree(branch, commit)
        if tree is None:
            return None
        return {str(e.name): str(e.id) for e in tree if e.type == pygit2.GIT_OBJECT_TREE}

    def tree_id(self, branch: str, path: str, commit: str | None = None) -> str | None:
        """Object id of a sub-tree or blob, to tell cheaply whether a directory changed."""
        tree = self._tree(branch, commit)
        if tree is None:
            return None
        if not path.strip("/"):
            return str(tree.id)
        try:
            return str(tree_entry(tree, path.strip("/")).id)
        except KeyError:
            return None


def tree_entry(tree: pygit2.Tree, path: str) -> pygit2.Object:
    """`tree[path]` (KeyError when absent) without its leak: pygit2 1.21 keeps a reference to
    every path object passed to `tree[...]`, `/` or `in`, and to `lookup_reference` and
    `references.get`/`[...]` (measured: 62-65 bytes per call with a new string, so validating
    2,000 service directories kept ~1 MiB more each time). The canonical interned copy is
    kept once per distinct path instead of once per call."""
    return tree[sys.intern(path)]


def _walk(repo: pygit2.Repository, tree: pygit2.Tree, base: str = "") -> Iterator[str]:
    for entry in tree:
        name = f"{base}{entry.name}"
        if entry.type == pygit2.GIT_OBJECT_TREE:
            yield from _walk(repo, repo[entry.id].peel(pygit2.Tree), name + "/")
        elif entry.type == pygit2.GIT_OBJECT_BLOB:
            yield name


@dataclass
class DirectoryFiles:
    """A directory with one sub-directory per branch (the `example-upstream/` layout).

    Commits are not meaningful here; `commit` arguments are ignored. Directories
    whose names start with `.` or `_` are not branches (sources, local profiles).
    """

    root: Path

    def branches(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for child in sorted(self.root.iterdir()):
            if child.is_dir() and not child.name.startswith((".", "_")):
                out[child.name] = f"dir:{child.name}"
        return out

    def _safe(self, branch: str, path: str) -> Path | None:
        base = (self.root / branch).resolve()
        target = (base / path.strip("/")).resolve()
        if target != base and base not in target.parents:
            return None
        return target

    def read(self, branch: str, path: str, commit: str | None = None) -> bytes | None:
        target = self._safe(branch, path)
        if target is None or not target.is_file():
            return None
        if target.stat().st_size > MAX_BLOB_BYTES:
            return None
        return target.read_bytes()

    def list(self, branch: str, prefix: str = "", commit: str | None = None) -> list[str]:
        base = (self.root / branch).resolve()
        start = self._safe(branch, prefix) if prefix else base
        if start is None or not start.exists():
            return []
        if start.is_file():
            return [prefix.strip("/")]
        return sorted(str(p.relative_to(base)) for p in start.rglob("*") if p.is_file())


def open_files(location: str | Path, *, scratch: Path | None = None) -> UpstreamFiles:
    """A path (git repository or branch directories) or a URL (cloned bare into `scratch`)."""
    text = str(location)
    path = Path(text)
    if "://" not in text or text.startswith("file://"):
        if text.startswith("file://"):
            path = Path(text[len("file://") :])
        if not path.exists():
            raise FileNotFoundError(f"upstream {text}: no such file or directory")
        if (path / "HEAD").is_file() or (path / ".git").exists():
            return GitFiles(pygit2.Repository(str(path)))
        return DirectoryFiles(path)
    target = scratch or Path(tempfile.mkdtemp(prefix="reconciler-upstream-"))
    repo = pygit2.init_repository(str(target / "upstream.git"), bare=True)
    remote = repo.remotes.create("origin", text, "+refs/heads/*:refs/heads/*")
    remote.fetch()
    return GitFiles(repo)
