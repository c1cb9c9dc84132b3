"""Appends write one small pack per batch, not loose objects (`packs.BatchPacks`).

What a user would notice if this went wrong: events missing for another process or for
git (`git log`, `git fsck --strict`), a pack directory that grows without bound (libgit2
looks through every pack on a miss), or an older ledger's loose objects never packed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest

from reconciler.formats.events import KeptnEvent
from reconciler.ledger import packs as packs_module
from reconciler.ledger.gitledger import Ledger
from reconciler.ledger.packs import BatchPacks, index_object_ids

GIT = shutil.which("git")


def event(i: int) -> KeptnEvent:
    return KeptnEvent(
        id=f"evt-{i:05d}",
        source="shipyard-controller",
        type="sh.keptn.event.deployment.triggered",
        time="2024-05-01T10:00:00.000Z",
        shkeptncontext="5f1c8f2e-0000-4000-8000-000000000000",
        data={"project": "fulltour", "stage": "qa", "service": "helloservice", "n": i},
    )


def loose_files(path: Path) -> list[Path]:
    return [f for f in (path / "objects").glob("??/*") if f.is_file()]


def pack_files(path: Path) -> list[Path]:
    return list((path / "objects" / "pack").glob("pack-*.pack"))


@pytest.mark.skipif(GIT is None, reason="needs the git CLI")
def test_appends_leave_no_loose_objects_few_packs_and_git_reads_every_event(tmp_path: Path) -> None:
    assert GIT is not None
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=100, merge_packs_above=0)
    most = 0
    for i in range(250):
        ledger.append(event(i))
        assert not loose_files(path), i
        most = max(most, len(pack_files(path)))
    # fan-in 4: at most 3 packs per tier over the 4 tiers below 100 appends, the merged-away
    # ones awaiting deletion, and one pack per compaction
    assert most <= 24, most
    ledger.extend([event(i) for i in range(250, 330)])  # one long batch: one pack
    assert not loose_files(path)
    assert [e.id for e in Ledger(path).events()] == [f"evt-{i:05d}" for i in range(330)]
    cli = [GIT, "--git-dir", str(path)]
    fsck = subprocess.run([*cli, "fsck", "--strict", "--no-dangling"], capture_output=True, text=True)
    assert fsck.returncode == 0 and fsck.stderr == "", fsck
    log = subprocess.run(
        [*cli, "log", "--format=%s", ledger.ref_name], capture_output=True, text=True, check=True
    )
    assert len(log.stdout.splitlines()) == 330


def test_a_handle_opened_before_an_append_reads_the_new_commit_at_once(tmp_path: Path) -> None:
    """Another process's repository handle lists the packs it saw when it opened; the commit
    the branch names must be readable through it as soon as the branch moved."""
    path = tmp_path / "ledger.git"
    ledger = Ledger(path)
    ledger.append(event(0))
    other = pygit2.Repository(str(path))
    seen = other.references[ledger.ref_name].peel(pygit2.Commit)
    for i in range(1, 40):
        ledger.append(event(i))
        tip = other.references[ledger.ref_name].target
        commit = other[tip].peel(pygit2.Commit)
        assert f"evt-{i:05d}" in commit.message
        assert other.descendant_of(tip, seen.id)


def test_the_writers_own_handle_reads_each_event_and_other_code_keeps_libgit2s_checks(tmp_path: Path) -> None:
    """The branch moves without libgit2's existence check of its new commit (the pack was just
    written, and the check cost a pack-directory rescan per append): the writer's own handle,
    never told about the new pack, must still read the event at once, and the check must stay
    on for everything else in the process (a ref naming a missing commit is refused)."""
    path = tmp_path / "ledger.git"
    writer = Ledger(path)  # its catalog is never loaded: `get` reads the tip's tree through its handle
    for i in range(70):  # past a handle renewal (every 64)
        writer.append(event(i))
        found = writer.get(f"evt-{i:05d}")
        assert found is not None and found.data["n"] == i
    repo = pygit2.Repository(str(path))
    with pytest.raises(pygit2.GitError):
        repo.references.create("refs/heads/dangling", pygit2.Oid(hex="ab" * 20))
    assert "refs/heads/dangling" not in repo.references


def test_an_older_ledgers_loose_objects_are_packed_with_the_batch_packs(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    Ledger(path, compact_every=0, write_loose=True).extend([event(i) for i in range(12)])
    assert len(loose_files(path)) > 12 * 8
    ledger = Ledger(path, compact_every=10)
    for i in range(12, 22):
        ledger.append(event(i))  # the 10th compacts: the loose objects and the batch packs
    assert not loose_files(path)
    assert len(pack_files(path)) == 1
    assert [e.id for e in Ledger(path).events()] == [f"evt-{i:05d}" for i in range(22)]


def test_merged_packs_hold_every_object_and_their_sources_go_a_little_later(tmp_path: Path) -> None:
    pack_dir = tmp_path / "pack"
    pack_dir.mkdir()
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True)
    batches = BatchPacks(pack_dir, fanin=4)
    every: set[bytes] = set()
    for n in range(37):
        blob = b"event %d" % n
        raw = repo.odb.write(pygit2.enums.ObjectType.BLOB, blob).raw  # the id git gives it
        every.add(raw)
        batches.write([(raw, int(pygit2.enums.ObjectType.BLOB), blob)])
        on_disk = sorted(pack_dir.glob("pack-*.idx"))
        held = {raw for idx in on_disk for raw in index_object_ids(idx)}
        assert held == every, n  # nothing is ever only in a pack already deleted
        assert len(on_disk) <= 3 * 3 + 4 + 4, n  # 3 tiers of at most 3, merged ones awaiting deletion
    entries, names = batches.take_all()
    assert {raw for raw, _, _ in entries} == every
    assert names and set(names) <= {idx.stem for idx in pack_dir.glob("pack-*.idx")}


def test_a_wrong_id_never_reaches_a_batch_pack(tmp_path: Path) -> None:
    batches = BatchPacks(tmp_path)
    with pytest.raises(ValueError, match="does not hash to its id"):
        batches.write([(b"\x01" * 20, int(pygit2.enums.ObjectType.BLOB), b"not that")])
    assert not list(tmp_path.iterdir())
    assert packs_module.FANIN >= 2


def test_single_appends_by_short_lived_processes_are_rolled_into_the_next_compaction(tmp_path: Path) -> None:
    """Each `reconciler` CLI append is a process of its own: one pack each, never merged by it."""
    path = tmp_path / "ledger.git"
    for i in range(12):
        Ledger(path).append(event(i))
    assert len(pack_files(path)) == 12
    running = Ledger(path, compact_every=3)
    for i in range(12, 15):
        running.append(event(i))
    assert len(pack_files(path)) == 1
    assert [e.id for e in Ledger(path).events()] == [f"evt-{i:05d}" for i in range(15)]
