"""Config snapshots on a real upstream: invalid commits are rejected and recorded, the last good
config keeps serving, force-pushes and deletions are recorded, and the state is rebuilt from the ledger."""

from __future__ import annotations

from pathlib import Path

from reconciler.formats.upstreamrecords import ACCEPTED, BRANCH_DELETED, FORCE_PUSHED, REJECTED
from reconciler.upstream.files import GitFiles
from reconciler.upstream.records import fold_all
from reconciler.upstream.snapshot import SnapshotStore
from tests.support.upstreamsync import UpstreamSync

BROKEN_SHIPYARD = """apiVersion: spec.keptn.sh/0.2.2
kind: Shipyard
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          triggeredOn:
            - event: qa.delivery.finished
              selector:
                match:
                  result: failed
          tasks:
            - name: evaluation
"""


def test_first_poll_accepts_the_tutorial_upstream(upstream_sync: UpstreamSync) -> None:
    snap = upstream_sync.store.current()
    assert upstream_sync.types() == [ACCEPTED] * 3
    assert snap.ready and snap.project == "fulltour"
    assert set(snap.accepted) == {"main", "qa", "production"}
    assert snap.accepted == {b: upstream_sync.upstream.tip(b) for b in ("main", "qa", "production")}
    first = upstream_sync.ledger.events()[0]
    assert first.source == "reconciler-upstream" and first.data["project"] == "fulltour"
    assert first.gitcommitid == snap.accepted["main"]


def test_an_invalid_shipyard_is_rejected_recorded_and_the_previous_config_keeps_serving(
    upstream_sync: UpstreamSync,
) -> None:
    good = upstream_sync.store.current()
    bad = upstream_sync.upstream.commit("main", {"shipyard.yaml": BROKEN_SHIPYARD}, "try a selector")
    recorded = upstream_sync.poll()
    assert [e.type for e in recorded] == [REJECTED]
    rejection = recorded[0]
    assert rejection.data["branch"] == "main" and rejection.data["commit"] == bad
    assert rejection.data["serving"] == good.accepted["main"]
    problem = rejection.data["problems"][0]
    assert problem["file"] == "shipyard.yaml" and problem["branch"] == "main" and problem["line"] == 12
    assert "'failed'" in problem["message"] and "fail" in problem["message"]
    assert "rejected" in rejection.data["message"] and "shipyard.yaml:12" in rejection.data["message"]

    snap = upstream_sync.store.current()
    assert snap.accepted["main"] == good.accepted["main"]  # the last good config keeps serving
    assert snap.config is not None and snap.config.shipyard == good.config.shipyard  # type: ignore[union-attr]
    assert snap.rejected["main"].commit == bad
    assert upstream_sync.poll() == []  # polled again: not recorded twice

    fixed = upstream_sync.upstream.commit(
        "main", {"shipyard.yaml": BROKEN_SHIPYARD.replace("failed", "fail")}, "fix selector"
    )
    recorded = upstream_sync.poll()
    assert [(e.type, e.data["commit"]) for e in recorded] == [(ACCEPTED, fixed)]
    assert upstream_sync.store.current().accepted["main"] == fixed
    assert "main" not in upstream_sync.store.current().rejected


def test_a_stage_commit_breaking_a_link_is_rejected_with_the_branch_to_blame(
    upstream_sync: UpstreamSync,
) -> None:
    before = upstream_sync.store.current().accepted
    bad = upstream_sync.upstream.commit(
        "qa", {"helloservice/prometheus/sli.yaml": "spec_version: '1.0'\nindicators: {}\n"}, "drop SLIs"
    )
    recorded = upstream_sync.poll()
    assert [e.type for e in recorded] == [REJECTED]
    assert recorded[0].data["branch"] == "qa" and recorded[0].data["stage"] == "qa"
    assert any("slo.yaml" in p["file"] for p in recorded[0].data["problems"])
    snap = upstream_sync.store.current()
    assert snap.accepted == before and snap.rejected["qa"].commit == bad


def test_an_invalid_values_file_is_rejected_before_it_can_deploy(upstream_sync: UpstreamSync) -> None:
    upstream_sync.upstream.commit("qa", {"helloservice/values.yaml": "replicaCount: 2\n"}, "forgot the image")
    recorded = upstream_sync.poll()
    assert [e.type for e in recorded] == [REJECTED]
    problem = recorded[0].data["problems"][0]
    assert problem["file"] == "helloservice/values.yaml" and problem["field"] == "image"


def test_force_push_and_branch_deletion_are_recorded_and_pinned_commits_stay_readable(
    upstream_sync: UpstreamSync,
) -> None:
    served = upstream_sync.store.current().accepted
    old_slo = GitFiles(upstream_sync.upstream.path).read("production", "helloservice/slo.yaml")
    files = dict.fromkeys(GitFiles(upstream_sync.upstream.path).list("production"), None)
    rewritten = {p: GitFiles(upstream_sync.upstream.path).read("production", p) for p in files}
    rewritten["helloservice/slo.yaml"] = (old_slo or b"") + b"\n# squashed history\n"
    new = upstream_sync.upstream.force_push("production", rewritten)
    recorded = upstream_sync.poll()
    assert [e.type for e in recorded] == [FORCE_PUSHED, ACCEPTED]
    assert recorded[0].data["previous"] == served["production"] and recorded[1].data["forced"] is True
    reader = upstream_sync.mirror.files()
    assert reader.read("production", "helloservice/slo.yaml", commit=served["production"]) == old_slo

    upstream_sync.upstream.delete_branch("qa")
    recorded = upstream_sync.poll()
    assert [e.type for e in recorded] == [BRANCH_DELETED]
    snap = upstream_sync.store.current()
    assert snap.accepted["qa"] == served["qa"] and "qa" in snap.deleted  # keeps serving the last good commit
    assert snap.accepted["production"] == new
    assert reader.read("qa", "helloservice/values.yaml", commit=served["qa"]) is not None


def test_a_restart_rebuilds_the_same_snapshot_from_the_ledger_and_records_nothing_new(
    upstream_sync: UpstreamSync,
) -> None:
    upstream_sync.upstream.commit("main", {"shipyard.yaml": BROKEN_SHIPYARD}, "bad")
    upstream_sync.upstream.commit("qa", {"helloservice/values.yaml": "image: ghcr.io/x/y:v2\n"}, "deploy v2")
    upstream_sync.poll()
    before = upstream_sync.store.current()
    count = len(upstream_sync.ledger.events())

    upstream_sync.start()  # a new process on the same data directory
    after = upstream_sync.store.current()
    assert after.accepted == before.accepted and after.seen == before.seen
    assert after.rejected.keys() == before.rejected.keys()
    assert after.config is not None and after.project == "fulltour"
    assert upstream_sync.store.baseline() == fold_all(upstream_sync.ledger.events()).baseline()
    assert upstream_sync.poll() == []
    assert len(upstream_sync.ledger.events()) == count


def test_a_stage_named_by_a_new_shipyard_is_taken_up_from_its_existing_branch(
    tmp_path: Path, upstream_sync: UpstreamSync
) -> None:
    up = upstream_sync.upstream
    shipyard = (GitFiles(up.path).read("main", "shipyard.yaml") or b"").decode()
    hotfix = up.commit("hotfix", {"helloservice/values.yaml": "image: ghcr.io/x/y:v9\n"}, base="production")
    assert upstream_sync.poll() == []  # not a stage: ignored
    up.commit(
        "main",
        {
            "shipyard.yaml": shipyard + "    - name: hotfix\n      sequences:\n        - name: delivery\n"
            "          tasks:\n            - name: evaluation\n"
        },
        "add hotfix stage",
    )
    recorded = upstream_sync.poll()
    assert [(e.type, e.data["branch"]) for e in recorded] == [(ACCEPTED, "main"), (ACCEPTED, "hotfix")]
    assert upstream_sync.store.current().accepted["hotfix"] == hotfix


def test_decide_is_pure_and_its_ids_are_stable(upstream_sync: UpstreamSync) -> None:
    upstream_sync.upstream.commit("main", {"shipyard.yaml": BROKEN_SHIPYARD}, "bad")
    tips = upstream_sync.mirror.fetch()
    from reconciler.upstream.poll import diff_branches

    changes = diff_branches(upstream_sync.mirror.repo, upstream_sync.store.baseline(), tips)
    first = upstream_sync.store.decide(changes)
    second = SnapshotStore(upstream_sync.mirror.files())
    second.restore(upstream_sync.ledger.events())
    again = second.decide(changes)
    assert [e.id for e in first] == [e.id for e in again] and len(first) == 1
    assert upstream_sync.store.current().rejected == {}  # deciding changed nothing


def test_a_poll_whose_records_cannot_be_written_changes_nothing_and_comes_again(
    upstream_sync: UpstreamSync,
) -> None:
    """The source loop's steps in order: a failed record publishes nothing (no new snapshot, no
    wake-up), and the poller keeps its baseline, so the next poll admits the same change."""
    served = upstream_sync.store.current()
    upstream_sync.upstream.commit("main", {"shipyard.yaml": BROKEN_SHIPYARD}, "bad")
    kicks = upstream_sync.kicks

    def full_disk(events: object) -> list[bool]:
        raise OSError(28, "No space left on device")

    upstream_sync.source.ledger = type("Full", (), {"extend": staticmethod(full_disk)})()
    assert upstream_sync.poll() == []
    assert upstream_sync.store.current() is served and upstream_sync.kicks == kicks
    upstream_sync.source.ledger = upstream_sync.ledger
    assert [e.type for e in upstream_sync.poll()] == [REJECTED]
    assert "main" in upstream_sync.store.current().rejected and upstream_sync.kicks == kicks + 1


def test_reading_the_same_files_again_and_again_keeps_no_memory(upstream_sync: UpstreamSync) -> None:
    """A poll re-reads every service's files: each read of a path once kept its string (pygit2)."""
    import tracemalloc

    files = GitFiles(upstream_sync.upstream.path)
    paths = files.list("production")
    for path in paths:  # warm: caches, interned names
        files.read("production", "/".join(path.split("/")))
        files.tree_id("production", "/".join(path.split("/")))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000 // max(len(paths), 1) + 1):
            for path in paths:
                fresh = "/".join(path.split("/"))  # a new string object each time, as a poll makes
                assert files.read("production", fresh) is not None
                files.tree_id("production", fresh)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 40_000, f"{grown} bytes kept after re-reading {len(paths)} files ~2,000 times"


def test_files_read_the_same_after_the_start_up_sheds_its_git_caches(upstream_sync: UpstreamSync) -> None:
    """`App.start` lets go of what libgit2 cached for the first validation (the served files'
    handle and the mirror's): every file reads as it did, and the next commit is polled,
    validated and served as ever."""
    files = upstream_sync.store.files
    assert isinstance(files, GitFiles)
    paths = files.list("production")
    before = {p: files.read("production", p) for p in paths}
    dirs = files.dirs("production")
    files.shed_memory()
    upstream_sync.mirror.shed_memory()
    assert {p: files.read("production", p) for p in files.list("production")} == before
    assert files.dirs("production") == dirs
    files.shed_memory()
    upstream_sync.mirror.shed_memory()
    slo = files.read("production", "helloservice/slo.yaml") or b""
    tip = upstream_sync.upstream.commit("production", {"helloservice/slo.yaml": slo + b"\n# reviewed\n"})
    upstream_sync.poll()
    assert upstream_sync.store.current().commit("production") == tip
    assert files.read("production", "helloservice/slo.yaml") == slo + b"\n# reviewed\n"
