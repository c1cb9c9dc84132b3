"""Checking the ledger's loose objects before libgit2 reads them.

libgit2 1.9 never returns from reading a loose object whose zlib stream was cut short
(anything from 2 bytes to one byte less than the whole file; a power loss or a full disk
leaves such files): `reconciler run` spun at full CPU without ever listening, and
`reconciler events` hung. So a ledger checks every loose object itself, with Python's
zlib, when it loads: the stream must end, the header (`<type> <size>\\0`) must name a
git object type and the size that follows, and the content must hash to the file's
name. A damaged object is reported with its id and path, which is what a person needs
to restore it (from a backup, or `git cat-file` against the upstream's copy).

Packed objects are left to libgit2, which checks a pack's trailer and index. Loose
objects are few (the ledger packs them every thousand appends: at most ~8,000, a few
hundred KiB), so the check costs milliseconds. May import: the standard library.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path

from reconciler.ledger.errors import LedgerDamaged

TYPES = (b"commit", b"tree", b"blob", b"tag")
MAX_OBJECT_BYTES = 64 * 1024 * 1024
"""Larger than any ledger object (events are at most 512 KiB); a header claiming more is damage."""


def loose_files(objects: Path) -> Iterator[tuple[str, Path]]:
    """(object id, path) of every loose object file (not the temporary files of a write under way)."""
    try:
        subdirs = list(objects.iterdir())
    except FileNotFoundError:
        return
    for sub in subdirs:
        if len(sub.name) != 2 or not sub.is_dir():
            continue
        try:
            files = list(sub.iterdir())
        except FileNotFoundError:  # a pack merge removed the emptied fan-out directory
            continue
        for f in files:
            if len(f.name) == 38:
                yield sub.name + f.name, f


def problem(oid: str, data: bytes) -> str | None:
    """What is wrong with a loose object's bytes, or None when it reads back as `oid`."""
    inflater = zlib.decompressobj()
    try:
        content = inflater.decompress(data, MAX_OBJECT_BYTES + 64)
    except zlib.error as exc:
        return f"not a zlib stream ({exc})"
    if not inflater.eof:
        return f"truncated: its zlib stream ends early ({len(data)} bytes on disk)"
    header, sep, body = content.partition(b"\0")
    kind, _, size = header.partition(b" ")
    if not sep or kind not in TYPES or not size.isdigit():
        return "no git object header"
    if int(size) != len(body):
        return f"header says {int(size)} bytes, content has {len(body)}"
    if hashlib.sha1(content).hexdigest() != oid:
        return "content does not match its id"
    return None


def check_loose_objects(repository: Path) -> int:
    """Raise `LedgerDamaged` naming the first damaged loose object; returns how many were checked."""
    checked = 0
    for oid, path in loose_files(repository / "objects"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # packed and pruned since the listing
            continue
        except OSError as exc:
            raise LedgerDamaged(
                f"ledger {repository}: object {oid} ({path}) cannot be read: {exc.strerror or exc}"
            ) from None
        wrong = problem(oid, data)
        if wrong is not None:
            raise LedgerDamaged(
                f"ledger {repository}: object {oid} is damaged ({wrong}): {path}. Restore the file from a "
                "backup of the data directory, or move it away and copy the object from the upstream's "
                "ledger branch (`git cat-file`); the reconciler does not start on a damaged ledger"
            )
        checked += 1
    return checked
