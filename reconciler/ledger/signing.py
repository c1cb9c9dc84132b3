"""Signing ledger commits, so history fetched back from the upstream can be told from a forgery.

Anyone who can push the upstream's ledger branch could add an event (an approval, say)
that a reconciler recovering from that copy would replay and act on. Every commit this
reconciler writes therefore carries a `Ledger-Signature:` trailer: an HMAC-SHA256, under
a key only the reconciler holds, over the commit's tree id, its parent ids and the rest
of its message. The tree id covers every event file of the ledger at that commit and the
parent id covers all history before it (git's ids are hashes of content), so one valid
signature vouches for the whole history up to its commit: the upstream copy is adopted
only when its newest commit is signed with our key (see `Ledger._verify`).

Why an HMAC and not GPG/SSH signatures: verification needs nothing but the key and the
standard library (no gpg or ssh-keygen process per commit, no keyring), costs ~2 µs per
append, and the only party that must verify is the reconciler itself (or its standby,
which shares the key). Its limit: whoever holds the key can sign, so the key lives in
the data directory (`ledger.key`, created on first start, mode 0600) or in a Secret
(`ledger_key_file`), never in the ledger, logs or the upstream.

A ledger written before signing existed gets signatures from its next append on: that
first signed commit vouches for the unsigned history under it, which the reconciler
trusted because it was its own data directory (logged as `ledger.signing_started`).

May import: the standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from reconciler.ledger.errors import LedgerError

TRAILER = "Ledger-Signature"
SCHEME = "hmac-sha256"
KEY_FILE = "ledger.key"
"""The key's file in the data directory, beside `ledger.git` (not inside: never copied with it)."""
MIN_KEY_BYTES = 16
_DOMAIN = b"reconciler-ledger-commit-v1\n"
_PREFIX = f"{TRAILER}: ".encode()


class Verdict(StrEnum):
    VALID = "valid"
    UNSIGNED = "unsigned"
    OTHER_KEY = "other-key"
    """Signed, but with a key whose id is not ours (another reconciler's, or a rotated key)."""
    BAD = "bad"
    """Claims our key and does not match: the commit was changed after it was signed."""


@dataclass(frozen=True)
class SigningKey:
    """The secret and a short public id that names it in trailers and messages."""

    secret: bytes
    origin: str
    """Where it came from (a path), for messages; never the secret."""

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"reconciler-ledger-key-id\n" + self.secret).hexdigest()[:16]

    def __repr__(self) -> str:  # the secret stays out of reprs, tracebacks and logs
        return f"SigningKey(id={self.key_id}, origin={self.origin!r})"


def read_key(path: Path) -> SigningKey:
    """A key from a file (a mounted Secret or the data directory's `ledger.key`)."""
    try:
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise LedgerError(
            f"ledger signing key {path}: cannot read it: {exc.strerror or exc} (put the key there, e.g. in "
            "the Secret mounted there, or unset ledger_key_file to keep the key in the data directory)"
        ) from None
    if len(raw) < MIN_KEY_BYTES:
        raise LedgerError(
            f"ledger signing key {path}: {len(raw)} bytes; expected at least {MIN_KEY_BYTES} "
            "(make one with `openssl rand -hex 32`)"
        )
    return SigningKey(raw, str(path))


def create_key(path: Path) -> SigningKey:
    """A new random key in `path` (0600), or the one another process created there first.

    The key is written whole to a private temporary file and then hard-linked into place:
    `link` never replaces an existing file, and a process that finds `path` finds all of
    the key (creating `path` with `O_EXCL` and then writing let a racing process read it empty).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_hex(32) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return read_key(path)
    finally:
        tmp.unlink()
    return SigningKey(text.strip().encode(), str(path))


class KeySource:
    """The key a ledger signs with, resolved on first use: a read-only command never creates one.

    `configured` (a Secret's file, setting `ledger_key_file`) wins; else `file` in the data
    directory, created when first needed.
    """

    def __init__(self, file: Path, *, configured: Path | None = None) -> None:
        self.file = file
        self.configured = configured
        self._key: SigningKey | None = None

    def get(self, *, create: bool = True) -> SigningKey | None:
        if self._key is None:
            if self.configured is not None:
                self._key = read_key(self.configured)
            elif self.file.is_file():
                self._key = read_key(self.file)
            elif create:
                self._key = create_key(self.file)
        return self._key

    def __repr__(self) -> str:
        return f"KeySource(file={str(self.file)!r}, configured={str(self.configured) if self.configured else None!r})"


def _mac(key: SigningKey, tree: str, parents: Sequence[str], body: bytes) -> str:
    head = f"tree {tree}\n" + "".join(f"parent {p}\n" for p in parents) + "\n"
    return hmac.new(key.secret, _DOMAIN + head.encode() + body, hashlib.sha256).hexdigest()


def sign(key: SigningKey, tree: str, parents: Sequence[str], message: str) -> str:
    """`message` (ending in its trailer paragraph) with the signature as its last trailer."""
    if not message.endswith("\n"):
        message += "\n"
    mac = _mac(key, tree, parents, message.encode("utf-8", "surrogatepass"))
    return f"{message}{TRAILER}: {SCHEME} {key.key_id} {mac}\n"


@dataclass(frozen=True)
class Signature:
    verdict: Verdict
    key_id: str | None = None


def check(key: SigningKey | None, tree: str, parents: Sequence[str], raw_message: bytes) -> Signature:
    """Whether a commit (its tree id, parent ids, raw message) carries a valid signature by `key`."""
    body, sep, last = raw_message.rstrip(b"\n").rpartition(b"\n")
    if not sep or not last.startswith(_PREFIX):
        return Signature(Verdict.UNSIGNED)
    parts = last[len(_PREFIX) :].decode("ascii", "replace").split()
    if len(parts) != 3 or parts[0] != SCHEME:
        return Signature(Verdict.BAD)
    _scheme, key_id, mac = parts
    if key is None or key_id != key.key_id:
        return Signature(Verdict.OTHER_KEY, key_id)
    expected = _mac(key, tree, parents, body + b"\n")
    return Signature(Verdict.VALID if hmac.compare_digest(expected, mac) else Verdict.BAD, key_id)
