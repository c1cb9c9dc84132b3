"""The events ledger: every Keptn CloudEvent is one commit on a branch of a bare git repository.

Git gives us, for free, what an event store needs: content-addressed immutable
records, an append-only history people can read with `git log`, atomic
compare-and-swap on a ref (so two processes appending at once never lose a
commit), and push/fetch to keep a copy in the upstream.

Layout of every commit's tree::

    README.md                            what this branch is
    events/<k0>/<k1>/<k2>/<k3>/<k>.json  k = sha1(event id) in hex; the CloudEvent JSON, exactly

Four levels of 16-way sharding keep every tree an append rewrites at most 16
entries (the leaf holds ~1.5 files at 100,000 events), so appending costs the same
at 100 and at 100,000 events, and a writer answers "is this id recorded?" with
five small tree lookups from the tip — no replay. The order of events is the order of commits; each commit names its event
in an `Event-Id:` trailer, so a replay walks commits and reads one blob each.

Appends are write-ahead: nothing acts on an event until its commit is the ref's
target. The ref is moved with libgit2's compare-and-swap (`set_target` fails when
the ref moved since it was read), and a writer that loses the race rebuilds on the
new tip and tries again. Creating the branch is the one move libgit2 cannot
compare-and-swap (its "must not exist" check runs before it takes the ref lock: two
processes creating it at once both succeed, the second silently dropping the first's
commits), so creation is serialized with a file lock and the branch re-read under it.

Each batch of appends writes its objects as one small pack (`packs.BatchPacks`), renamed
into place before the branch moves; those packs are merged in memory as they pile up and
rolled into one every thousand appends (with any loose objects older versions left), so
the repository stays a few files instead of hundreds of thousands.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import pygit2
from pygit2.enums import FileMode, SortMode

from reconciler.base.crashpoints import crash_point
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.formats.events import KeptnEvent, forget_parsed
from reconciler.formats.trailers import encode_trailer, parse_trailers
from reconciler.ledger import checkpoint, transfer
from reconciler.ledger.catalog import (
    CHECKPOINT_KIND,
    CHECKPOINT_VERSION,
    DECODED_KEEP,
    Catalog,
    CatalogCheckpoint,
    Decoded,
    EventMeta,
    EventsView,
    decode_event,
    from_checkpoint,
    meta_of,
    to_checkpoint,
)
from reconciler.ledger.errors import LedgerDamaged, LedgerError, LedgerRefused
from reconciler.ledger.heap import BULK_EVENTS, bound_native_memory, release_freed_memory
from reconciler.ledger.integrity import check_loose_objects
from reconciler.ledger.objects import ObjectWriter
from reconciler.ledger.packs import (
    FOREIGN_BELOW,
    MERGE_ABOVE,
    BatchPacks,
    PackMerger,
    encode_objects,
    index_object_ids,
    packs,
    write_entries,
)
from reconciler.ledger.signing import KEY_FILE, KeySource, SigningKey, Verdict, check, sign
from reconciler.ledger.tipmark import MARK_EVERY, mark_path, marked_tip, read_marks, set_aside, write_mark
from reconciler.ledger.transfer import (
    QUARANTINE_REF,
    STEP_REF,
    fetch_with_git,
    git_cli,
    local_repository,
    local_tip,
    push_steps,
    push_with_git,
)
from reconciler.ledger.verify import HistoryCheck

log = get_logger("reconciler.ledger")

DEFAULT_BRANCH = "reconciler-ledger"
EVENTS_DIR = "events"
SIGNATURE_NAME = "reconciler"
SIGNATURE_EMAIL = "reconciler@localhost"
CAS_DEADLINE = 30.0
"""Seconds a writer keeps retrying a contended append before it gives up loudly."""
CREATE_LOCK = "reconciler-create.lock"
"""File in the repository that serializes creating the branch (`Ledger._create_ref`)."""
STALE_LOCK_AFTER = 10.0
"""A ref lock is held for microseconds; one older than this was left by a killed process."""
SHARD_DEPTH = 4
"""Levels of 16-way sharding by hex digit of the key. Small fan-out keeps the trees an
append rewrites small (each version of each tree is stored): 16 x 4 levels write ~2 KB
of trees per event, where 256 x 2 levels wrote ~14 KB."""
READER_REOPEN_EVERY = 4096
"""Blob reads between reopenings of the decoding repository (bounds what libgit2 keeps mapped)."""
COMPACT_EVERY = 1000
"""Appends (by this process) between rolling its batch packs (and any loose objects) into one
pack. Fewer, larger packs keep lookups fast (libgit2 looks through every pack on a miss);
the batch packs between are merged in tiers (`packs.BatchPacks`), at most ~15 at a time."""
RENEW_EVERY = 64
"""Events appended or read in between renewing the repository handles: libgit2 keeps every
pack it has seen listed (and mapped, once read) until the handle is freed, also the batch
packs merged away and deleted since, so lookups that miss would walk ever more of them."""

CHECKPOINT_EVERY = 5000
"""Events recorded or read since the catalog's checkpoint was written before it is written
again (in the background: ~0.3 s at 100,000 events); 0: never written by this process."""
CHECKPOINT_MIN = 1000
"""Below this many events a checkpoint saves less than it costs to write."""

_README = b"""# reconciler events ledger

One commit per Keptn CloudEvent, oldest first. The commit's first line reads
`<type> <project>/<stage>/<service> <short context>`; its trailers carry
Keptn-Context, Keptn-Triggered-Id and Event-Id. The event itself is stored
exactly as received under events/<k0>/<k1>/<k2>/<k3>/<k>.json, k = sha1(event id).

Do not rewrite this branch: the reconciler rebuilds its whole state from it.
"""


def _vanished_fanout(exc: OSError) -> bool:
    """A loose object's directory removed under the write: `git repack -d` (a pack merge, in
    this or another process) runs `git prune-packed`, which removes empty fan-out
    directories, and libgit2 creates the directory a moment before renaming into it."""
    text = str(exc)
    return "failed to rename lockfile" in text and "No such file or directory" in text


__all__ = [
    "Ledger",
    "LedgerDamaged",
    "LedgerError",
    "LedgerRefused",
    "PushResult",
    "SyncResult",
]


class RemoteAuth(Protocol):
    """Anything that can hand out fresh libgit2 callbacks for one network operation."""

    def callbacks(self) -> pygit2.RemoteCallbacks: ...


@dataclass(frozen=True)
class PushResult:
    """Outcome of pushing the ledger branch; `error` is None when the remote has our tip.

    `remote_ahead`: not pushed because the remote's branch holds commits ours does not
    (it extends ours, or the two diverged); `Ledger.sync` decides what to do with it.
    """

    tip: str | None
    pushed: bool
    attempts: int
    error: str | None = None
    remote_ahead: bool = False


SyncState = Literal["no-remote", "same", "ahead", "adopted", "diverged"]


@dataclass(frozen=True)
class SyncResult:
    """How our branch stands against the remote's copy after `Ledger.sync`.

    no-remote: the remote has no ledger branch; same: the same tip; ahead: ours extends
    theirs (a push fast-forwards it); adopted: theirs extended ours, verified, and is ours
    now (`events` new); diverged: each has commits the other lacks (`ours_only`,
    `theirs_only`), and neither was touched.
    """

    state: SyncState
    ours: str | None
    theirs: str | None
    events: int = 0
    ours_only: int = 0
    theirs_only: int = 0


def checkpoint_path(ledger: Path, branch: str = DEFAULT_BRANCH) -> Path:
    """`data_dir/ledger.git` -> `data_dir/ledger.catalog` (another branch: `ledger.<branch>.catalog`)."""
    if branch == DEFAULT_BRANCH:
        return ledger.with_name(ledger.stem + ".catalog")
    return ledger.with_name(f"{ledger.stem}.{re.sub(r'[^A-Za-z0-9._-]', '_', branch)}.catalog")


def event_key(event_id: str) -> str:
    """The hash that places an event in the tree; sha1 is for spreading, not for security."""
    return hashlib.sha1(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def event_path(event_id: str) -> str:
    """events/a/b/c/d/<key>.json: four 16-way levels, ~1.5 files per leaf at 100,000 events."""
    key = event_key(event_id)
    return "/".join([EVENTS_DIR, *key[:SHARD_DEPTH], f"{key}.json"])


def _oneline(text: str, limit: int = 120) -> str:
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def commit_message(event: KeptnEvent) -> str:
    """First line for `git log --oneline`, then git trailers that tools can filter on."""
    scope = "/".join(p or "-" for p in (event.project, event.stage, event.service))
    while scope.endswith("/-"):
        scope = scope[:-2]
    context = event.shkeptncontext[:8] if event.shkeptncontext else "-"
    subject = f"{_oneline(event.type, 200)} {_oneline(scope)} {_oneline(context)}"
    trailers = []
    if event.shkeptncontext:
        trailers.append(f"Keptn-Context: {encode_trailer(event.shkeptncontext)}")
    if event.triggeredid:
        trailers.append(f"Keptn-Triggered-Id: {encode_trailer(event.triggeredid)}")
    trailers.append(f"Event-Id: {encode_trailer(event.id)}")
    return subject + "\n\n" + "\n".join(trailers) + "\n"


def event_id_of(message: str) -> str | None:
    return parse_trailers(message).get("Event-Id")


def subject_scope(project: str, stage: str, service: str) -> str:
    """The `<project>/<stage>/<service>` part of a commit's first line, as `commit_message` writes it."""
    scope = "/".join(p or "-" for p in (project, stage, service))
    while scope.endswith("/-"):
        scope = scope[:-2]
    return _oneline(scope)


def subject_parts(subject: str, context: str) -> tuple[str, str] | None:
    """(type, scope) from a commit's first line, when they can be read back unambiguously.

    The line is `<type> <scope> <short context>`; the context is known from its trailer,
    so what is left splits at its only space. None (decode the blob instead) when the
    type was shortened or sanitised for the line, or the scope holds a space too. The
    scope is compared, never parsed: two scopes may render alike, never one two ways.
    """
    tail = " " + (_oneline(context[:8]) if context else "-")
    if not subject.endswith(tail):
        return None
    head = subject[: -len(tail)]
    if head.count(" ") != 1:
        return None
    type_, scope = head.split(" ", 1)
    if not type_ or "?" in type_ or type_.endswith("…"):
        return None
    return type_, scope


class Ledger:
    """Append-only event store on one branch of a bare repository; safe across threads and processes.

    `events()` is served from an in-memory cache loaded on first use; `refresh()`
    brings in what other processes appended (the CLI appends while `run` runs).
    """

    def __init__(
        self,
        path: Path | str,
        branch: str = DEFAULT_BRANCH,
        *,
        compact_every: int = COMPACT_EVERY,
        stale_lock_after: float = STALE_LOCK_AFTER,
        merge_packs_above: int = MERGE_ABOVE,
        keep_decoded: int = DECODED_KEEP,
        keys: KeySource | None = None,
        tip_mark: Path | None = None,
        catalog_checkpoint: Path | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY,
        write_loose: bool = False,
    ) -> None:
        self.path = Path(path)
        self.branch = branch
        self.ref_name = f"refs/heads/{branch}"
        self.compact_every = compact_every
        self.stale_lock_after = stale_lock_after
        self.keys = keys if keys is not None else KeySource(self.path.parent / KEY_FILE)
        """Signs every commit this process writes (`signing`); the data directory's key by default."""
        self.tip_mark = tip_mark if tip_mark is not None else mark_path(self.path)
        """The last tip seen, kept outside the ref (`tipmark`), so a vanished or rewound branch shows."""
        self.catalog_checkpoint = (
            catalog_checkpoint if catalog_checkpoint is not None else checkpoint_path(self.path, branch)
        )
        """The catalog saved at a tip (`checkpoint`), so a restart reads only the commits after it."""
        self.checkpoint_every = checkpoint_every
        self._checkpointed = 0
        """Catalog length the last checkpoint this process wrote or loaded covers."""
        self._checkpoint_thread: threading.Thread | None = None
        bound_native_memory()
        self._repo = self._open(self.path, self.ref_name)
        self._writer = ObjectWriter(self._repo, self.path / "objects", loose=write_loose)
        """`write_loose`: objects as loose files, as versions before packs-per-append wrote them
        (tests build such ledgers to check they are still read and compacted)."""
        self._batches = BatchPacks(self.path / "objects" / "pack")
        self._packs = PackMerger(self.path, merge_above=merge_packs_above)
        self._since_renew = 0
        self._packs_seen = 0
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._catalog: Catalog | None = None
        self._decoded = Decoded(keep_decoded)
        self._reader: pygit2.Repository | None = None
        self._reads = 0
        self._cache_tip: str | None = None
        self._unseen: list[EventMeta] = []
        self._version = 0
        self._since_compact = 0
        self._sig = pygit2.Signature(SIGNATURE_NAME, SIGNATURE_EMAIL)
        self._own: set[str] = set()
        """Ids this process appended before its cache was loaded (not "unseen" later)."""
        self._opened_tip = self.tip
        self._mark_checked = False
        self._marked_at = 0.0
        self._mark_timer: threading.Timer | None = None
        self._signing_noted = False

    @classmethod
    def in_data_dir(
        cls, data_dir: Path, branch: str = DEFAULT_BRANCH, *, key_file: Path | None = None, **kwargs: object
    ) -> Ledger:
        """`data_dir/ledger.git`, signing with `key_file` (a Secret) or else `data_dir/ledger.key`."""
        data_dir = Path(data_dir)
        keys = KeySource(data_dir / KEY_FILE, configured=key_file)
        return cls(data_dir / "ledger.git", branch, keys=keys, **kwargs)  # type: ignore[arg-type]

    @staticmethod
    def _open(path: Path, ref_name: str) -> pygit2.Repository:
        if (path / "HEAD").is_file():
            try:
                return pygit2.Repository(str(path))
            except pygit2.GitError as exc:
                raise LedgerDamaged(
                    f"ledger {path}: not a readable git repository ({redact(str(exc))}); "
                    "restore it from a backup of the data directory"
                ) from None
        if path.exists() and any(path.iterdir()):
            raise LedgerDamaged(
                f"ledger {path}: the directory has files but no HEAD, so it is not a git repository; "
                "restore it from a backup of the data directory (refusing to start a new ledger over it)"
            )
        path.mkdir(parents=True, exist_ok=True)
        repo = pygit2.init_repository(str(path), bare=True)
        repo.set_head(ref_name)  # names the ledger branch before its first commit (the mirror leaves it out)
        return repo

    def signing_key(self) -> SigningKey:
        """The key this ledger signs with (created in the data directory on first use)."""
        key = self.keys.get()
        assert key is not None
        return key

    # ------------------------------------------------------------------ reading

    def _ref(self) -> pygit2.Reference | None:
        try:
            return self._repo.references.get(self.ref_name)
        except pygit2.GitError as exc:  # a half-written ref cannot exist (rename is atomic)
            raise LedgerError(
                f"ledger {self.path}: cannot read {self.ref_name}: {redact(str(exc))}"
            ) from None

    @property
    def tip(self) -> str | None:
        """Commit id of the newest event on disk (None for an empty ledger)."""
        with self._lock:
            ref = self._ref()
            return str(ref.target) if ref is not None else None

    def _read_entries(
        self, tip: str, hide: str | None, add: Callable[[EventMeta], None] | None = None
    ) -> list[EventMeta]:
        """Catalog entries of the commits after `hide` up to `tip`, oldest first.

        Read from the commits and the tip's tree only: id, context and triggeredid from
        the trailers, the type from the first line, the blob's id from the tree. A commit
        whose message does not say enough (written by someone else, an unusual type) has
        its event decoded instead.
        """
        # A repository of its own, dropped afterwards: libgit2 keeps every commit and tree it
        # read in a per-repository cache (up to 256 MiB) and the packs it read mapped.
        repo = pygit2.Repository(str(self.path))
        try:
            return self._walk_entries(repo, tip, hide, add)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise self._damaged(exc, f"reading {self.branch} up to commit {tip[:12]}") from None
        finally:
            repo.free()  # caches and mapped packs go now, not when a gc pass finds the repository

    def _damaged(self, exc: BaseException, doing: str) -> LedgerDamaged:
        """A libgit2 read failure as a one-line error naming the ledger and what was being read."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, KeyError):
            text = f"object {text.strip(chr(39))} is missing"
        return LedgerDamaged(
            f"ledger {self.path}: damaged: {doing}: {redact(text)[:300]}. Restore the data directory from a "
            "backup (or recover the ledger from the upstream's copy into a new data directory)"
        )

    def _walk_entries(
        self, repo: pygit2.Repository, tip: str, hide: str | None, add: Callable[[EventMeta], None] | None
    ) -> list[EventMeta]:
        """`_read_entries`; with `add`, each entry goes there as it is read and none is returned."""
        commit = repo[pygit2.Oid(hex=tip)].peel(pygit2.Commit)
        reader = _TreeReader(repo, commit.tree)
        walker = repo.walk(commit.id, SortMode.TOPOLOGICAL | SortMode.REVERSE)
        if hide:
            walker.hide(pygit2.Oid(hex=hide))
        out: list[EventMeta] = []
        keep = out.append if add is None else add
        for c in walker:
            message = c.message
            trailers = parse_trailers(message)
            event_id = trailers.get("Event-Id")
            blob = reader.oid(event_key(event_id)) if event_id is not None else None
            if blob is not None and event_id is not None:
                context = trailers.get("Keptn-Context", "")
                parts = subject_parts(message.split("\n", 1)[0], context)
                if parts is not None:
                    triggered = trailers.get("Keptn-Triggered-Id")
                    keep(
                        EventMeta(
                            id=event_id,  # unique: interning would only grow the interned table
                            type=sys.intern(parts[0]),
                            context=sys.intern(context),
                            triggeredid=sys.intern(triggered) if triggered else None,
                            scope=sys.intern(parts[1]),
                            blob=blob.raw,
                        )
                    )
                    continue
                data = repo[blob].peel(pygit2.Blob).data
            else:
                found = _added_blob(repo, c)
                if found is None:
                    raise LedgerError(
                        f"ledger {self.path}: commit {str(c.id)[:12]} on {self.branch} holds no event; "
                        "expected one events/**/<key>.json added per commit"
                    )
                blob, data = found
            try:
                event = decode_event(data)
            except ValueError as exc:
                raise LedgerError(
                    f"ledger {self.path}: commit {str(c.id)[:12]} holds an invalid event: {redact(str(exc))}"
                ) from None
            self._decoded.put(event)
            keep(meta_of(event, blob.raw, _event_scope(event)))
        return out

    def _load(self, meta: EventMeta) -> KeptnEvent:
        """One event, decoded from its blob unless recently used."""
        event = self._decoded.get(meta.id)
        if event is not None:
            return event
        with self._lock:
            try:
                data = self._blob_reader().odb.read(pygit2.Oid(raw=meta.blob))[1]
            except (KeyError, ValueError, pygit2.GitError) as exc:
                raise LedgerDamaged(
                    f"ledger {self.path}: event {meta.id[:64]!r} ({meta.type[:120]}) cannot be read: "
                    f"{redact(str(exc))}"
                ) from None
        try:
            event = decode_event(data)
        except ValueError as exc:
            raise LedgerError(
                f"ledger {self.path}: event {meta.id[:64]!r} holds an invalid event: {redact(str(exc))}"
            ) from None
        self._decoded.put(event)
        return event

    def _blob_reader(self) -> pygit2.Repository:
        """The repository events are decoded through, reopened every READER_REOPEN_EVERY reads:
        libgit2 keeps the pack pages it read mapped and a delta-base cache per pack until the
        repository is freed, so a full replay through one handle kept ~300 MiB resident.
        The delta-base caches belong to libgit2's pack objects, which every handle on the
        repository shares, so the main handle is renewed too: reopening the reader alone left
        ~125 MiB of them held after a 100,000-event replay."""
        self._reads += 1
        if self._reader is None or self._reads > READER_REOPEN_EVERY:
            if self._reader is not None:
                self._renew_handles()
            self._reader = pygit2.Repository(str(self.path))
            self._reads = 1
        return self._reader

    def _ensure_loaded(self, *, check_mark: bool = True) -> Catalog:
        """Load the catalog on first use: what was there when this ledger was opened, then the rest.

        Events appended by others after opening count as unseen (for `refresh`), so
        "since this process last looked" starts when the process opened the ledger.
        """
        if self._catalog is not None:
            if check_mark and not self._mark_checked:
                self._check_mark()
            return self._catalog
        check_loose_objects(self.path)  # libgit2 loops forever on a truncated loose object
        if check_mark:
            self._check_mark()
        base = self._opened_tip
        catalog: Catalog | None = None
        covered: str | None = None
        if base:
            saved = self._saved_catalog(base)
            if saved is not None:
                catalog, covered = saved
                self._checkpointed = len(catalog)
        if catalog is None:
            catalog = Catalog()
        if base and covered != base:
            # straight into the catalog, not through a list: 100,000 entries held until the end
            # of the read left their id strings' memory pools a fifth used, for good (12 MiB)
            before = len(catalog)
            self._read_entries(base, covered, catalog.add)
            if len(catalog) - before >= BULK_EVENTS:
                catalog.compact()
                self._renew_handles()  # the packs the read mapped (~50 MiB) are shared with this handle
        self._catalog = catalog
        self._cache_tip = base
        self._unseen.extend(m for m in self._catch_up(self.tip) if m.id not in self._own)
        self._own.clear()
        if len(catalog) >= BULK_EVENTS:
            release_freed_memory()
        self._checkpoint_soon()
        return catalog

    # ------------------------------------------------------------------ the catalog's checkpoint

    def _saved_catalog(self, base: str) -> tuple[Catalog, str] | None:
        """The checkpointed catalog and the tip it covers, when that tip is `base` or an ancestor
        of it; None (logged unless there is no file) when missing, stale or damaged."""
        began = time.monotonic()
        path = self.catalog_checkpoint
        found = checkpoint.read(path, CHECKPOINT_KIND, CHECKPOINT_VERSION, CatalogCheckpoint)
        if isinstance(found, checkpoint.Unusable):
            if not found.missing:
                log.warning("ledger.checkpoint_ignored", checkpoint=str(path), reason=found.reason)
            return None
        key = found.header.key
        tip, events = key.get("tip"), key.get("events")
        problem = None
        if key.get("branch") != self.branch:
            problem = f"is for branch {str(key.get('branch'))[:120]!r}"
        elif (
            not isinstance(tip, str) or not re.fullmatch(r"[0-9a-f]{40}", tip) or not isinstance(events, int)
        ):
            problem = "names no tip"
        elif not self._has_commit(tip):
            problem = f"covers commit {tip[:12]}, which this ledger does not hold"
        elif not self._is_ancestor(tip, base):
            problem = f"covers commit {tip[:12]}, which is not in the history of {self.branch} (stale)"
        if problem is None:
            assert isinstance(tip, str)
            try:
                catalog = from_checkpoint(found.payload)
            except ValueError as exc:
                problem = f"damaged: {exc}"
            else:
                problem = self._checkpoint_mismatch(catalog, tip, events)
        if problem is not None:
            log.warning("ledger.checkpoint_ignored", checkpoint=str(path), reason=problem)
            return None
        assert isinstance(tip, str)
        log.info(
            "ledger.checkpoint_loaded",
            checkpoint=str(path),
            events=len(catalog),
            tip=tip[:12],
            seconds=round(time.monotonic() - began, 3),
        )
        return catalog, tip

    def _checkpoint_mismatch(self, catalog: Catalog, tip: str, events: object) -> str | None:
        """Whether a checkpoint's content fits the commit it claims (a cheap check, not a replay)."""
        if events != len(catalog):
            return f"holds {len(catalog)} events, its header says {events}"
        if not catalog.entries:
            return "holds no events"
        last = catalog.entries[-1]
        try:
            commit = self._repo[pygit2.Oid(hex=tip)].peel(pygit2.Commit)
            blob = _TreeReader(self._repo, commit.tree).oid(event_key(last.id))
        except (KeyError, ValueError, pygit2.GitError) as exc:
            return f"covers commit {tip[:12]}, which cannot be read ({redact(str(exc))[:120]})"
        if event_id_of(commit.message) != last.id or blob is None or blob.raw != last.blob:
            return f"does not end with the event of commit {tip[:12]}"
        return None

    def _checkpoint_soon(self) -> None:
        """Write the checkpoint in the background when enough is new since the last one."""
        catalog = self._catalog
        if catalog is None or not self.checkpoint_every or self._cache_tip is None:
            return
        if len(catalog) < min(CHECKPOINT_MIN, self.checkpoint_every):
            return
        if len(catalog) - self._checkpointed < self.checkpoint_every:
            return
        if self._checkpoint_thread is not None and self._checkpoint_thread.is_alive():
            return
        self._checkpointed = len(catalog)
        thread = threading.Thread(
            target=self._write_checkpoint,
            args=(catalog, len(catalog), self._cache_tip),
            name="ledger-checkpoint",
            daemon=False,  # a short-lived CLI process waits the ~0.3 s rather than leave half a file
        )
        self._checkpoint_thread = thread
        thread.start()

    def save_checkpoint(self) -> bool:
        """Write the catalog's checkpoint now if anything is new since the last (shutdown); True if written."""
        self.wait_for_checkpoint()
        with self._lock:
            catalog, tip = self._catalog, self._cache_tip
            if (
                not self.checkpoint_every
                or catalog is None
                or tip is None
                or len(catalog) == self._checkpointed
            ):
                return False
            if len(catalog) < min(CHECKPOINT_MIN, self.checkpoint_every or CHECKPOINT_MIN):
                return False
            self._checkpointed = n = len(catalog)
        return self._write_checkpoint(catalog, n, tip)

    def wait_for_checkpoint(self, timeout: float = 60.0) -> bool:
        """Wait for a checkpoint being written in the background (tests, shutdown)."""
        thread = self._checkpoint_thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _write_checkpoint(self, catalog: Catalog, length: int, tip: str) -> bool:
        """Save the first `length` entries (the catalog only grows: they stay what they are) as
        covering `tip`. Runs without the ledger's lock; a failure costs the next start time only."""
        began = time.monotonic()
        try:
            payload = to_checkpoint(catalog.entries[:length])
            size = checkpoint.write(
                self.catalog_checkpoint,
                CHECKPOINT_KIND,
                CHECKPOINT_VERSION,
                {"branch": self.branch, "tip": tip, "events": length},
                payload,
            )
        except (OSError, ValueError) as exc:
            log.warning(
                "ledger.checkpoint_not_written",
                checkpoint=str(self.catalog_checkpoint),
                error=redact(str(exc)),
            )
            return False
        del payload  # freed before the trim, not after it (it holds a list per column)
        if length >= BULK_EVENTS:
            release_freed_memory()  # the payload's lists and JSON were tens of MiB at 100,000 events
        log.info(
            "ledger.checkpoint_written",
            checkpoint=str(self.catalog_checkpoint),
            events=length,
            tip=tip[:12],
            bytes=size,
            seconds=round(time.monotonic() - began, 3),
        )
        return True

    def _catch_up(self, tip: str | None) -> list[EventMeta]:
        """Bring the catalog to `tip`; returns entries that were not in it (appended by others)."""
        catalog = self._catalog
        assert catalog is not None
        if tip == self._cache_tip:
            return []
        if tip is None:  # branch deleted under us: keep serving what we saw, nothing new
            return []
        base = self._cache_tip
        if base is not None and not self._is_ancestor(base, tip):
            # rewritten (e.g. recovered from a remote): reload, report what is new to us
            fresh = Catalog()
            new: list[EventMeta] = []
            for meta in self._read_entries(tip, None):
                if meta.id not in catalog:
                    new.append(meta)
                fresh.add(meta)
            self._catalog = fresh
            self._cache_tip = tip
            self._checkpointed = 0
            return new
        new = [m for m in self._read_entries(tip, base) if m.id not in catalog]
        for meta in new:
            catalog.add(meta)
        self._cache_tip = tip
        return new

    def _is_ancestor(self, old: str, new: str) -> bool:
        if old == new:
            return True
        with self._lock:
            return bool(self._repo.descendant_of(pygit2.Oid(hex=new), pygit2.Oid(hex=old)))

    def events(self) -> EventsView:
        """Every event, oldest first, as of the last append or refresh of this process.

        A snapshot that decodes on access (see `catalog`); `select` and `meta` filter
        without decoding.
        """
        with self._lock:
            catalog = self._ensure_loaded()
            return EventsView(catalog, len(catalog), self._load)

    def refresh(self) -> list[KeptnEvent]:
        """Events appended by other processes since this one last looked, oldest first."""
        with self._lock:
            self._ensure_loaded()
            new = self._unseen + self._catch_up(self.tip)
            self._unseen = []
            self._since_renew += len(new)
            if self._since_renew >= RENEW_EVERY:
                self._renew_handles()
            if new:
                self._bump()
            return [self._load(meta) for meta in new]

    def get(self, event_id: str) -> KeptnEvent | None:
        with self._lock:
            catalog = self._catalog
            if catalog is not None and event_id in catalog:
                return self._load(catalog.entries[catalog.positions[event_id]])
            ref = self._ref()
            if ref is None:
                return None
            tree = self._repo[ref.target].peel(pygit2.Commit).tree
            data = _TreeReader(self._repo, tree).blob(event_key(event_id))
            return decode_event(data) if data is not None else None

    def contains(self, event_id: str) -> bool:
        """Whether an id is recorded, answered from the tip tree without loading the cache."""
        with self._lock:
            if self._catalog is not None and event_id in self._catalog:
                return True
            ref = self._ref()
            if ref is None:
                return False
            tree = self._repo[ref.target].peel(pygit2.Commit).tree
            return _TreeReader(self._repo, tree).has(event_key(event_id))

    def __len__(self) -> int:
        with self._lock:
            return len(self._ensure_loaded())

    def wait_for_change(self, timeout: float) -> bool:
        """Block until this process appends or the ref moves on disk; False on timeout."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            version = self._version
            start_tip = self.tip
            while True:
                if self._version != version or self.tip != start_tip:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))

    def _bump(self) -> None:
        self._version += 1
        self._cond.notify_all()

    # ------------------------------------------------------------------ writing

    def append(self, event: KeptnEvent) -> bool:
        """Record one event as one commit; False when its id is already recorded."""
        return self.extend([event])[0]

    def extend(self, events: Iterable[KeptnEvent]) -> list[bool]:
        """Record events in order, one commit each, moving the ref once; per event: newly recorded?"""
        batch = list(events)
        if not batch:
            return []
        deadline = time.monotonic() + CAS_DEADLINE
        renewed = False
        with self._lock:
            self._reopen_after_merge()
            key = self.signing_key()
            while True:
                ref = self._ref()
                tip = str(ref.target) if ref is not None else None
                if tip is None and self._refuse_new_history():
                    continue  # another process created the branch since we read it: build on it
                try:
                    results, written, new_tip = self._build(batch, tip, key)
                except OSError as exc:
                    self._writer.drop_pending()
                    if not _vanished_fanout(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)  # the objects are content-addressed: writing them again is safe
                    continue
                except KeyError:
                    # A tree of the tip is in a pack another process merged away while this
                    # handle still listed it (libgit2 rescans on a miss, so only a stale
                    # listing can do this): look again, once, through a fresh handle.
                    self._writer.drop_pending()
                    if renewed:
                        raise
                    renewed = True
                    self._renew_handles()
                    continue
                except BaseException:
                    self._writer.drop_pending()
                    raise
                if not written:
                    self._writer.drop_pending()
                    return results
                self._write_batch()
                crash_point("ledger.after-commit-objects")
                if self._move_ref(ref, new_tip, deadline) and self._landed(new_tip):
                    crash_point("ledger.after-ref")
                    self._after_append(tip, new_tip, written)
                    return results
                if time.monotonic() > deadline:
                    raise LedgerError(
                        f"ledger {self.path}: gave up appending after {CAS_DEADLINE:.0f}s of contention"
                    )

    def _refuse_new_history(self) -> bool:
        """An append to a missing branch would start a new history over a vanished one: only when
        nothing says there was one (neither this process nor the mark). True when the branch is
        there after all (created by another process since it was read): build on it instead."""
        seen = self._cache_tip or self._opened_tip or marked_tip(self.tip_mark, self.branch)
        if seen is None:
            return False
        if self._ref() is not None:
            return True
        problem = self.mark_problem() or (
            f"ledger {self.path}: branch {self.branch} vanished under this process (it was at commit "
            f"{seen[:12]}); not starting a new history over it"
        )
        raise LedgerDamaged(problem)

    def _build(
        self, batch: list[KeptnEvent], tip: str | None, signing: SigningKey
    ) -> tuple[list[bool], list[_Written], str]:
        """Write blob, trees and commit objects for the new events on top of `tip` (no ref moves)."""
        writer = self._writer
        parent = bytes.fromhex(tip) if tip else None
        root = writer.root_of(parent) if parent is not None else None
        tip_root = root
        results: list[bool] = []
        written: list[_Written] = []
        batch_ids: set[str] = set()
        for event in batch:
            path = _object_path(event_key(event.id))
            if event.id in batch_ids or (tip_root is not None and writer.child(tip_root, path) is not None):
                results.append(False)
                continue
            batch_ids.add(event.id)
            data, readback = _readable(event, self.path)
            blob = writer.blob(data)
            crash_point("ledger.after-blob")
            root = writer.insert(root, path, blob, _README)
            parents = [parent] if parent is not None else []
            message = sign(signing, root.hex(), [p.hex() for p in parents], commit_message(event))
            parent = writer.commit(root, parents, self._sig, message)
            written.append(_Written(readback, parent.hex(), blob))
            results.append(True)
        return results, written, parent.hex() if parent is not None else ""

    def _write_batch(self) -> None:
        """The batch's objects as one pack, complete and renamed into place before the branch
        moves (write-ahead: the branch only ever names objects on disk). No handle is told
        about the new pack: one that looks an object of it up misses in the packs it knows
        and rescans the pack directory (libgit2 does on every miss), so this process's
        handles and every other process's find the commit once the branch names it."""
        if not self._writer.loose:
            self._batches.write(self._writer.take_pending())

    def _move_ref(self, ref: pygit2.Reference | None, new_tip: str, deadline: float) -> bool:
        """Compare-and-swap the branch from `tip` to `new_tip`; False when another writer won.

        Without libgit2's check that `new_tip` exists (`_unchecked_target`): the batch's pack
        was just renamed into place by `_write_batch`, so the check could only miss in every
        pack this handle knows and rescan the pack directory to find it, O(packs) per append.
        Any handle that reads the commit later finds it the same way (libgit2 rescans on a miss)."""
        while True:
            try:
                if ref is None:
                    return self._create_ref(new_tip)
                with _unchecked_target():
                    ref.set_target(pygit2.Oid(hex=new_tip), "reconciler: append")
                return True
            except (pygit2.GitError, OSError) as exc:
                text = str(exc)
                if "does not match" in text:
                    return False
                if "lock" not in text:
                    raise LedgerError(
                        f"ledger {self.path}: cannot move {self.ref_name}: {redact(text)}"
                    ) from None
                self._break_stale_lock()
                if time.monotonic() > deadline:
                    raise LedgerError(
                        f"ledger {self.path}: {self.ref_name} stayed locked for {CAS_DEADLINE:.0f}s; "
                        "is another process stuck appending?"
                    ) from None
                time.sleep(random.uniform(0.0005, 0.005))

    def _create_ref(self, new_tip: str) -> bool:
        """Create the branch at `new_tip` unless some process created it first (False then).

        libgit2's `force=False` checks that the ref is missing before it locks it, so two
        creators racing both "succeed" and the later one overwrites the earlier one's
        commits (measured: 7 of 30 four-way races on this machine). Creators take an
        exclusive `flock` and look again under it; every later move is `set_target`, a
        true compare-and-swap, so it needs no such lock."""
        lock_path = self.path / CREATE_LOCK
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            if self._ref() is not None:
                return False
            try:
                self._repo.references.create(self.ref_name, pygit2.Oid(hex=new_tip), force=False)
            except pygit2.AlreadyExistsError:  # created by a writer that does not take the lock
                return False
            return True
        finally:
            os.close(fd)  # closing drops the lock

    def _landed(self, new_tip: str) -> bool:
        """Is our commit on the branch after a move that reported success?

        The ref lock a writer holds for microseconds is broken once it looks older than
        `stale_lock_after` (its holder was killed, or so it seems). A holder that was only
        stopped (Ctrl-Z on the CLI, a stalled process on a loaded machine) then renames the
        lock file that is there when it resumes, which may be the breaker's, and "succeeds"
        with the breaker's value on the branch, not its own: its events would be lost while
        it reports them recorded. Reading the branch back catches that; the caller then
        writes the events again on top of what is there (a duplicate id is never written
        twice, so nothing is recorded twice either)."""
        ref = self._ref()
        if ref is None:
            return False
        current = ref.target
        if str(current) == new_tip or self._repo.descendant_of(current, pygit2.Oid(hex=new_tip)):
            return True
        log.warning("ledger.append_overwritten", ref=self.ref_name, lost_tip=new_tip, tip=str(current))
        return False

    def _break_stale_lock(self) -> None:
        lock = self.path / f"{self.ref_name}.lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > self.stale_lock_after:
            log.warning("ledger.stale_lock_removed", lock=str(lock), age_seconds=round(age, 1))
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()

    def _after_append(self, parent: str | None, new_tip: str, written: list[_Written]) -> None:
        if self._catalog is None:
            self._own.update(w.event.id for w in written)
        else:
            if self._cache_tip != parent:
                # others appended since we last looked: pull theirs in first, keep them for refresh()
                self._unseen.extend(self._catch_up(parent))
            for w in written:
                self._catalog.add(meta_of(w.event, w.blob, _event_scope(w.event)))
            self._cache_tip = new_tip
        for w in written:
            event, commit = w.event, w.commit
            self._decoded.put(event)  # what the control loop folds next
            log.info(
                "ledger.appended",
                event_type=event.type,
                event_id=event.id,
                context=event.shkeptncontext,
                triggeredid=event.triggeredid,
                project=event.project,
                stage=event.stage,
                service=event.service,
                source=event.source,
                commit=commit[:12],
            )
        self._bump()
        if not self._signing_noted:
            self._note_signing(parent, written[0].commit)
        self._mark_soon()
        self._checkpoint_soon()
        self._since_compact += len(written)
        self._since_renew += len(written)
        if self._since_renew >= RENEW_EVERY:
            self._renew_handles()
            self._packs.maybe_merge(ignore=self._batches.held)  # e.g. single appends' packs by the CLI
        if self.compact_every and self._since_compact >= self.compact_every:
            try:
                self.compact()
            except (OSError, ValueError, pygit2.GitError) as exc:
                # The events are recorded (the branch moved): packing is housekeeping, and a
                # failure here (a full disk; a loose object that does not hash to its name,
                # `write_pack`) must not turn a recorded append into an error.
                # The loose objects stay; the next compaction packs them.
                log.warning("ledger.compaction_failed", error=redact(str(exc)))
            self._packs.maybe_merge()

    # ------------------------------------------------------------------ the tip mark

    def mark_problem(self) -> str | None:
        """Why this ledger must not be used as it is (its branch vanished or was rewound), or None."""
        with self._lock:
            marked = marked_tip(self.tip_mark, self.branch)
            tip = self.tip
            if tip is not None and not self._has_commit(tip):
                return (
                    f"ledger {self.path}: branch {self.branch} points at commit {tip[:12]}, which is not in "
                    "the repository (a damaged or partly copied data directory); restore "
                    f"{self.path} from a backup, or put the branch back on a commit it holds"
                )
            if marked is None or marked == tip:
                return None
            known = self._has_commit(marked)
            if tip is not None and known and self._is_ancestor(marked, tip):
                return None
            entry_events = self._marked_events()
            had = f"commit {marked[:12]}" + (f" ({entry_events} events)" if entry_events else "")
            if known:
                fix = f"put the branch back with `git --git-dir={self.path} update-ref {self.ref_name} {marked}`"
            else:
                fix = f"restore {self.path} from a backup of the data directory"
            what = (
                f"branch {self.branch} is gone"
                if tip is None
                else f"branch {self.branch} is at commit {tip[:12]}, which does not contain it (history was "
                "rewound or replaced)"
            )
            return (
                f"ledger {self.path}: {self.tip_mark.name} records history up to {had}, but {what}. To keep that "
                f"history, {fix} (with ledger_push on, the upstream's copy is adopted when it holds it); to "
                "start over without it on purpose, run `reconciler run --ledger-start-over` once"
            )

    def _marked_events(self) -> int | None:
        entry = read_marks(self.tip_mark).get(self.branch)
        events = entry.get("events") if isinstance(entry, dict) else None
        return events if isinstance(events, int) else None

    def _check_mark(self) -> None:
        problem = self.mark_problem()
        if problem is not None:
            raise LedgerDamaged(problem)
        self._mark_checked = True
        if marked_tip(self.tip_mark, self.branch) is None and self.tip is not None:
            self._write_mark()  # a ledger from before marks existed: protected from now on

    def start_over(self, reason: str) -> str | None:
        """Forget the mark (kept in `ledger.tip.abandoned`), so the branch is used as it is now.

        Only on an operator's explicit request (`reconciler run --ledger-start-over`)."""
        with self._lock:
            problem = self.mark_problem()
            if problem is None:
                return None
            aside = set_aside(self.tip_mark, self.branch, reason)
            log.error("ledger.started_over", ledger=str(self.path), problem=problem, kept=str(aside))
            self._mark_checked = False
            return problem

    def _write_mark(self, **extra: object) -> None:
        tip = self.tip
        if tip is None:
            return
        events = len(self._catalog) if self._catalog is not None and self._cache_tip == tip else None
        fields = {k: v for k, v in {"events": events, **extra}.items() if v is not None}
        try:
            write_mark(self.tip_mark, self.branch, tip, **fields)
        except OSError as exc:  # a read-only data directory (a CLI user without write access)
            log.warning("ledger.mark_not_written", mark=str(self.tip_mark), error=redact(str(exc)))
            return
        self._marked_at = time.monotonic()

    def _mark_soon(self) -> None:
        """Rewrite the mark now if it is older than MARK_EVERY, else once that much time has passed:
        writing it costs ~1.5 ms on this kind of disk, half an append."""
        if time.monotonic() - self._marked_at >= MARK_EVERY or not self._marked_at:
            self._write_mark()
            return
        if self._mark_timer is None:
            timer = threading.Timer(MARK_EVERY, self._deferred_mark)
            timer.daemon = True
            self._mark_timer = timer
            timer.start()

    def _deferred_mark(self) -> None:
        with self._lock:
            self._mark_timer = None
            self._write_mark()

    def flush_mark(self) -> None:
        """What shutdown leaves behind: the mark, if an append since its last write left it
        behind, and the catalog's checkpoint, if anything is new since the last one."""
        with self._lock:
            timer, self._mark_timer = self._mark_timer, None
            if timer is not None:
                timer.cancel()
                self._write_mark()
        self.save_checkpoint()

    def _note_signing(self, parent: str | None, first: str) -> None:
        """Once per process: say so when this append is the first signed one on an unsigned ledger."""
        self._signing_noted = True
        if parent is None:
            return
        try:
            commit = self._repo[pygit2.Oid(hex=parent)].peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError):
            return
        verdict = check(None, "", [], commit.raw_message).verdict
        if verdict == Verdict.UNSIGNED:
            log.warning(
                "ledger.signing_started",
                ledger=str(self.path),
                trusted_up_to=parent,
                first_signed=first,
                key_id=self.signing_key().key_id,
                note="history before this commit was written unsigned and is vouched for by this signature",
            )
            self._write_mark(signed_from=first)

    # ------------------------------------------------------------------ housekeeping

    def _loose_objects(self) -> list[tuple[pygit2.Oid, Path]]:
        """Every loose object now. A fan-out directory may vanish between the two listings: a
        pack merge in another process (`git repack -d` runs `git prune-packed`) removes the
        ones it emptied; its objects are in a pack then, so there is nothing to pack here."""
        loose: list[tuple[pygit2.Oid, Path]] = []
        for sub in (self.path / "objects").iterdir():
            if len(sub.name) != 2:
                continue
            try:
                names = [f for f in sub.iterdir() if len(f.name) == 38]
            except (FileNotFoundError, NotADirectoryError):
                continue
            for f in names:
                try:
                    loose.append((pygit2.Oid(hex=sub.name + f.name), f))
                except ValueError:
                    continue
        return loose

    def _loose_contents(
        self, loose: list[tuple[pygit2.Oid, Path]], written: dict[bytes, tuple[int, bytes]]
    ) -> Iterator[tuple[bytes, int, bytes]]:
        """(raw id, type, content) of each loose object: as this process wrote it when it still
        has it, else read by libgit2 (which checks its hash). One that is gone was packed and
        pruned by another process's compaction meanwhile."""
        odb = self._repo.odb
        for oid, _ in loose:
            raw = oid.raw
            known = written.get(raw)
            if known is not None:
                yield raw, known[0], known[1]
                continue
            try:
                kind, data = odb.read(oid)
            except KeyError:
                continue
            yield raw, int(kind), data

    def _pack_contents(
        self, pack_dir: Path, names: list[str], read: list[str]
    ) -> list[tuple[bytes, int, bytes]]:
        """(raw id, type, content) of each object in the packs `names` (read by libgit2, which
        checks its hash); `read` gets the names of the packs read whole, the only ones the
        caller may delete. A pack another process's compaction or merge deleted meanwhile
        holds nothing to roll up here: its objects are in that process's newer pack."""
        odb = self._repo.odb
        out: list[tuple[bytes, int, bytes]] = []
        for name in names:
            try:
                ids = index_object_ids(pack_dir / f"{name}.idx")
                objects = [(raw, *odb.read(pygit2.Oid(raw=raw))) for raw in ids]
            except (OSError, ValueError, KeyError, pygit2.GitError):
                continue
            out.extend((raw, int(kind), data) for raw, kind, data in objects)
            read.append(name)
        return out

    def _drop_loose(self, loose: list[tuple[pygit2.Oid, Path]]) -> None:
        for n, (_, f) in enumerate(loose):
            if n == len(loose) // 2:
                crash_point("ledger.mid-prune")
            with contextlib.suppress(FileNotFoundError):
                f.unlink()  # packed already; empty fan-out dirs stay (a writer may be mid-mkdir)

    def compact(self) -> int:
        """Roll this process's batch packs, other processes' small packs (single CLI appends,
        writers that exited) and every loose object (older versions wrote them; so may other
        processes of those versions) into one pack, then delete them; returns how many
        objects were packed.

        Every object deleted is in a pack written (and renamed into place) before the
        deletion, so readers in other processes still find it (libgit2 rescans packs
        on a miss). Objects written concurrently after the scan stay where they are. The
        pack holds whole objects (no delta search: that was most of the cost); the geometric
        merge deltifies them when it rolls the packs up.
        """
        with self._lock:
            self._since_compact = 0
            pack_dir = self.path / "objects" / "pack"
            loose = self._loose_objects()
            mine = self._batches.known()
            foreign = [p.name for p in packs(pack_dir) if p.name not in mine and p.objects < FOREIGN_BELOW]
            held, names = self._batches.take_all()
            if not loose and len(names) + len(foreign) < 2:  # nothing to roll up: a pack is a pack
                self._batches.collect_all()
                return len(held)
            self._renew_handles()  # lists every pack there now, for reading the others' objects
            entries = held + encode_objects(self._loose_contents(loose, self._writer.take_written()))
            whole: list[str] = []
            entries += encode_objects(self._pack_contents(pack_dir, foreign, whole))
            merged = write_entries(pack_dir, entries)
            crash_point("ledger.after-pack")
            self._batches.forget([n for n in names + whole if n != merged])
            self._batches.collect_all()
            self._drop_loose(loose)
            self._renew_handles()
            return len({raw for raw, _, _ in entries})

    def pack_count(self) -> int:
        return self._packs.pack_count()

    def wait_for_maintenance(self, timeout: float = 600.0) -> bool:
        """Wait for a background pack merge to end (tests, shutdown); False on timeout."""
        return self._packs.wait(timeout)

    def _reopen_after_merge(self) -> None:
        """Drop handles that still map packs a merge deleted (their space is freed only then)."""
        generation = self._packs.generation
        if generation != self._packs_seen:
            self._packs_seen = generation
            self._renew_handles()

    def shed_memory(self) -> None:
        """Drop what libgit2 keeps mapped and cached for this ledger, and trim the heap; once the
        start-up is done (the process then idles).

        One object lookup searches the pack indexes newest first, and the kernel maps each
        index page it touches together with its neighbours (fault-around): on a restart the
        checkpoint's few checks alone left 17 MiB of the ledger's ~100 `.idx` files resident
        (22 MiB in all at 100,000 events), counted in RSS until the handles go. Reading an
        event later maps what it needs again. The decoded events go too: after a replay they
        are its last 2,048 (~10 MiB), which the running engine holds itself where it needs them."""
        self._decoded.clear()
        forget_parsed()  # the decode memos would keep the read's last strings and their pools
        with self._lock:
            self._renew_handles()
        release_freed_memory()

    def _renew_handles(self) -> None:
        """Fresh repository handles: the old ones map packs and cache objects until freed."""
        self._since_renew = 0
        self._repo.free()
        self._repo = pygit2.Repository(str(self.path))
        self._writer.repo = self._repo
        if self._reader is not None:
            self._reader.free()
            self._reader = None

    def repack(self) -> int:
        """Maintenance: rewrite every object into one pack and drop the others.

        `compact` leaves one pack per batch of appends, and libgit2 looks through
        every pack index for each object it writes, so appends slow down as packs
        pile up (measured: ~1.5 ms with one pack vs ~3.5 ms with 100 at 100,000
        events). This costs time proportional to the whole ledger (about a minute
        at 100,000 events), so it is an operator's or a start-up job, not an append's.
        """
        with self._lock, self._packs.exclusive():
            pack_dir = self.path / "objects" / "pack"
            self._batches.take_all()  # their packs are repacked with the rest, and deleted
            self._batches.collect_all()
            self._renew_handles()  # the old handle may list packs deleted since (libgit2 keeps them)
            before = {f for f in pack_dir.glob("pack-*") if f.suffix in (".pack", ".idx", ".rev")}
            loose = self._loose_objects()
            builder = pygit2.PackBuilder(self._repo)
            for oid in self._repo.odb:
                builder.add(oid)
            builder.write(str(pack_dir))
            written = builder.written_objects_count
            crash_point("ledger.after-pack")
            newest = max(pack_dir.glob("pack-*.pack"), key=lambda f: f.stat().st_mtime_ns)
            for f in before:
                if f.stem != newest.stem:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
            self._drop_loose(loose)
            self._batches = BatchPacks(pack_dir)  # their packs were among those deleted
            self._renew_handles()
            self._since_compact = 0
            return int(written)

    # ------------------------------------------------------------------ remote copy

    def push(
        self,
        remote_url: str,
        credentials: RemoteAuth | None = None,
        *,
        attempts: int = 3,
        retry_delay: float = 1.0,
    ) -> PushResult:
        """Push the branch (every commit since the last push: one batch); retried with backoff.

        `remote_url` must not embed credentials; they come from `credentials`. A local
        upstream is written with the git CLI when installed, a remote one in steps of at
        most PUSH_STEP commits (see `transfer`).
        """
        with self._lock:
            tip = self.tip
        if tip is None:
            return PushResult(tip=None, pushed=False, attempts=0)
        local = local_repository(remote_url)
        git = git_cli()
        error: str | None = None
        listed = False
        for attempt in range(1, attempts + 1):
            try:
                if not listed:
                    theirs = self._remote_tip(remote_url, credentials)
                    listed = True
                    if theirs == tip:
                        return PushResult(tip=tip, pushed=True, attempts=attempt)
                    if theirs is not None and not (
                        self._has_commit(theirs) and self._is_ancestor(theirs, tip)
                    ):
                        # never a forced push: theirs holds commits ours lacks (an older backup of
                        # ours, another writer); `sync` decides
                        return PushResult(
                            tip=tip,
                            pushed=False,
                            attempts=attempt,
                            error=f"the upstream's {self.branch} is at commit {theirs[:12]}, which this "
                            "ledger does not contain: not overwriting it",
                            remote_ahead=True,
                        )
                    if local is not None and (local / ".git").exists():
                        return self._publish_into(local, tip, git)
                if local is not None and git is not None:
                    error = push_with_git(git, self.path, self.ref_name, local)
                else:
                    error = self._push_libgit2(remote_url, credentials, tip, theirs)
            except Exception as exc:  # transport, auth callback, server: all mean "not pushed, retry"
                error = f"{type(exc).__name__}: {exc}"
            if error is None:
                log.info("ledger.pushed", remote=redact(remote_url), tip=tip[:12], attempt=attempt)
                return PushResult(tip=tip, pushed=True, attempts=attempt)
            error = redact(error)
            log.warning("ledger.push_failed", remote=redact(remote_url), attempt=attempt, error=error)
            if any(m in error for m in ("non-fastforward", "non-fast-forward", "fetch first")):
                break  # retrying cannot help: someone else wrote the remote branch
            if attempt < attempts:
                time.sleep(retry_delay * 2 ** (attempt - 1))
        return PushResult(tip=tip, pushed=False, attempts=attempt, error=error)

    def _push_libgit2(
        self, remote_url: str, credentials: RemoteAuth | None, tip: str, remote_tip: str | None
    ) -> str | None:
        """Push through a repository handle of its own (appends go on meanwhile); None when done.

        When the remote may lack a long stretch of history, it is sent in steps through a
        temporary ref, each one a small pack."""

        def callbacks() -> pygit2.RemoteCallbacks:
            return credentials.callbacks() if credentials is not None else _PushCallbacks()

        repo = pygit2.Repository(str(self.path))
        try:
            remote = repo.remotes.create_anonymous(remote_url)
            catalog = self._catalog
            steps = [tip]
            if catalog is None or len(catalog) > transfer.PUSH_STEP:
                steps = push_steps(repo, tip, remote_tip, transfer.PUSH_STEP)
            for target in steps:
                source = self.ref_name
                if target != tip:
                    repo.references.create(STEP_REF, pygit2.Oid(hex=target), force=True)
                    source = STEP_REF
                cb = callbacks()
                remote.push([f"{source}:{self.ref_name}"], callbacks=cb)
                rejected = getattr(cb, "rejected", {})
                if rejected:
                    return f"remote refused {self.ref_name}: {rejected.get(self.ref_name, rejected)}"
            if len(steps) > 1:
                log.info("ledger.pushed_in_steps", steps=len(steps), remote=redact(remote_url))
            return None
        finally:
            with contextlib.suppress(KeyError, pygit2.GitError):
                repo.references.delete(STEP_REF)
            repo.free()
            release_freed_memory()

    def _publish_into(self, path: Path, tip: str, git: str | None = None) -> PushResult:
        """Fetch the ledger branch into a local non-bare repository (unless it has it checked out)."""
        try:
            target = pygit2.Repository(str(path))
            try:
                if not target.head_is_unborn and target.head.shorthand == self.branch:
                    return PushResult(
                        tip=tip,
                        pushed=False,
                        attempts=1,
                        error=f"{path} has the ledger branch {self.branch} checked out; not updating it",
                    )
                if git is None:  # fast-forward only: `push` checked that theirs is an ancestor of ours
                    remote = target.remotes.create_anonymous(str(self.path))
                    remote.fetch([f"{self.ref_name}:{self.ref_name}"])
            finally:
                target.free()
            if git is not None:
                error = fetch_with_git(git, path, self.path, self.ref_name)
                if error is not None:
                    return PushResult(tip=tip, pushed=False, attempts=1, error=redact(error))
        except Exception as exc:  # the same contract as a failed push: report, do not raise
            return PushResult(tip=tip, pushed=False, attempts=1, error=redact(f"{type(exc).__name__}: {exc}"))
        log.info("ledger.pushed", remote=str(path), tip=tip[:12], attempt=1)
        return PushResult(tip=tip, pushed=True, attempts=1)

    def recover(self, remote_url: str, credentials: RemoteAuth | None = None) -> int:
        """Adopt the remote's branch when this ledger is empty; returns events recovered.

        A non-empty local ledger is never overwritten: local history may hold events
        not yet pushed (`sync` adopts a remote copy that extends it). What is adopted is
        verified first (`_verify`): `LedgerRefused` names the first commit that fails.
        """
        if self.tip is not None:
            return 0
        result = self.sync(remote_url, credentials)
        return result.events if result.state == "adopted" else 0

    # ------------------------------------------------------------------ adopting the remote's copy

    def sync(self, remote_url: str, credentials: RemoteAuth | None = None) -> SyncResult:
        """Compare our branch with the remote's copy; adopt theirs when it extends ours and verifies.

        Never rewinds either side: a remote behind us is left for `push` to fast-forward, a
        diverged one is reported (`SyncResult.state == "diverged"`) and left alone. Raises
        `LedgerRefused` when theirs extends ours but fails verification, `LedgerError` when the
        remote cannot be read. Fetching and verifying run without the append lock; only the
        final move of the ref (compare-and-swap from the tip we verified against) takes it.
        """
        ours = self.tip
        try:
            theirs = self._remote_tip(remote_url, credentials)
        except Exception as exc:
            raise LedgerError(
                f"ledger {self.path}: cannot read {self.branch} of {redact(remote_url)}: {redact(str(exc))}"
            ) from None
        if theirs is None:
            return SyncResult("no-remote", ours, None)
        if theirs == ours:
            return SyncResult("same", ours, theirs)
        if ours is not None and self._has_commit(theirs) and self._is_ancestor(theirs, ours):
            return SyncResult("ahead", ours, theirs)
        try:
            fetched = self._fetch_quarantine(remote_url, credentials)  # not under the lock: appends go on
            if fetched is None:
                return SyncResult("no-remote", ours, None)
            theirs, ours = fetched, self.tip
            if theirs == ours:
                return SyncResult("same", ours, theirs)
            if ours is not None and self._is_ancestor(theirs, ours):
                return SyncResult("ahead", ours, theirs)
            if ours is not None and not self._is_ancestor(ours, theirs):
                ours_only, theirs_only = self._count_apart(ours, theirs)
                return SyncResult("diverged", ours, theirs, ours_only=ours_only, theirs_only=theirs_only)
            count = self._verify(ours, theirs, remote_url)
            self._adopt(ours, theirs)
        finally:
            with self._lock, contextlib.suppress(KeyError, pygit2.GitError):
                self._repo.references.delete(QUARANTINE_REF)
        log.info(
            "ledger.recovered" if ours is None else "ledger.adopted",
            remote=redact(remote_url),
            events=count,
            tip=theirs[:12],
            previous_tip=(ours or "")[:12] or None,
        )
        return SyncResult("adopted", ours, theirs, events=count)

    def _remote_tip(self, remote_url: str, credentials: RemoteAuth | None) -> str | None:
        local = local_repository(remote_url)
        if local is not None:
            return local_tip(local, self.ref_name)
        lister = pygit2.Repository(str(self.path))
        try:
            remote = lister.remotes.create_anonymous(remote_url)
            callbacks = credentials.callbacks() if credentials is not None else None
            heads = remote.list_heads(callbacks=callbacks)
            return next((str(h.oid) for h in heads if h.name == self.ref_name), None)
        finally:
            lister.free()

    def _fetch_quarantine(self, remote_url: str, credentials: RemoteAuth | None) -> str | None:
        """Fetch the remote's branch to QUARANTINE_REF (never to ours); its tip, None when absent."""
        local, git = local_repository(remote_url), git_cli()
        try:
            if local is not None and git is not None:  # git reuses the upstream's deltas
                error = fetch_with_git(
                    git, self.path, local, self.ref_name, target=QUARANTINE_REF, force=True
                )
                if error is not None:
                    if "couldn't find remote ref" in error:
                        return None
                    raise LedgerError(error)
            else:
                repo = pygit2.Repository(str(self.path))
                try:
                    remote = repo.remotes.create_anonymous(remote_url)
                    callbacks = credentials.callbacks() if credentials is not None else None
                    remote.fetch([f"+{self.ref_name}:{QUARANTINE_REF}"], callbacks=callbacks)
                finally:
                    repo.free()
        except Exception as exc:
            raise LedgerError(
                f"ledger {self.path}: cannot fetch {self.branch} from {redact(remote_url)}: {redact(str(exc))}"
            ) from None
        with self._lock:
            ref = self._repo.references.get(QUARANTINE_REF)
            return str(ref.target) if ref is not None else None

    def _has_commit(self, sha: str) -> bool:
        with self._lock:
            try:
                obj = self._repo.get(sha)
            except (ValueError, pygit2.GitError):
                return False
            return obj is not None and obj.type == pygit2.GIT_OBJECT_COMMIT

    def _count_apart(self, ours: str, theirs: str) -> tuple[int, int]:
        """Commits only ours has, commits only theirs has."""
        with self._lock:
            ahead, behind = self._repo.ahead_behind(pygit2.Oid(hex=ours), pygit2.Oid(hex=theirs))
        return int(ahead), int(behind)

    def _adopt(self, ours: str | None, theirs: str) -> None:
        """Fast-forward our branch from `ours` to the verified `theirs`; refused if it moved meanwhile."""
        with self._lock:
            ref = self._ref()
            current = str(ref.target) if ref is not None else None
            if current != ours:
                raise LedgerError(
                    f"ledger {self.path}: {self.branch} moved while the upstream's copy was verified; "
                    "not adopted now (tried again at the next push)"
                )
            try:
                if ref is None:
                    if not self._create_ref(theirs):
                        raise LedgerError(
                            f"ledger {self.path}: {self.branch} was created while the upstream's copy "
                            "was verified; not adopted now (tried again at the next push)"
                        )
                else:
                    ref.set_target(pygit2.Oid(hex=theirs), "reconciler: adopt the upstream's copy")
            except (pygit2.GitError, pygit2.AlreadyExistsError) as exc:
                raise LedgerError(
                    f"ledger {self.path}: cannot move {self.ref_name}: {redact(str(exc))}"
                ) from None
            if ours is None:  # recovered into an empty ledger: all of it is what this process opened
                self._catalog = None
                self._unseen = []
                self._own.clear()
                self._opened_tip = theirs
            self._write_mark()
            self._bump()

    def _verify(self, base: str | None, tip: str, remote_url: str) -> int:
        """Check every commit after `base` up to `tip` before it may become ours; returns how many.

        Signature: the newest commit must carry a valid signature by our key; it vouches for
        everything under it (its HMAC covers its parent's id), so only commits after the
        newest signed one are offenders. Then, oldest first, each commit must hold one event,
        have one parent, say in its message what its event file holds, and pass `HistoryCheck`.
        """
        repo = pygit2.Repository(str(self.path))
        try:
            walker = repo.walk(pygit2.Oid(hex=tip), SortMode.TOPOLOGICAL | SortMode.REVERSE)
            if base is not None:
                walker.hide(pygit2.Oid(hex=base))
            commits = [c.id for c in walker]
            key = self.keys.get(create=False)
            first_bad, verdict = self._first_unvouched(repo, commits, key)
            catalog = None
            if base is not None:
                with self._lock:
                    catalog = self._ensure_loaded(check_mark=False)
            checker = HistoryCheck(self._prior_events if catalog is not None else lambda _c: ())
            reader = _TreeReader(repo, repo[pygit2.Oid(hex=tip)].peel(pygit2.Commit).tree)
            for n, oid in enumerate(commits):
                if first_bad is not None and n == first_bad:
                    raise self._refusal(oid, n, len(commits), _signature_problem(verdict, key), remote_url)
                commit = repo[oid].peel(pygit2.Commit)
                problem = self._commit_problem(repo, reader, commit, base, catalog, checker)
                if problem is not None:
                    raise self._refusal(oid, n, len(commits), problem, remote_url)
            return len(commits)
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise self._damaged(exc, f"verifying {self.branch} fetched from {redact(remote_url)}") from None
        finally:
            repo.free()

    @staticmethod
    def _first_unvouched(
        repo: pygit2.Repository, commits: list[pygit2.Oid], key: SigningKey | None
    ) -> tuple[int | None, Verdict]:
        """Index of the oldest commit no valid signature vouches for (None: all vouched), and why."""
        verdict = Verdict.UNSIGNED
        first: int | None = None
        for n in range(len(commits) - 1, -1, -1):
            commit = repo[commits[n]].peel(pygit2.Commit)
            found = check(key, str(commit.tree_id), [str(p) for p in commit.parent_ids], commit.raw_message)
            if found.verdict == Verdict.VALID:
                return first, verdict
            first, verdict = n, found.verdict
        return first, verdict

    def _commit_problem(
        self,
        repo: pygit2.Repository,
        reader: _TreeReader,
        commit: pygit2.Commit,
        base: str | None,
        catalog: Catalog | None,
        checker: HistoryCheck,
    ) -> str | None:
        parents = len(commit.parent_ids)
        if parents != 1 and not (parents == 0 and base is None):
            return f"has {parents} parents; the ledger is one line of commits"
        event_id = event_id_of(commit.message)
        if event_id is None:
            return "names no event (no Event-Id trailer)"
        blob = reader.oid(event_key(event_id))
        if blob is None:
            return f"names event {event_id[:64]!r}, which the branch's tree does not hold"
        try:
            event = decode_event(repo[blob].peel(pygit2.Blob).data)
        except ValueError as exc:
            return f"holds an invalid event: {' '.join(str(exc).split())[:200]}"
        if event.id != event_id:
            return f"names event {event_id[:64]!r} but its file holds {event.id[:64]!r}"
        if catalog is not None and event_id in catalog:
            return f"records event {event_id[:64]!r} again"
        trailers = parse_trailers(commit.message)
        parts = subject_parts(commit.message.split("\n", 1)[0], trailers.get("Keptn-Context", ""))
        if parts is not None and (parts[0] != event.type or parts[1] != _event_scope(event)):
            return f"says {parts[0][:120]} {parts[1][:120]} in its first line, but holds a {event.type[:120]}"
        if trailers.get("Keptn-Context", "") != event.shkeptncontext or trailers.get(
            "Keptn-Triggered-Id"
        ) != (event.triggeredid or None):
            return "has trailers that do not match its event"
        return checker.check(event)

    def _prior_events(self, context: str) -> Iterator[KeptnEvent]:
        """Events of a context already in our ledger (what fetched answers may refer to)."""
        with self._lock:
            catalog = self._ensure_loaded(check_mark=False)
            entries = [catalog.entries[i] for i in catalog.by_context.get(context, [])]
        for meta in entries:
            yield self._load(meta)

    def _refusal(self, oid: pygit2.Oid, n: int, total: int, problem: str, remote_url: str) -> LedgerRefused:
        sha = str(oid)
        return LedgerRefused(
            f"ledger {self.path}: not adopting {self.branch} from {redact(remote_url)}: commit {sha[:12]} "
            f"(new commit {n + 1} of {total}) {problem}. Nothing was changed; reset the upstream's "
            f"{self.branch} to a commit this reconciler wrote, or start without it (`reconciler run "
            "--ledger-start-over`)",
            commit=sha,
            problem=problem,
        )


_STRICT_GUARD = threading.Lock()


@contextlib.contextmanager
def _unchecked_target() -> Iterator[None]:
    """libgit2's strict object creation off around one ref move whose target this process has
    just written (a pack renamed into place before it): the existence check it skips is a
    lookup that misses in every pack index the handle knows, then rescans `objects/pack` and
    opens the new pack (~15 system calls, 16 us at 1 pack, ~90 us at 100), for an answer the
    ledger already has. The setting is process-wide (pygit2 cannot read it back), so it is
    switched back on at once, under a lock shared by every ledger of the process; another
    thread creating objects meanwhile only skips the same check, which guards against
    dangling ids, never changes what is written."""
    with _STRICT_GUARD:
        pygit2.settings.enable_strict_object_creation(False)
        try:
            yield
        finally:
            pygit2.settings.enable_strict_object_creation(True)


def _signature_problem(verdict: Verdict, key: SigningKey | None) -> str:
    if verdict == Verdict.BAD:
        return "carries a signature that does not match its content (changed after it was signed)"
    if verdict == Verdict.OTHER_KEY:
        ours = f" (ours is {key.key_id})" if key is not None else ""
        return f"is signed with another key{ours}: set ledger_key_file to the key of the reconciler that wrote it"
    return (
        "carries no signature by this reconciler's key, and no signed commit after it vouches for it "
        "(written by someone else, or before ledger signing; a ledger you trust can be fetched into the "
        "data directory by hand)"
    )


def _event_scope(event: KeptnEvent) -> str:
    return subject_scope(event.project, event.stage, event.service)


@dataclass(frozen=True)
class _Written:
    event: KeptnEvent
    """As a replay reads it back (so this process folds exactly what a restart would)."""
    commit: str
    blob: bytes


def _readable(event: KeptnEvent, path: Path) -> tuple[bytes, KeptnEvent]:
    """The event's JSON and the event read back from it, refused when it would not read back: one
    unreadable commit stops every replay of the ledger, so it must never be written (e.g. data
    nested beyond the JSON parser's limit)."""
    try:
        text = event.to_json()
        readback = KeptnEvent.from_json(text)
    except (ValueError, RecursionError) as exc:
        raise LedgerError(
            f"ledger {path}: event {event.id[:64]!r} ({event.type[:120]}) not recorded: it would not read back "
            f"({redact(' '.join(str(exc).split()) or type(exc).__name__)[:240]})"
        ) from None
    return text.encode("utf-8"), readback


class _PushCallbacks(pygit2.RemoteCallbacks):
    """Records server-side rejections, which libgit2 reports without raising."""

    def __init__(self) -> None:
        super().__init__()
        self.rejected: dict[str, str] = {}

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected[refname] = message


class _TreeReader:
    """Looks up event blobs by key, remembering shard trees (a replay touches each once)."""

    def __init__(self, repo: pygit2.Repository, root: pygit2.Tree) -> None:
        self.repo = repo
        self._trees: dict[str, pygit2.Tree | None] = {"": _subtree(repo, root, EVENTS_DIR)}

    def _tree(self, prefix: str) -> pygit2.Tree | None:
        """The shard tree for a key prefix of up to SHARD_DEPTH hex digits."""
        if prefix in self._trees:
            return self._trees[prefix]
        parent = self._tree(prefix[:-1])
        tree = _subtree(self.repo, parent, prefix[-1])
        self._trees[prefix] = tree
        return tree

    def has(self, key: str) -> bool:
        return _leaf(self._tree(key[:SHARD_DEPTH]), key) is not None

    def oid(self, key: str) -> pygit2.Oid | None:
        """The blob's id without reading the blob."""
        entry = _leaf(self._tree(key[:SHARD_DEPTH]), key)
        return entry.id if entry is not None else None

    def blob(self, key: str) -> bytes | None:
        entry = _leaf(self._tree(key[:SHARD_DEPTH]), key)
        if entry is None:
            return None
        data: bytes = self.repo[entry.id].peel(pygit2.Blob).data
        return data


def _leaf(shard: pygit2.Tree | None, key: str) -> pygit2.Object | None:
    """The entry `<key>.json` of a shard tree, found by walking its entries (~1.5 at 100,000
    events) instead of `shard[name]` or `name in shard`: pygit2 1.21 keeps a reference to
    every name string looked up that way (measured: 100,000 lookups of distinct names kept
    5 MiB, 9 MiB of them after a cold read of a 100,000-event ledger), so each lookup of a
    new key leaked its string."""
    if shard is None:
        return None
    name = f"{key}.json"
    for entry in shard:
        if entry.name == name:
            return entry
    return None


def _subtree(repo: pygit2.Repository, tree: pygit2.Tree | None, name: str) -> pygit2.Tree | None:
    if tree is None:
        return None
    try:
        entry = tree[name]
    except KeyError:
        return None
    return repo[entry.id].peel(pygit2.Tree)


def _object_path(key: str) -> list[bytes]:
    """`event_path` as the raw names `ObjectWriter` walks: events, the shard digits, the file.

    Appends write through `ObjectWriter`; `_insert` below builds the same trees with pygit2's
    TreeBuilder (the tests compare the ids) for tools that make ledger commits by hand (the
    bench's generator, tests)."""
    return [EVENTS_DIR.encode(), *(digit.encode() for digit in key[:SHARD_DEPTH]), f"{key}.json".encode()]


def _insert(repo: pygit2.Repository, root: pygit2.Tree | None, key: str, blob: pygit2.Oid) -> pygit2.Oid:
    """New root tree = `root` plus the event file; rewrites SHARD_DEPTH + 2 trees of <= 16 entries."""
    names = [EVENTS_DIR, *key[:SHARD_DEPTH]]
    chain: list[pygit2.Tree | None] = []
    tree = root
    for name in names:
        tree = _subtree(repo, tree, name)
        chain.append(tree)
    tb = repo.TreeBuilder(chain[-1]) if chain[-1] is not None else repo.TreeBuilder()
    tb.insert(f"{key}.json", blob, FileMode.BLOB)
    oid: pygit2.Oid = tb.write()
    for depth in range(len(names) - 1, 0, -1):
        parent = chain[depth - 1]
        tb = repo.TreeBuilder(parent) if parent is not None else repo.TreeBuilder()
        tb.insert(names[depth], oid, FileMode.TREE)
        oid = tb.write()
    if root is not None:
        tb = repo.TreeBuilder(root)
    else:
        tb = repo.TreeBuilder()
        tb.insert("README.md", repo.create_blob(_README), FileMode.BLOB)
    tb.insert(EVENTS_DIR, oid, FileMode.TREE)
    result: pygit2.Oid = tb.write()
    return result


def _added_blob(repo: pygit2.Repository, commit: pygit2.Commit) -> tuple[pygit2.Oid, bytes] | None:
    """Fallback for a commit whose trailer is unreadable: the one event file it added."""
    parent_tree = commit.parents[0].tree if commit.parents else None
    diff = (
        commit.tree.diff_to_tree(parent_tree, swap=True)
        if parent_tree is not None
        else commit.tree.diff_to_tree(swap=True)
    )
    for delta in diff.deltas:
        path = delta.new_file.path
        if path.startswith(EVENTS_DIR + "/") and path.endswith(".json"):
            data: bytes = repo[delta.new_file.id].peel(pygit2.Blob).data
            return delta.new_file.id, data
    return None
