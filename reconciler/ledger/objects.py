"""Building one batch's git objects (event blob, the trees it rewrites, the commit) for one pack.

Objects are hashed and held here until the batch is complete (`take_pending`); the ledger
then writes them as one pack (`packs.BatchPacks`) before it moves the branch. With
`loose=True` they are written as loose files instead, as ledgers before packs-per-append did
(kept for the tests that build such ledgers: compaction still packs what they left).

Why not pygit2's `TreeBuilder` and `create_commit` on the repository handle: an append
writes 8 objects, and through a repository libgit2 spends ~20 system calls on each, of
which the write itself needs 8. Every write of a new object first looks for it
("freshen"), misses, and rescans the pack directory (stat, multi-pack-index, readdir);
and every id a tree or commit names is read back from disk first to check it exists
(strict object creation). `strace` of 200 appends: 40 `openat` per append, 16 `getdents`.

In loose mode objects go through an object database that holds only the loose backend: the
freshen looks at one file and there is no pack directory to rescan. Trees and commits
are serialized here (git's tree and commit formats; identical ids to libgit2's own, which
the tests check) from entries this writer already knows: those it read from the parent's
trees (through the full repository, so packed ones too) and those it just wrote, kept in a
small cache so an append does not read back the trees the previous one wrote. Nothing
written can name a missing object, which is what strict creation would check: every id
was read from the repository or returned by this writer's own write; and libgit2
verifies an object's hash whenever it reads one.

Every tree above the leaves is also kept by where it sits (`_above`: the path's prefix ->
its current id and content), for as long as the writer lives: an append then reads from the
repository only the leaf its id hashes to. An LRU by id alone (`_trees`) could not keep them:
at 100,000 events each append touches a random one of 4,096 third-level trees, and each
append's six new trees pushed the ones it would need later out of 256 entries, so an append
read 2.8 trees back from the pack (bench/README, issue 19 part 5),
the part of an append that grew with the ledger. Kept as content, not parsed (a shard tree of
16 entries is ~450 bytes; parsed ~3 KiB): the ledger's layout has at most 1 + 1 + 16 + 256 +
4,096 trees above its leaves, so this holds at most ~2.5 MiB however long the ledger gets.
An entry whose id is not what the tip names (another writer moved the branch) is simply
replaced, after a read; ids name content, so a kept tree is never wrong, only unused. A kept
tree is rewritten in place when the directory an append descends into is already in it
(every level above the leaves, once a ledger has a few thousand events): only that entry's
20-byte id changes, so its place in git's order does not change, and the tree is neither parsed
nor sorted again, work that grew with the trees' fullness (16 entries a level at 100,000).

An object that is already packed but not loose is written loose again (a CAS retry
after another process compacted): a duplicate, harmless in git; the next compaction packs
it. The temporary file and rename are libgit2's own, so a reader never sees half an object.

May import: pygit2 and the standard library.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, ObjectType

EVENTS_DIR = b"events"
README_NAME = b"README.md"
TREE = int(FileMode.TREE)
BLOB = int(FileMode.BLOB)
TREES_KEPT = 256
"""Tree entry lists remembered by id (~1.5 KiB each at most): an append reads back the root
and events trees the previous one wrote, and shard trees it shares a key prefix with."""
COMMITS_KEPT = 16
"""Root tree ids of the commits written last: the next append builds on one of them."""
WRITTEN_KEPT = 16 * 1024
"""Objects written since the last compaction whose content is kept for it (~300 bytes each,
so at most ~5 MiB; a compaction per thousand appends packs 8,000), so it packs them without
reading every loose file back. Beyond it (compaction off, or done by another process) the
rest is read from disk."""

Entries = Mapping[bytes, tuple[int, bytes]]
"""A tree's entries: raw name -> (file mode, raw object id)."""
TYPE_NAMES = {
    int(ObjectType.COMMIT): b"commit",
    int(ObjectType.TREE): b"tree",
    int(ObjectType.BLOB): b"blob",
    int(ObjectType.TAG): b"tag",
}
"""Object type -> the name git hashes in the object's header."""


def object_id(kind: int, data: bytes) -> bytes:
    """git's raw id of an object: the SHA-1 of its header ("<type> <size>\\0") and content."""
    return hashlib.sha1(b"%s %d\0" % (TYPE_NAMES[kind], len(data)) + data).digest()


def tree_bytes(entries: Entries) -> bytes:
    """A git tree object's content: entries sorted as git sorts them (a directory's name
    compares as if it ended in `/`), each `<octal mode> <name>\\0<20-byte id>`."""
    ordered = sorted(entries.items(), key=lambda item: item[0] + b"/" if item[1][0] == TREE else item[0])
    return b"".join(b"%o %s\0%s" % (mode, name, raw) for name, (mode, raw) in ordered)


def signature_line(sig: pygit2.Signature) -> bytes:
    """`Name <email> <seconds> <+hhmm>`, as libgit2 writes an author or committer."""
    offset = sig.offset
    sign = b"-" if offset < 0 else b"+"
    offset = abs(offset)
    return b"%s <%s> %d %s%02d%02d" % (sig.raw_name, sig.raw_email, sig.time, sign, offset // 60, offset % 60)


def commit_bytes(tree: str, parents: Sequence[str], sig: pygit2.Signature, message: bytes) -> bytes:
    """A git commit object's content, as `create_commit` writes it (no encoding header)."""
    who = signature_line(sig)
    head = b"tree %s\n" % tree.encode() + b"".join(b"parent %s\n" % p.encode() for p in parents)
    return head + b"author " + who + b"\ncommitter " + who + b"\n\n" + message


def parse_tree(data: bytes) -> dict[bytes, tuple[int, bytes]]:
    """A tree object's entries from its content (the inverse of `tree_bytes`)."""
    out: dict[bytes, tuple[int, bytes]] = {}
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        nul = data.index(b"\0", space)
        out[data[space + 1 : nul]] = (int(data[at:space], 8), data[nul + 1 : nul + 21])
        at = nul + 21
    return out


_DIR_MODE = b"%o " % TREE


def _locate(data: bytes, name: bytes) -> tuple[int, int] | None:
    """Where the entry `name` is in a tree's content: (its first byte, its id's first byte).

    Walks the entries' boundaries (a mode has no space, a name no NUL, an id is 20 bytes), so
    bytes inside an id are never taken for a name."""
    key = b" " + name + b"\0"
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        if data.startswith(key, space):
            return at, space + len(key)
        at = data.index(b"\0", space) + 21
    return None


def _key(path: Sequence[bytes], depth: int) -> bytes:
    """Where the tree at `depth` on `path` sits (the root: b""): its directories joined by "/"."""
    return b"/".join(path[:depth])


class ObjectWriter:
    """Builds the ledger's objects (held for one pack, or written loose), reading existing
    trees through `repo` when not known."""

    def __init__(self, repo: pygit2.Repository, objects_dir: Path, *, loose: bool = False) -> None:
        self.repo = repo
        self.loose = loose
        self.odb = pygit2.Odb()
        # the backend libgit2 itself opens for a repository: default compression (fast), no fsync
        self.odb.add_backend(pygit2.OdbBackendLoose(str(objects_dir), -1, False), 1)
        self._trees: OrderedDict[bytes, dict[bytes, tuple[int, bytes]]] = OrderedDict()
        self._above: dict[bytes, tuple[bytes, bytes]] = {}
        self._roots: OrderedDict[bytes, bytes] = OrderedDict()
        self._written: dict[bytes, tuple[int, bytes]] = {}
        self._pending: dict[bytes, tuple[int, bytes]] = {}

    def write(self, kind: ObjectType, data: bytes) -> bytes:
        """Raw id of the object: held for the batch's pack, or written loose (or found loose already)."""
        if not self.loose:
            raw = object_id(int(kind), data)
            self._pending[raw] = (int(kind), data)
            return raw
        oid: pygit2.Oid = self.odb.write(kind, data)
        if len(self._written) < WRITTEN_KEPT:
            self._written[oid.raw] = (int(kind), data)
        return oid.raw

    def take_pending(self) -> list[tuple[bytes, int, bytes]]:
        """(raw id, type, content) of every object built since the last call, for one pack; the
        caller writes them before anything names them (the ref, a later batch)."""
        pending, self._pending = self._pending, {}
        return [(raw, kind, data) for raw, (kind, data) in pending.items()]

    def drop_pending(self) -> None:
        """Forget a batch that will not be written (its build failed half-way)."""
        for raw in self._pending:
            self._trees.pop(raw, None)
            self._roots.pop(raw, None)
        self._pending = {}

    def take_written(self) -> dict[bytes, tuple[int, bytes]]:
        """Type and content of the objects written since the last call (for the compaction that
        packs them; a pack checks each id against its content, so a stale entry cannot slip in)."""
        written, self._written = self._written, {}
        return written

    def blob(self, data: bytes) -> bytes:
        return self.write(ObjectType.BLOB, data)

    def entries(self, tree: bytes) -> dict[bytes, tuple[int, bytes]]:
        """A tree's entries (do not change the dict: it is shared by the cache)."""
        known = self._trees.get(tree)
        if known is not None:
            return known
        held = self._pending.get(tree)  # built in this batch, dropped from the cache by a long batch
        parsed = parse_tree(held[1] if held is not None else self._read_tree(tree))
        self._remember(tree, parsed)
        return parsed

    def _content(self, tree: bytes, at: bytes) -> bytes:
        """The content of the tree above the leaves at `at` (`_key`): kept, built in this
        batch, or read from the repository (and then kept)."""
        kept = self._above.get(at)
        if kept is not None and kept[0] == tree:
            return kept[1]
        held = self._pending.get(tree)
        data = held[1] if held is not None else self._read_tree(tree)
        self._above[at] = (tree, data)
        return data

    def _read_tree(self, tree: bytes) -> bytes:
        kind, data = self.repo.odb.read(pygit2.Oid(raw=tree))
        if int(kind) != int(ObjectType.TREE):
            raise ValueError(f"object {tree.hex()} is a {TYPE_NAMES.get(int(kind), kind)!r}, not a tree")
        return data

    def tree(self, entries: dict[bytes, tuple[int, bytes]], at: bytes | None = None) -> bytes:
        data = tree_bytes(entries)
        raw = self.write(ObjectType.TREE, data)
        if at is not None:
            self._above[at] = (raw, data)
        self._remember(raw, entries)
        return raw

    def _remember(self, tree: bytes, entries: dict[bytes, tuple[int, bytes]]) -> None:
        self._trees[tree] = entries
        if len(self._trees) > TREES_KEPT:
            self._trees.popitem(last=False)

    def _descend(
        self, root: bytes | None, path: Sequence[bytes]
    ) -> tuple[list[bytes | None], list[tuple[int, int] | None], bytes | None]:
        """The kept trees on `path`'s directories from `root` down (None past a missing one),
        where each names the next (`_locate`), and the id of the leaf directory (None if absent)."""
        contents: list[bytes | None] = []
        places: list[tuple[int, int] | None] = []
        current = root
        for depth, name in enumerate(path[:-1]):
            data = self._content(current, _key(path, depth)) if current is not None else None
            where = _locate(data, name) if data is not None else None
            contents.append(data)
            places.append(where)
            current = data[where[1] : where[1] + 20] if data is not None and where is not None else None
        return contents, places, current

    def child(self, root: bytes | None, path: Sequence[bytes]) -> bytes | None:
        """Raw id of the entry at `path` under the root tree `root`, None when a step is missing."""
        leaf = self._descend(root, path)[2]
        entry = self.entries(leaf).get(path[-1]) if leaf is not None else None  # the leaf is not kept
        return entry[1] if entry is not None else None

    def root_of(self, commit: bytes) -> bytes:
        """A commit's root tree id (remembered for the commits this writer wrote)."""
        known = self._roots.get(commit)
        if known is not None:
            return known
        held = self._pending.get(commit)
        if held is not None:
            return bytes.fromhex(held[1][5:45].decode())
        tree: bytes = self.repo[pygit2.Oid(raw=commit)].peel(pygit2.Commit).tree_id.raw
        return tree

    def insert(self, root: bytes | None, path: Sequence[bytes], blob: bytes, readme: bytes) -> bytes:
        """The new root tree: `root` plus the file at `path` (directories, then its name).

        Rewrites one tree per level, as `gitledger._insert` does with TreeBuilders; a new
        ledger's first root also gets a README with the content `readme`.
        """
        contents, places, current = self._descend(root, path)
        leaf = dict(self.entries(current)) if current is not None else {}
        leaf[path[-1]] = (BLOB, blob)
        oid = self.tree(leaf)
        for depth in range(len(path) - 2, -1, -1):
            data, where, at = contents[depth], places[depth], _key(path, depth)
            if data is not None and where is not None and data.startswith(_DIR_MODE, where[0]):
                # the directory is there: only its id changes, so its place in git's order stays
                changed = data[: where[1]] + oid + data[where[1] + 20 :]
                oid = self.write(ObjectType.TREE, changed)
                self._above[at] = (oid, changed)
                continue
            entries = parse_tree(data) if data is not None else {}
            if depth == 0 and data is None:
                entries[README_NAME] = (BLOB, self.blob(readme))
            entries[path[depth]] = (TREE, oid)
            oid = self.tree(entries, at)
        return oid

    def commit(self, tree: bytes, parents: Sequence[bytes], sig: pygit2.Signature, message: str) -> bytes:
        body = commit_bytes(tree.hex(), [p.hex() for p in parents], sig, message.encode("utf-8"))
        commit = self.write(ObjectType.COMMIT, body)
        self._roots[commit] = tree
        if len(self._roots) > COMMITS_KEPT:
            self._roots.popitem(last=False)
        return commit
