"""Keeping the ledger's pack count logarithmic: merge small packs in the background.

The ledger packs its loose objects every thousand appends, one pack each time, and
libgit2 looks through every pack index on each object write and lookup: at 100,000
events (100 packs) appends ran at 0.57x the rate of an empty ledger. A geometric
merge (each pack at least twice the objects of the next smaller one, Git's
`repack --geometric=2`) keeps about log2(n) packs, and each object is rewritten
about log2(n) times over the ledger's life instead of all of them on every repack.

Safe with concurrent appends and readers, in this process or others: a merge only
writes a new pack (renamed into place complete) and then deletes packs whose objects
it holds; loose objects are deleted only once packed (`git prune-packed`), so
nothing an append or a reader may look for is ever missing (libgit2 rescans the pack
directory on a miss, and keeps packs it has open readable after deletion). One merge
at a time per repository: an exclusive `flock` on `<repository>/reconciler-merge.lock`,
which the kernel drops when its process dies, so no stale lock is ever broken (breaking
one by a check-then-delete let a third process delete a lock just taken by a second,
and two merges ran at once). Runs in a thread (the
git CLI when installed, else libgit2's pack builder, which releases the GIL), so
appends never wait for it.

The compaction's own packs (every thousand appends) are written here too, by
`write_pack`: whole objects, no delta search, since a merge computes the deltas later.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import ObjectType

from reconciler.base.crashpoints import crash_point
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.ledger.objects import TYPE_NAMES, object_id

log = get_logger("reconciler.ledger")

MERGE_ABOVE = 8
"""Merge when the ledger has more packs than this (a geometric merge leaves ~log2(n))."""
FANIN = 4
"""Packs of one tier `BatchPacks` merges into one: 4 keeps a thousand appends' packs to at most
3 per tier over 5 tiers (15), each object rewritten 5 times (from memory, ~3 KB an append)."""
HOLD_TIERS = 6
"""Tiers held in memory (4**6 = 4,096 batches, a few MiB); a pack merged beyond them is let go
(only when compaction is off or rarer than that: it rolls everything up first otherwise)."""
FOREIGN_BELOW = 4096
"""Packs with fewer objects that this process did not write (another process's batches: a CLI
append, a writer that exited) are rolled into the next compaction, so they do not pile up."""
DOOM_AFTER = 2
"""Writes (appends) a merged-away pack stays on disk after the merge that made it redundant."""
FACTOR = 2
MERGE_TIMEOUT = 1800.0
"""A merge of the whole 100,000-event ledger takes ~12 s with git; this bounds a stuck one."""
LOCK_NAME = "reconciler-merge.lock"
"""In the repository's directory (not objects/pack, where git would count it as garbage);
the file stays, only its `flock` is taken and released."""
_IDX_MAGIC = b"\xfftOc"


@dataclass(frozen=True)
class Pack:
    name: str
    """`pack-<sha>` (the .pack, .idx and .rev files share it)."""
    objects: int


def packs(pack_dir: Path) -> list[Pack]:
    """Complete packs (with their index), smallest first."""
    out = []
    for idx in pack_dir.glob("pack-*.idx"):
        if not idx.with_suffix(".pack").is_file():
            continue
        try:
            out.append(Pack(idx.stem, index_object_count(idx)))
        except (OSError, ValueError):
            continue  # being written or deleted right now
    return sorted(out, key=lambda p: (p.objects, p.name))


def index_object_count(idx: Path) -> int:
    """Objects in a pack, from its v2 index's fan-out table (the last entry is the total)."""
    with idx.open("rb") as f:
        head = f.read(8 + 256 * 4)
    if len(head) < 8 + 256 * 4 or head[:4] != _IDX_MAGIC or struct.unpack(">I", head[4:8])[0] != 2:
        raise ValueError(f"{idx}: not a version 2 pack index")
    count: int = struct.unpack(">I", head[-4:])[0]
    return count


def index_object_ids(idx: Path) -> list[bytes]:
    """Raw ids of every object a pack holds (v2 index: sorted after the fan-out table)."""
    count = index_object_count(idx)
    with idx.open("rb") as f:
        f.seek(8 + 256 * 4)
        raw = f.read(20 * count)
    if len(raw) != 20 * count:
        raise ValueError(f"{idx}: truncated pack index")
    return [raw[i : i + 20] for i in range(0, len(raw), 20)]


"""Object types a pack holds whole, by git's numbers (libgit2's `ObjectType`)."""
_LARGE_OFFSET = 0x80000000


def _entry_header(kind: int, size: int) -> bytes:
    """A pack entry's type and size: 3 bits of type, then the size 4 bits first, 7 bits a byte after."""
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    out = bytearray()
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


Entry = tuple[bytes, int, bytes]
"""One object as a pack holds it whole: raw id, crc32 of the chunk, the chunk (entry header +
zlib stream). Kept by `BatchPacks` so a merge concatenates chunks instead of compressing again."""


def encode_objects(objects: Iterable[tuple[bytes, int, bytes]]) -> list[Entry]:
    """Objects (raw id, type, content) as pack entries, each id checked against its content, so
    a pack can never hold an object under a wrong name; duplicates are dropped."""
    out: list[Entry] = []
    seen: set[bytes] = set()
    for raw, kind, data in objects:
        if raw in seen:
            continue
        if kind not in TYPE_NAMES:
            raise ValueError(f"object {raw.hex()}: type {kind} cannot be packed whole")
        if object_id(kind, data) != raw:
            raise ValueError(f"object {raw.hex()}: its content does not hash to its id")
        seen.add(raw)
        chunk = _entry_header(kind, len(data)) + _deflate(data, kind)
        out.append((raw, zlib.crc32(chunk), chunk))
    return out


SMALL_OBJECT = 4096
"""Objects up to this size are compressed with a 512-byte window and the smallest state."""
TREE_KIND = int(ObjectType.TREE)


def _deflate(data: bytes, kind: int) -> bytes:
    """Level 1 for events and commits (level 6 saves <1 %). For the ledger's objects (trees of at
    most 16 entries, events of a few hundred bytes) zlib's default 32 KiB window and 128 KiB of
    state are set up and cleared for nothing: 65 us an object where a 512-byte window takes 5.
    Trees are stored (level 0): they are mostly 20-byte ids, so level 1 saved 8 % of a full
    shard tree (448 -> 412 bytes) for 13.6 us against 1.0, and full trees are what a long
    ledger's appends rewrite (by those sizes ~150-200 bytes more pack an append at 100,000
    events, an estimate). Any window and level is a valid zlib stream for git and
    libgit2; a merge that deltifies recompresses."""
    if kind == TREE_KIND:
        packer = zlib.compressobj(0, zlib.DEFLATED, 9, 1)
    elif len(data) > SMALL_OBJECT:
        return zlib.compress(data, 1)
    else:
        packer = zlib.compressobj(1, zlib.DEFLATED, 9, 1)
    return packer.compress(data) + packer.flush()


def write_pack(pack_dir: Path, objects: Iterable[tuple[bytes, int, bytes]]) -> str | None:
    """Write `objects` (raw id, type, content) as one pack of whole objects and its v2 index,
    each to a temporary file renamed into place, the pack first (readers find packs by their
    index). Returns the pack's name (`pack-<sha>`), None when there was nothing to write.

    Why not libgit2's pack builder: it searches deltas for every object (a window of 10),
    which made compaction a third of an append's CPU (1.4 s per thousand appends on tmpfs);
    these packs are the newest and smallest, and the geometric merge that rolls them into
    larger ones (`git repack`, or the pack builder without git) computes the deltas then.
    """
    return write_entries(pack_dir, encode_objects(objects))


def write_entries(pack_dir: Path, chunks: Iterable[Entry]) -> str | None:
    """`write_pack` of objects already encoded (`encode_objects`); a repeated id is written once."""
    entries: list[tuple[bytes, int, int]] = []  # raw id, offset, crc32
    seen: set[bytes] = set()
    parts: list[bytes] = []
    size = 0
    for raw, crc, chunk in chunks:
        if raw in seen:
            continue
        seen.add(raw)
        entries.append((raw, size, crc))
        parts.append(chunk)
        size += len(chunk)
    if not entries:
        return None
    head = b"PACK" + struct.pack(">II", 2, len(entries))
    body = b"".join(parts)
    pack_sha = hashlib.sha1(head + body).digest()
    entries.sort()
    firsts = [raw[0] for raw, _, _ in entries]
    fanout = [bisect.bisect_right(firsts, i) for i in range(256)]  # objects whose first byte <= i
    small: list[int] = []
    large: list[int] = []
    for _, offset, _ in entries:
        offset += len(head)
        if offset < _LARGE_OFFSET:
            small.append(offset)
        else:
            small.append(_LARGE_OFFSET | len(large))
            large.append(offset)
    index = bytearray(_IDX_MAGIC + struct.pack(">I", 2))
    index += struct.pack(">256I", *fanout)
    index += b"".join(raw for raw, _, _ in entries)
    index += struct.pack(f">{len(entries)}I", *(crc for _, _, crc in entries))
    index += struct.pack(f">{len(small)}I", *small)
    index += struct.pack(f">{len(large)}Q", *large)
    index += pack_sha
    index += hashlib.sha1(index).digest()
    name = f"pack-{pack_sha.hex()}"
    _write_new(pack_dir / f"{name}.pack", (head, body, pack_sha))
    _write_new(pack_dir / f"{name}.idx", (bytes(index),))
    return name


def delete_pack(pack_dir: Path, name: str) -> None:
    """A pack's files, the index first (so no reader finds an index without its pack)."""
    for suffix in (".idx", ".pack", ".rev", ".bitmap"):
        with contextlib.suppress(FileNotFoundError):
            (pack_dir / f"{name}{suffix}").unlink()


@dataclass
class _Held:
    name: str
    entries: list[Entry]


class BatchPacks:
    """This process's newest packs: one per batch of appends, merged in memory as they pile up.

    Why packs and not loose objects: on this ext4 disk, deleting the 8,000 loose files a
    thousand appends leave (when compaction packs them) made the next thousand appends ~5x
    slower; a pack per append is 2 files instead of 8, and packs a few appends old are merged
    and deleted before the kernel has written most of them out. The packs are kept in tiers:
    FANIN packs of one tier become one of the next (from the chunks held here: no
    compression, no reading back), so this process never has more than about
    (FANIN - 1) x log_FANIN(appends) packs of its own, and each object is rewritten once per
    tier. `take_all` hands everything over to the compaction, which writes one pack of it.

    A merged pack is renamed into place before its sources go, and the sources are deleted
    DOOM_AFTER writes later: a reader (any process) that listed the pack directory before the
    merge and looks an object up in a source still finds it, and one that misses rescans the
    directory (libgit2 does on every miss) and finds the merged pack.
    """

    def __init__(self, pack_dir: Path, *, fanin: int = FANIN) -> None:
        self.pack_dir = pack_dir
        self.fanin = fanin
        self._tiers: list[list[_Held]] = []
        self._doomed: list[tuple[int, list[str]]] = []
        self._writes = 0

    @property
    def held(self) -> int:
        """Packs of this process on disk (held or awaiting deletion): not the merger's to count."""
        return sum(len(t) for t in self._tiers) + sum(len(names) for _, names in self._doomed)

    def write(self, objects: Iterable[tuple[bytes, int, bytes]]) -> str | None:
        """One batch's objects as a pack, renamed into place when this returns; then merge tiers
        that are full and delete what earlier merges made redundant."""
        entries = encode_objects(objects)
        name = write_entries(self.pack_dir, entries)
        if name is None:
            return None
        self._writes += 1
        self._add(0, _Held(name, entries))
        self._collect(everything=False)
        return name

    def _add(self, tier: int, pack: _Held) -> None:
        while len(self._tiers) <= tier:
            self._tiers.append([])
        self._tiers[tier].append(pack)
        if len(self._tiers[tier]) < self.fanin:
            return
        sources = self._tiers[tier]
        self._tiers[tier] = []
        entries = [e for p in sources for e in p.entries]
        name = write_entries(self.pack_dir, entries)
        assert name is not None
        self._doomed.append((self._writes, [p.name for p in sources if p.name != name]))
        if tier + 1 < HOLD_TIERS:
            self._add(tier + 1, _Held(name, entries))
        # else: FANIN**HOLD_TIERS batches (compaction off): an ordinary pack now, for the merger

    def known(self) -> set[str]:
        """Names of every pack this process wrote that is still on disk (held or doomed)."""
        return {p.name for tier in self._tiers for p in tier} | {
            n for _, names in self._doomed for n in names
        }

    def take_all(self) -> tuple[list[Entry], list[str]]:
        """Every object held (for one pack written by the caller) and the packs that hold them now."""
        entries = [e for tier in self._tiers for p in tier for e in p.entries]
        names = [p.name for tier in self._tiers for p in tier]
        self._tiers = []
        return entries, names

    def forget(self, names: list[str]) -> None:
        """Packs now redundant (their objects are in a newer pack): deleted with the doomed ones."""
        self._doomed.append((self._writes - DOOM_AFTER, names))

    def _collect(self, *, everything: bool) -> None:
        keep: list[tuple[int, list[str]]] = []
        for at, names in self._doomed:
            if everything or self._writes - at >= DOOM_AFTER:
                for n, name in enumerate(names):
                    if n == len(names) // 2 and everything:
                        crash_point("ledger.mid-prune")
                    delete_pack(self.pack_dir, name)
            else:
                keep.append((at, names))
        self._doomed = keep

    def collect_all(self) -> None:
        """Delete every pack made redundant, now (compaction: a merged pack is already in place)."""
        self._collect(everything=True)


def _write_new(path: Path, parts: tuple[bytes, ...]) -> None:
    """`path` written whole through a temporary file and a rename (read-only, as git leaves packs)."""
    tmp = path.with_name(f"tmp_{path.name}_{os.getpid()}_{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def geometric_rollup(sizes: list[int], factor: int = FACTOR) -> int:
    """How many of the smallest packs (sizes ascending) to merge into one so every pack left
    holds at least `factor` times the objects of the next smaller one; 0 or 1: nothing to do."""
    rollup = 0
    total = 0
    for i, size in enumerate(sizes):
        total += size
        if i + 1 < len(sizes) and sizes[i + 1] < factor * total:
            rollup = i + 2
    return rollup


class PackMerger:
    """Starts a background merge when a repository passes MERGE_ABOVE packs; one at a time."""

    def __init__(self, path: Path, *, merge_above: int = MERGE_ABOVE, git: str | None = None) -> None:
        self.path = Path(path)
        self.pack_dir = self.path / "objects" / "pack"
        self.merge_above = merge_above
        self.git = git if git is not None else shutil.which("git")
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self.merges = 0
        self.generation = 0
        """Bumped after every merge attempt; a holder of a repository handle reopens it when it changed."""
        self.last_error: str | None = None

    def pack_count(self) -> int:
        return sum(1 for _ in self.pack_dir.glob("pack-*.pack"))

    def maybe_merge(self, ignore: int = 0) -> bool:
        """Start a merge in the background when due and none is running; True when started.
        `ignore`: packs the caller merges itself (`BatchPacks.held`), not counted."""
        if not self.merge_above or self.pack_count() - ignore <= self.merge_above:
            return False
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._thread = threading.Thread(target=self._run, name="ledger-pack-merge", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout: float = MERGE_TIMEOUT) -> bool:
        """Wait for a running merge; False when it is still running after `timeout`."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def merge_now(self) -> bool:
        """Merge in the calling thread (maintenance, tests); False when another merge holds the lock."""
        return self._run()

    @contextlib.contextmanager
    def exclusive(self, timeout: float = MERGE_TIMEOUT) -> Iterator[None]:
        """Hold the merge lock (e.g. for a full repack), waiting for a running merge to end."""
        deadline = time.monotonic() + timeout
        while (held := _take_lock(self.path / LOCK_NAME)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path / LOCK_NAME} held for more than {timeout:.0f} s")
            time.sleep(0.05)
        try:
            yield
        finally:
            _release(held)
            self.generation += 1

    def _run(self) -> bool:
        held = _take_lock(self.path / LOCK_NAME)
        if held is None:
            return False
        began = time.monotonic()
        try:
            before = self.pack_count()
            if self.git:
                self._merge_with_git()
            else:
                self._merge_with_libgit2()
            self.merges += 1
            self.last_error = None
            log.info(
                "ledger.packs_merged",
                packs_before=before,
                packs_after=self.pack_count(),
                seconds=round(time.monotonic() - began, 2),
                tool="git" if self.git else "libgit2",
            )
            return True
        except Exception as exc:  # a failed merge leaves every object where it was
            self.last_error = redact(f"{type(exc).__name__}: {exc}")
            log.warning("ledger.pack_merge_failed", error=self.last_error)
            return False
        finally:
            _release(held)
            self.generation += 1  # packs were replaced: handles opened before should be reopened

    def _merge_with_git(self) -> None:
        assert self.git is not None
        env = {**os.environ, "GIT_DIR": str(self.path), "GIT_TERMINAL_PROMPT": "0"}
        cmd = [
            self.git,
            "-c",
            "repack.writeBitmaps=false",
            "-c",
            "pack.writeReverseIndex=false",
            "repack",
            f"--geometric={FACTOR}",
            "-d",
            "-q",
            "--no-write-bitmap-index",
        ]
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=MERGE_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"git repack exited {done.returncode}: {done.stderr.strip()[-500:]}")

    def _merge_with_libgit2(self) -> None:
        """Geometric roll-up of the smallest packs with libgit2 (no git CLI, e.g. in the container)."""
        found = packs(self.pack_dir)
        rollup = geometric_rollup([p.objects for p in found])
        if rollup < 2:
            return
        chosen = found[:rollup]
        repo = pygit2.Repository(str(self.path))
        try:
            builder = pygit2.PackBuilder(repo)
            for pack in chosen:
                for raw in index_object_ids(self.pack_dir / f"{pack.name}.idx"):
                    builder.add(pygit2.Oid(raw=raw))
            builder.write(str(self.pack_dir))  # complete and renamed into place before anything goes
        finally:
            repo.free()
        for pack in chosen:
            for suffix in (".pack", ".idx", ".rev"):
                with contextlib.suppress(FileNotFoundError):
                    (self.pack_dir / f"{pack.name}{suffix}").unlink()


def _take_lock(lock: Path) -> int | None:
    """The merge lock's descriptor, or None when another merge (any process) holds it."""
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # who holds it, for a person looking (not read by the code)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return fd


def _release(fd: int) -> None:
    """Unlock, never unlink: another process may already wait on this very file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
