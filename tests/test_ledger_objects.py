"""The ledger's own object writer builds exactly the trees and commits libgit2 builds.

Appends serialize their trees and commits in Python (`ledger/objects.py`) to skip
libgit2's pack rescan on every object write; a wrong byte would give a tree that git
reads differently or rejects. So each commit appends wrote is rebuilt with pygit2's
`TreeBuilder` (the ledger's reference `_insert`) and `create_commit` and must get the
same ids, and the repository must pass `git fsck --strict`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, SortMode

from reconciler.formats.events import KeptnEvent
from reconciler.ledger import gitledger
from reconciler.ledger.gitledger import Ledger
from reconciler.ledger.objects import ObjectWriter


def event(i: int) -> KeptnEvent:
    return KeptnEvent(
        id=f"evt-{i:05d}" if i % 3 else f"odd id ü {i}",
        source="shipyard-controller",
        type="sh.keptn.event.deployment.triggered",
        time="2024-05-01T10:00:00.000Z",
        shkeptncontext="5f1c8f2e-0000-4000-8000-000000000000",
        data={"project": "fulltour", "stage": "qa", "service": "helloservice", "n": i},
    )


def test_appends_write_the_very_trees_and_commits_libgit2_builds(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=7)  # parents come from packs and from loose files
    i = 0
    while i < 60:
        if i % 4 == 0:
            assert ledger.extend([event(i), event(i + 1), event(i)]) == [True, True, False]
            i += 2
        else:
            assert ledger.append(event(i)) is True
            i += 1
    repo = pygit2.Repository(str(path))
    commits = list(repo.walk(pygit2.Oid(hex=ledger.tip), SortMode.TOPOLOGICAL | SortMode.REVERSE))
    assert len(commits) == 60
    for commit in commits:
        event_id = gitledger.event_id_of(commit.message)
        assert event_id is not None
        blob = commit.tree[gitledger.event_path(event_id)].id
        parent_tree = commit.parents[0].tree if commit.parents else None
        assert gitledger._insert(repo, parent_tree, gitledger.event_key(event_id), blob) == commit.tree_id
        rebuilt = repo.create_commit(
            None, commit.author, commit.committer, commit.message, commit.tree_id, commit.parent_ids
        )
        assert rebuilt == commit.id
    subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict", "--no-dangling"], check=True)


def test_trees_it_did_not_write_are_copied_entry_for_entry(tmp_path: Path) -> None:
    """A parent tree from elsewhere (names that sort differently as directories, other file
    modes) keeps every entry, in git's order, when the writer adds a file to it."""
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True)
    blob = repo.create_blob(b"x")
    sub = repo.TreeBuilder()
    sub.insert("inner", blob, FileMode.BLOB)
    sub_id = sub.write()
    built = repo.TreeBuilder()
    for name, oid, mode in [
        ("a", sub_id, FileMode.TREE),
        ("a.json", blob, FileMode.BLOB),
        ("a-b", blob, FileMode.BLOB_EXECUTABLE),
        ("link", blob, FileMode.LINK),
        ("Z", blob, FileMode.BLOB),
    ]:
        built.insert(name, oid, mode)
    base = built.write()
    new = repo.create_blob(b"event")
    writer = ObjectWriter(repo, tmp_path / "r.git" / "objects")
    ours = writer.insert(base.raw, [b"a", b"k.json"], new.raw, b"readme")
    theirs = repo.TreeBuilder(repo[base].peel(pygit2.Tree))
    inner = repo.TreeBuilder(repo[sub_id].peel(pygit2.Tree))
    inner.insert("k.json", new, FileMode.BLOB)
    theirs.insert("a", inner.write(), FileMode.TREE)
    assert pygit2.Oid(raw=ours) == theirs.write()


def test_two_writers_taking_turns_build_on_each_others_trees(tmp_path: Path) -> None:
    """Each writer keeps the trees above the leaves it last saw; when the other writer has moved
    the branch since, those are stale ids and the writer must build on the tip's trees: every
    event either writer recorded stays in the tree, each id once, and each commit is what
    libgit2 builds from its parent."""
    path = tmp_path / "ledger.git"
    first, second = Ledger(path), Ledger(path)
    for i in range(120):
        assert (first if (i // 3) % 2 else second).append(event(i)) is True
    # an id already recorded by the other writer is a duplicate, not a second file
    assert first.append(event(4)) is False
    assert second.append(event(3)) is False
    repo = pygit2.Repository(str(path))
    tip = repo[pygit2.Oid(hex=first.tip)].peel(pygit2.Commit)
    files = []
    stack = [tip.tree]
    while stack:
        for entry in stack.pop():
            if entry.type_str == "tree":
                stack.append(repo[entry.id].peel(pygit2.Tree))
            elif entry.name.endswith(".json"):
                files.append(entry.name)
    assert sorted(files) == sorted(f"{gitledger.event_key(event(i).id)}.json" for i in range(120))
    for commit in repo.walk(tip.id, SortMode.TOPOLOGICAL):
        if not commit.parents:
            continue
        event_id = gitledger.event_id_of(commit.message)
        assert event_id is not None
        blob = commit.tree[gitledger.event_path(event_id)].id
        assert (
            gitledger._insert(repo, commit.parents[0].tree, gitledger.event_key(event_id), blob)
            == commit.tree_id
        )
    assert [e.id for e in Ledger(path).events()] == [event(i).id for i in range(120)]
