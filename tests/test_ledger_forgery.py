"""Forged history in the upstream's copy of the ledger (issue 20, item 5a and 5d).

Whoever can push the upstream's `reconciler-ledger` branch must not be able to make a
reconciler adopt events it never wrote or accepted: an attacker's commit is built here
exactly as the ledger builds one and pushed with `git push` over git:// into a real
git daemon; a reconciler recovering from that copy (same signing key, as a Secret gives
it) must refuse it, naming the commit, and adopt nothing. And an upstream copy longer
than ours (an old backup restored) is adopted when it verifies, never overwritten.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest

from reconciler.core.outcomes import PartHealth
from reconciler.formats.events import KeptnEvent, derived_id, format_time, sequence_type
from reconciler.ledger import gitledger, signing
from reconciler.ledger.errors import LedgerRefused
from reconciler.ledger.gitledger import Ledger
from reconciler.ledger.push import PART, LedgerPusher
from reconciler.ledger.signing import KeySource, read_key
from reconciler.ledger.transfer import local_tip
from reconciler.ledger.verify import HistoryCheck
from reconciler.runtime import health
from reconciler.runtime.observability import configure_logging
from tests.support.engine import T0
from tests.support.gitserver import GIT, GitDaemon, UpstreamRepo
from tests.support.history import (
    deliveries,
    forge_commit,
    forged_approval,
    key_file,
    legit_approval,
    pending_approval,
)

BRANCH = "reconciler-ledger"


def git(*args: str) -> str:
    return subprocess.run([GIT, *args], check=True, capture_output=True, text=True, timeout=60).stdout


def attacker_push(tmp_path: Path, url: str, event: KeptnEvent, key: signing.SigningKey | None = None) -> str:
    """Fetch the upstream's ledger branch, add `event` as the ledger would, push it (a fast-forward)."""
    clone = tmp_path / "attacker.git"
    if not clone.exists():
        git("init", "--quiet", "--bare", str(clone))
    git(f"--git-dir={clone}", "fetch", "--quiet", url, f"+refs/heads/{BRANCH}:refs/heads/{BRANCH}")
    forged = forge_commit(clone, BRANCH, event, key=key)
    git(f"--git-dir={clone}", "push", "--quiet", url, f"refs/heads/{BRANCH}:refs/heads/{BRANCH}")
    return forged


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return key_file(tmp_path / "secret")


def pushed_pending_approval(tmp_path: Path, url: str, key: Path) -> tuple[Ledger, KeptnEvent]:
    """A reconciler's ledger with a delivery waiting at its manual approval, pushed upstream."""
    history, approval = pending_approval()
    ledger = Ledger.in_data_dir(tmp_path / "data", key_file=key)
    ledger.extend(history)
    assert ledger.push(url).pushed
    return ledger, approval


@pytest.fixture(params=["git-daemon", "local"])
def upstream_url(request: pytest.FixtureRequest, upstream_repo: UpstreamRepo) -> tuple[str, str]:
    """The upstream over git:// (libgit2 fetches) and as a local path (the git CLI fetches)."""
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    daemon = GitDaemon(upstream_repo.path.parent)
    daemon.start()
    request.addfinalizer(daemon.stop)
    url = daemon.url("project.git")
    return url, url if request.param == "git-daemon" else str(upstream_repo.path)


def test_a_forged_approval_pushed_to_the_upstream_is_refused_on_recovery(
    tmp_path: Path, upstream_url: tuple[str, str], upstream_repo: UpstreamRepo, key: Path
) -> None:
    daemon_url, url = upstream_url
    original, approval = pushed_pending_approval(tmp_path, daemon_url, key)
    forged = attacker_push(tmp_path, daemon_url, forged_approval(approval))
    assert upstream_repo.tip(BRANCH) == forged  # the daemon took the fast-forward

    fresh = Ledger.in_data_dir(tmp_path / "lost-and-new", key_file=key)
    with pytest.raises(LedgerRefused) as refused:
        fresh.recover(url)
    assert refused.value.commit == forged
    message = str(refused.value)
    assert forged[:12] in message and "no signature" in message
    assert fresh.tip is None and len(fresh) == 0  # nothing adopted, not even the good commits under it
    assert fresh._repo.references.get("refs/reconciler/upstream-ledger") is None
    assert original.tip != upstream_repo.tip(BRANCH)


def test_the_reconcilers_own_history_with_a_real_approval_is_recovered(
    tmp_path: Path, upstream_url: tuple[str, str], key: Path
) -> None:
    daemon_url, url = upstream_url
    original, approval = pushed_pending_approval(tmp_path, daemon_url, key)
    original.append(legit_approval(approval))
    assert original.push(daemon_url).pushed

    fresh = Ledger.in_data_dir(tmp_path / "new", key_file=key)
    assert fresh.recover(url) == len(original)
    assert [e.to_json() for e in fresh.events()] == [e.to_json() for e in original.events()]


@pytest.mark.parametrize(
    "how", ["other-key", "tampered", "leaked-key-early-approval", "leaked-key-engine-id"]
)
def test_forgeries_signed_with_some_key_are_refused_with_what_is_wrong(
    tmp_path: Path, git_daemon: GitDaemon, upstream_repo: UpstreamRepo, key: Path, how: str
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    url = git_daemon.url("project.git")
    _, approval = pushed_pending_approval(tmp_path, url, key)
    ours = read_key(key)
    if how == "other-key":  # another reconciler's key (or one the attacker made up)
        forged = attacker_push(tmp_path, url, forged_approval(approval), read_key(key_file(tmp_path / "x")))
        expected = "signed with another key"
    elif how == "tampered":  # the reconciler's newest commit, its event changed, its signature kept
        clone = tmp_path / "attacker.git"
        git("init", "--quiet", "--bare", str(clone))
        git(f"--git-dir={clone}", "fetch", "--quiet", url, f"+refs/heads/{BRANCH}:refs/heads/{BRANCH}")
        repo = pygit2.Repository(str(clone))
        signed = repo.references[f"refs/heads/{BRANCH}"].peel(pygit2.Commit)
        event_id = gitledger.event_id_of(signed.message) or ""
        original = KeptnEvent.from_json(
            repo[signed.tree[gitledger.event_path(event_id)].id].peel(pygit2.Blob).data
        )
        changed = original.model_copy(update={"data": {**original.data, "message": "automatic"}})
        parent = signed.parents[0]
        blob = repo.create_blob(changed.to_json().encode())
        tree = gitledger._insert(repo, parent.tree, gitledger.event_key(event_id), blob)
        moved = repo.create_commit(None, signed.author, signed.committer, signed.message, tree, [parent.id])
        repo.references.create(f"refs/heads/{BRANCH}", moved, force=True)
        git(
            f"--git-dir={clone}",
            "push",
            "--quiet",
            "--force",
            url,
            f"refs/heads/{BRANCH}:refs/heads/{BRANCH}",
        )
        forged = str(moved)
        expected = "does not match its content"
    elif how == "leaked-key-early-approval":  # validly signed, but the approval predates its own .started
        forged = attacker_push(tmp_path, url, forged_approval(approval, minutes=-30), ours)
        expected = "before the approval.started it answers"
    else:  # validly signed, an engine-only event whose id the engine would never derive
        finished = KeptnEvent(
            id="finished-by-hand",
            source="shipyard-controller",
            type=sequence_type("qa", "delivery", "finished"),
            time=format_time(T0),
            shkeptncontext=approval.shkeptncontext,
            triggeredid=derived_id("test-trigger", "qa", "delivery", approval.shkeptncontext, "[]"),
            data={
                "project": "fulltour",
                "stage": "qa",
                "service": "helloservice",
                "result": "pass",
                "status": "succeeded",
            },
        )
        forged = attacker_push(tmp_path, url, finished, ours)
        expected = "not the one the engine derives"
    fresh = Ledger.in_data_dir(tmp_path / "new", key_file=key)
    with pytest.raises(LedgerRefused) as refused:
        fresh.recover(url)
    assert refused.value.commit == forged, str(refused.value)
    assert expected in refused.value.problem
    assert fresh.tip is None


def test_an_unsigned_ledger_is_signed_from_its_next_append_and_then_recovers(
    tmp_path: Path,
    git_daemon: GitDaemon,
    upstream_repo: UpstreamRepo,
    key: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """First start of this version on a ledger written before signing: its history is trusted
    (its own data directory), the next commit is signed and vouches for it."""
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    url = git_daemon.url("project.git")
    history = deliveries(2)
    with monkeypatch.context() as old_version:
        old_version.setattr(gitledger, "sign", lambda _key, _tree, _parents, message: message)
        Ledger.in_data_dir(tmp_path / "data", key_file=key).extend(history[:20])
    before = Ledger.in_data_dir(tmp_path / "data", key_file=key)
    assert before.push(url).pushed
    with pytest.raises(LedgerRefused, match="before ledger signing"):
        Ledger.in_data_dir(tmp_path / "new1", key_file=key).recover(url)  # all unsigned: nothing vouches

    logs = io.StringIO()
    configure_logging(fmt="json", stream=logs)
    try:
        before.extend(history[20:])
    finally:
        configure_logging(fmt="json", stream=io.StringIO())
    started = [json.loads(line) for line in logs.getvalue().splitlines() if "ledger.signing_started" in line]
    assert len(started) == 1 and started[0]["trusted_up_to"] != started[0]["first_signed"]
    assert before.push(url).pushed
    fresh = Ledger.in_data_dir(tmp_path / "new2", key_file=key)
    assert fresh.recover(url) == len(history)


def test_the_key_is_made_on_first_append_private_and_never_stored_in_the_ledger(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ledger = Ledger.in_data_dir(data)
    assert len(ledger) == 0 and not (data / "ledger.key").exists()  # reading makes no key
    ledger.extend(deliveries(1))
    key_path = data / "ledger.key"
    assert key_path.stat().st_mode & 0o777 == 0o600
    secret = key_path.read_text().strip()
    objects = subprocess.run(
        [GIT, f"--git-dir={data / 'ledger.git'}", "cat-file", "--batch-all-objects", "--batch"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    assert secret.encode() not in objects
    assert repr(ledger.signing_key()).count(secret) == 0
    with pytest.raises(gitledger.LedgerError, match="cannot read it"):
        Ledger.in_data_dir(tmp_path / "d2", key_file=tmp_path / "missing").extend(deliveries(1))


def test_every_history_the_engine_writes_passes_the_checks() -> None:
    """No false alarm: finished deliveries, an automatic and a manual approval answered in time."""
    check = HistoryCheck()
    history = deliveries(3)
    pending, approval = pending_approval()
    for event in [*history, *pending, legit_approval(approval)]:
        assert check.check(event) is None, event.type
    assert "already answered" in (
        check.check(forged_approval(approval, minutes=20).model_copy(update={"id": "x"})) or ""
    )


# ------------------------------------------------------------------ 5d: an old backup


def restored_backup(tmp_path: Path, url: str, key: Path) -> tuple[Ledger, str]:
    """A data directory backed up at 20 events, the reconciler going on to 36 and pushing, then
    the backup restored: returns the restored ledger and the upstream's (longer) tip."""
    history = deliveries(3)
    ledger = Ledger.in_data_dir(tmp_path / "data", key_file=key)
    ledger.extend(history[:20])
    assert ledger.push(url).pushed
    shutil.copytree(tmp_path / "data", tmp_path / "backup")
    ledger.extend(history[20:])
    assert ledger.push(url).pushed
    newest = ledger.tip
    assert newest is not None
    shutil.rmtree(tmp_path / "data")
    shutil.copytree(tmp_path / "backup", tmp_path / "data")
    return Ledger.in_data_dir(tmp_path / "data", key_file=key), newest


@pytest.mark.parametrize("kind", ["bare", "worktree", "git-daemon"])
def test_a_restored_old_backup_adopts_the_upstreams_longer_ledger_and_never_overwrites_it(
    tmp_path: Path, upstream_repo: UpstreamRepo, key: Path, kind: str
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    url = str(upstream_repo.path)
    daemon: GitDaemon | None = None
    if kind == "worktree":  # a local upstream with a work tree (checked out on main)
        work = tmp_path / "work"
        git("clone", "--quiet", str(upstream_repo.path), str(work))
        url = str(work)
    elif kind == "git-daemon":
        daemon = GitDaemon(upstream_repo.path.parent)
        daemon.start()
        url = daemon.url("project.git")
    try:
        restored, newest = restored_backup(tmp_path, url, key)
        assert len(restored) == 20
        health.reset()
        pusher = LedgerPusher(restored, url, mode="always")
        result = pusher.push_if_due(force=True)
        assert result is not None and result.pushed, result
        assert restored.tip == newest  # adopted, verified
        assert (
            len(restored.refresh()) == 16 and len(restored.events()) == 36
        )  # the control loop folds them next
        where = upstream_repo.path if daemon is not None else Path(url)
        assert local_tip(where, f"refs/heads/{BRANCH}") == newest  # never rewound to the backup's 20
        assert pusher.health() == PartHealth(PART)  # the copy works: nothing on the problems board
    finally:
        if daemon is not None:
            daemon.stop()


def test_a_diverged_backup_is_reported_and_neither_side_is_overwritten(
    tmp_path: Path, upstream_repo: UpstreamRepo, key: Path
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    url = str(upstream_repo.path)
    restored, newest = restored_backup(tmp_path, url, key)
    restored.extend(deliveries(1, start=50))  # the restored copy went on on its own
    ours = restored.tip
    health.reset()
    pusher = LedgerPusher(restored, url, mode="always")
    result = pusher.push_if_due(force=True)
    assert result is not None and not result.pushed
    assert upstream_repo.tip(BRANCH) == newest and restored.tip == ours
    problem = (pusher.health() or PartHealth(PART)).problem or ""
    assert "diverged" in problem and newest[:12] in problem and "16 commit(s) only there" in problem
    assert pusher.status().enabled  # still trying (an operator may fix either side), never forcing


def test_an_upstream_extension_that_fails_verification_is_not_adopted_nor_overwritten(
    tmp_path: Path, git_daemon: GitDaemon, upstream_repo: UpstreamRepo, key: Path
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    url = git_daemon.url("project.git")
    ledger, approval = pushed_pending_approval(tmp_path, url, key)
    ours = ledger.tip
    forged = attacker_push(tmp_path, url, forged_approval(approval))
    health.reset()
    pusher = LedgerPusher(ledger, url, mode="always")
    result = pusher.push_if_due(force=True)
    assert result is not None and not result.pushed
    assert ledger.tip == ours and upstream_repo.tip(BRANCH) == forged
    assert forged[:12] in ((pusher.health() or PartHealth(PART)).problem or "")


def test_keys_resolve_lazily_and_prefer_the_configured_secret(tmp_path: Path, key: Path) -> None:
    source = KeySource(tmp_path / "data" / "ledger.key", configured=key)
    assert source.get(create=False) == read_key(key)
    assert not (tmp_path / "data" / "ledger.key").exists()


# ------------------------------------------------------------------ the incident, end to end

APP_SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: shipyard-shop}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - name: approval
              properties: {pass: manual, warning: manual}
            - name: deploy
"""
DEPLOY_JOB = """\
apiVersion: v2
actions:
  - name: deploy
    events:
      - name: sh.keptn.event.deploy.triggered
    tasks:
      - name: record
        image: python:3.11-slim
        cmd: ["{python}"]
        args: ["-c", "import sys; open(sys.argv[1], 'a').write('deployed' + chr(10))", "{runs}"]
        maxPollDuration: 60
"""


def test_a_reconciler_recovering_a_forged_approval_refuses_to_start_and_deploys_nothing(
    tmp_path: Path, git_daemon: GitDaemon, upstream_repo: UpstreamRepo
) -> None:
    """The incident: a manual approval pending, the attacker pushes its approval.finished to the
    upstream's ledger branch, the data directory is lost, a new reconciler recovers from the
    upstream (with the old one's key, kept as a Secret) and deployed. Now it refuses to start."""
    import sys
    import threading

    from reconciler.app import App
    from reconciler.settings import Settings
    from tests.support.waiting import wait_for

    runs = tmp_path / "runs.txt"
    upstream_repo.commit("main", {"shipyard.yaml": APP_SHIPYARD, "metadata.yaml": "projectName: shop\n"})
    job = DEPLOY_JOB.format(python=sys.executable, runs=runs)
    upstream_repo.commit("qa", {"web/job/config.yaml": job, "web/values.yaml": "image: web:1\n"}, base="main")

    def settings(data: Path, **extra: object) -> Settings:
        return Settings(
            upstream=str(upstream_repo.path),
            data_dir=data,
            poll_interval=0.5,
            api_listen="",
            runner="local",
            local_commands=[sys.executable],  # the deploy job is a python one-liner
            **extra,
        )

    first = App(settings(tmp_path / "data"), serve_api=False).start()
    threading.Thread(target=first.run_forever, daemon=True).start()
    try:
        upstream_repo.commit("qa", {"web/values.yaml": "image: web:2\n"}, "deploy web 2")
        wait_for(
            lambda: any(e.type == "sh.keptn.event.approval.started" for e in first.ledger.events()),
            what="the approval waiting for a person",
        )
        approval = next(e for e in first.ledger.events() if e.type == "sh.keptn.event.approval.triggered")
    finally:
        first.stop(grace=5)  # pushes the ledger to the upstream
    assert upstream_repo.tip(BRANCH) == first.ledger.tip

    forged = attacker_push(tmp_path, git_daemon.url("project.git"), forged_approval(approval, minutes=-1))
    kept_key = tmp_path / "data" / "ledger.key"
    second = App(settings(tmp_path / "new-data", ledger_key_file=kept_key), serve_api=False)
    with pytest.raises(LedgerRefused) as refused:
        second.start()
    assert refused.value.commit == forged and forged[:12] in str(refused.value)
    assert not runs.exists()  # nothing deployed
    assert len(Ledger.in_data_dir(tmp_path / "new-data", key_file=kept_key)) == 0


def test_a_reconciler_started_on_an_old_backup_adopts_the_upstreams_ledger_before_replaying(
    tmp_path: Path, upstream_repo: UpstreamRepo, key: Path
) -> None:
    from reconciler.app import App
    from reconciler.settings import Settings

    upstream_repo.commit("main", {"shipyard.yaml": APP_SHIPYARD, "metadata.yaml": "projectName: shop\n"})
    _, newest = restored_backup(tmp_path, str(upstream_repo.path), key)
    settings = Settings(
        upstream=str(upstream_repo.path), data_dir=tmp_path / "data", api_listen="", ledger_key_file=key
    )
    app = App(settings, serve_api=False).start()
    try:
        tip = app.ledger.tip
        assert tip is not None and app.ledger._is_ancestor(newest, tip)  # theirs, then what this start added
        assert (
            len({e.shkeptncontext for e in app.ledger.events() if e.shkeptncontext.startswith("ctx-")}) == 3
        )
    finally:
        app.stop(grace=5)
    upstream = upstream_repo.tip(BRANCH)
    assert upstream is not None and app.ledger._is_ancestor(newest, upstream)  # never rewound
