"""The catalog's checkpoint: a restart reads only the commits after it, and any doubt about it
(missing, stale, another format version, damaged) costs a full read of the ledger, never a
wrong catalog.

Every case compares the catalog a ledger loaded with the one a full read of the same
ledger builds (entries and indexes), and checks that a usable checkpoint is there again
afterwards.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from reconciler.formats.events import KeptnEvent
from reconciler.ledger import checkpoint
from reconciler.ledger.catalog import (
    CHECKPOINT_KIND,
    CHECKPOINT_VERSION,
    Catalog,
    CatalogCheckpoint,
    to_checkpoint,
)
from reconciler.ledger.gitledger import Ledger, checkpoint_path
from tests.support.logcapture import records


def event(i: int, writer: str = "w") -> KeptnEvent:
    return KeptnEvent(
        id=f"{writer}-{i:05d}",
        source="shipyard-controller",
        type="sh.keptn.event.deployment.triggered" if i % 3 else "sh.keptn.event.deployment.finished",
        time="2024-05-01T10:00:00.000Z",
        shkeptncontext=f"ctx-{i // 4}" if i % 5 else "",
        triggeredid=f"trig-{i}" if i % 2 else None,
        data={"project": "fulltour", "stage": "qa", "service": f"svc{i % 7}", "n": i},
    )


def same(a: Catalog, b: Catalog) -> None:
    assert a.entries == b.entries
    assert a.positions == b.positions
    assert a.by_type == b.by_type
    assert a.by_context == b.by_context


def full_read(path: Path) -> Catalog:
    """The catalog from the ledger alone (no checkpoint read or written)."""
    ledger = Ledger(path, catalog_checkpoint=path.parent / "none.catalog", checkpoint_every=0)
    return ledger._ensure_loaded()


def checkpointed(tmp_path: Path, events: int = 45) -> tuple[Path, Path]:
    """A ledger whose shutdown left a checkpoint covering its `events` events."""
    path = tmp_path / "data" / "ledger.git"
    ledger = Ledger(path, checkpoint_every=20)
    ledger.extend([event(i) for i in range(events)])
    ledger._ensure_loaded()
    ledger.flush_mark()  # what `reconciler run` does at shutdown
    saved = checkpoint_path(path)
    found = checkpoint.read(saved, CHECKPOINT_KIND, CHECKPOINT_VERSION, CatalogCheckpoint)
    assert isinstance(found, checkpoint.Loaded) and found.header.key["events"] == events
    return path, saved


def loaded(path: Path) -> tuple[Ledger, list[str | None]]:
    """A restarted ledger, loaded, and the tips it read commits after (None: from the start)."""
    ledger = Ledger(path, checkpoint_every=20)
    hidden: list[str | None] = []
    real = ledger._read_entries

    def spy(tip: str, hide: str | None, add: object = None) -> object:
        hidden.append(hide)
        return real(tip, hide, add)  # type: ignore[arg-type]

    ledger._read_entries = spy  # type: ignore[method-assign]
    ledger._ensure_loaded()
    assert ledger.wait_for_checkpoint()
    return ledger, hidden


def usable_again(saved: Path, events: int) -> None:
    found = checkpoint.read(saved, CHECKPOINT_KIND, CHECKPOINT_VERSION, CatalogCheckpoint)
    assert isinstance(found, checkpoint.Loaded), found
    assert found.header.key["events"] == events


def test_a_restart_reads_only_the_commits_after_the_checkpoint(tmp_path: Path, logs: io.StringIO) -> None:
    path, saved = checkpointed(tmp_path)
    covered = json.loads(saved.read_bytes().split(b"\n")[1])["key"]["tip"]
    later = Ledger(path, checkpoint_every=0)  # e.g. the CLI appending after the shutdown
    later.extend([event(i) for i in range(45, 52)])

    ledger, hidden = loaded(path)
    assert hidden == [covered]  # one read, of the 7 commits after the checkpoint's tip
    same(ledger._ensure_loaded(), full_read(path))
    assert [e.id for e in ledger.events()] == [f"w-{i:05d}" for i in range(52)]
    assert ledger.events()[3] == event(3)
    assert records(logs, "ledger.checkpoint_loaded")[0]["events"] == 45
    assert not records(logs, "ledger.checkpoint_ignored")


def test_appends_keep_the_checkpoint_current_in_the_background(tmp_path: Path) -> None:
    path, saved = checkpointed(tmp_path, events=20)
    ledger, _ = loaded(path)
    for i in range(20, 61):
        ledger.append(event(i))
    assert ledger.wait_for_checkpoint()
    found = checkpoint.read(saved, CHECKPOINT_KIND, CHECKPOINT_VERSION, CatalogCheckpoint)
    assert isinstance(found, checkpoint.Loaded)
    assert found.header.key["events"] in (40, 60)  # every 20 events, written in the background
    ledger.flush_mark()
    usable_again(saved, 61)
    restarted, hidden = loaded(path)
    assert hidden == []  # nothing after the shutdown's checkpoint to read
    same(restarted._ensure_loaded(), full_read(path))


def test_without_a_checkpoint_the_ledger_is_read_in_full_and_one_is_written(
    tmp_path: Path, logs: io.StringIO
) -> None:
    path = tmp_path / "data" / "ledger.git"
    Ledger(path, checkpoint_every=0).extend([event(i) for i in range(30)])
    saved = checkpoint_path(path)
    assert not saved.exists()
    ledger, hidden = loaded(path)
    assert hidden == [None]
    same(ledger._ensure_loaded(), full_read(path))
    assert not records(logs, "ledger.checkpoint_ignored")  # a missing cache is no warning
    usable_again(saved, 30)


def _rewrite_header(saved: Path, **changes: object) -> None:
    magic, header, body = saved.read_bytes().split(b"\n", 2)
    fields = {**json.loads(header), **changes}
    saved.write_bytes(magic + b"\n" + json.dumps(fields).encode() + b"\n" + body)


def _flip_a_payload_byte(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-40] ^= 0x01
    saved.write_bytes(bytes(data))


def _truncate(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])


def _inconsistent_columns(saved: Path) -> None:
    """Framing and checksum intact, content wrong: one column shorter than the others."""
    entries = full_read(saved.parent / "ledger.git").entries
    payload = to_checkpoint(entries)
    payload.ids.pop()
    key = json.loads(saved.read_bytes().split(b"\n")[1])["key"]
    checkpoint.write(saved, CHECKPOINT_KIND, CHECKPOINT_VERSION, key, payload)


def _claims_another_tip(saved: Path) -> None:
    """Intact and consistent, but its header puts it on an older commit than its content."""
    path = saved.parent / "ledger.git"
    older = subprocess.run(
        ["git", "--git-dir", str(path), "rev-parse", "reconciler-ledger~3"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    _rewrite_header(saved, key={"branch": "reconciler-ledger", "tip": older, "events": 45})


DAMAGE = {
    "flipped byte": (_flip_a_payload_byte, "checksum"),
    "truncated": (_truncate, "truncated"),
    "garbage": (
        lambda p: p.write_bytes(b"\x00\xffnot a checkpoint at all" * 50),
        "not a reconciler checkpoint",
    ),
    "empty file": (lambda p: p.write_bytes(b""), "not a reconciler checkpoint"),
    "garbage header": (
        lambda p: p.write_bytes(checkpoint.MAGIC + b"{not json\n" + b"x" * 100),
        "unreadable header",
    ),
    "another format version": (
        lambda p: _rewrite_header(p, version=CHECKPOINT_VERSION + 1),
        "format version",
    ),
    "another kind": (lambda p: _rewrite_header(p, kind="engine-state"), "engine-state"),
    "inconsistent columns": (_inconsistent_columns, "different lengths"),
    "content of another tip": (_claims_another_tip, "does not end with the event"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_or_foreign_checkpoint_is_ignored_logged_and_rebuilt(
    tmp_path: Path, logs: io.StringIO, damage: str
) -> None:
    path, saved = checkpointed(tmp_path)
    spoil, reason = DAMAGE[damage]
    spoil(saved)
    ledger, hidden = loaded(path)
    assert hidden == [None]  # read in full from the ledger
    same(ledger._ensure_loaded(), full_read(path))
    ignored = records(logs, "ledger.checkpoint_ignored")
    assert len(ignored) == 1 and reason in str(ignored[0]["reason"]), ignored
    usable_again(saved, 45)  # replaced by a good one


def test_a_checkpoint_of_another_history_is_stale(tmp_path: Path, logs: io.StringIO) -> None:
    """Its tip is a commit this ledger holds (fetched from another copy) but not in its branch's
    history, e.g. a data directory restored from a backup next to a newer checkpoint."""
    path, saved = checkpointed(tmp_path / "a")
    other = tmp_path / "b" / "data" / "ledger.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(path), str(other)], check=True)
    subprocess.run(
        ["git", "--git-dir", str(other), "update-ref", "refs/heads/reconciler-ledger", "reconciler-ledger~5"],
        check=True,
    )
    Ledger(other, checkpoint_every=0).extend([event(i, "other") for i in range(5)])
    other_saved = checkpoint_path(other)
    other_saved.write_bytes(saved.read_bytes())  # covers 45 events of the first copy

    ledger, hidden = loaded(other)
    assert hidden == [None]
    same(ledger._ensure_loaded(), full_read(other))
    assert [e.id for e in ledger.events()][-5:] == [f"other-{i:05d}" for i in range(5)]
    ignored = records(logs, "ledger.checkpoint_ignored")
    assert len(ignored) == 1 and "stale" in str(ignored[0]["reason"])
    usable_again(other_saved, 45)


def test_a_checkpoint_naming_a_commit_the_ledger_lacks_is_ignored(tmp_path: Path, logs: io.StringIO) -> None:
    _, saved = checkpointed(tmp_path / "a")
    other = tmp_path / "b" / "data" / "ledger.git"
    Ledger(other, checkpoint_every=0).extend([event(i, "other") for i in range(10)])
    checkpoint_path(other).write_bytes(saved.read_bytes())
    ledger, hidden = loaded(other)
    assert hidden == [None] and len(ledger) == 10
    same(ledger._ensure_loaded(), full_read(other))
    assert "does not hold" in str(records(logs, "ledger.checkpoint_ignored")[0]["reason"])
