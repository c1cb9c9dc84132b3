"""The poll loop and the local watch against real repositories and a real git daemon."""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from reconciler.core.observations import UpstreamChanges
from reconciler.ledger.gitledger import Ledger
from reconciler.runtime.observability import configure_logging
from reconciler.settings import Settings
from reconciler.upstream.credentials import resolve_upstream
from reconciler.upstream.mirror import Mirror
from reconciler.upstream.poll import Poller, _diff_paths, diff_branches, poll_delay
from reconciler.upstream.watch import watch_upstream
from tests.support.gitserver import GitDaemon, SmartHttp, UpstreamRepo

REPO_ROOT = Path(__file__).resolve().parent.parent


class Recorder:
    """on_change that records every call and can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[UpstreamChanges] = []
        self.fail = False
        self.event = threading.Event()

    def __call__(self, changes: UpstreamChanges) -> None:
        if self.fail:
            raise RuntimeError("ledger unavailable")
        self.calls.append(changes)
        self.event.set()

    def commits(self, branch: str | None = None) -> list[str]:
        return [
            c.sha
            for changes in self.calls
            for b in changes.branches
            for c in b.commits
            if branch is None or b.branch == branch
        ]


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def local_mirror(tmp_path: Path, upstream: UpstreamRepo) -> Mirror:
    return Mirror(tmp_path / "data" / "upstream.git", resolve_upstream(Settings(upstream=str(upstream.path))))


def test_a_commit_is_reported_by_the_next_poll_with_its_services_and_paths(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_daemon: GitDaemon
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "a"})
    upstream_repo.commit("qa", {"helloservice/slo.yaml": "1", "other/slo.yaml": "1"}, base="main")
    mirror = Mirror(tmp_path / "m.git", resolve_upstream(Settings(upstream=git_daemon.url("project.git"))))
    recorder = Recorder()
    poller = Poller(mirror, recorder)
    first = poller.poll_once()
    assert first is not None and {c.branch for c in first.branches} == {"main", "qa"}
    assert all(c.created for c in first.branches)

    sha = upstream_repo.commit(
        "qa",
        {"helloservice/values.yaml": "image: x:2\n"},
        "Bump image\n\nSigned-off-by: Dev <dev@example.com>\n",
    )
    changes = poller.poll_once()
    assert changes is not None and [c.branch for c in changes.branches] == ["qa"]
    qa = changes.branches[0]
    assert qa.new == sha and not qa.forced and not qa.created
    assert qa.paths == ["helloservice/values.yaml"] and qa.services == ["helloservice"]
    assert [c.sha for c in qa.commits] == [sha]
    assert qa.commits[0].trailers == {"Signed-off-by": "Dev <dev@example.com>"}
    assert qa.commits[0].author_email == "dev@example.com"
    assert poller.poll_once() is not None and len(recorder.calls) == 2  # nothing new: not handed on


def test_force_push_deletion_and_truncation_are_described(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "a"})
    for i in range(5):
        upstream_repo.commit("qa", {f"svc{i}/slo.yaml": str(i)}, base="main")
    upstream_repo.commit("feature", {"x": "1"}, base="main")
    mirror = local_mirror(tmp_path, upstream_repo)
    baseline = mirror.fetch()
    rewritten = upstream_repo.force_push("qa", {"svc0/slo.yaml": "changed"})
    upstream_repo.delete_branch("feature")
    tips = mirror.fetch()
    changes = diff_branches(mirror.repo, baseline, tips, max_commits=3)
    qa, feature = changes.get("qa"), changes.get("feature")
    assert qa is not None and qa.forced and qa.new == rewritten
    assert "svc0/slo.yaml" in qa.paths and "shipyard.yaml" in qa.paths  # rewritten without main's file
    assert feature is not None and feature.deleted and "x" in feature.paths
    many = diff_branches(mirror.repo, {}, tips, max_commits=3)
    main = many.get("main")
    assert main is not None and main.created and len(main.commits) == 1 and not main.commits_truncated
    assert (
        diff_branches(
            mirror.repo, {"main": tips["main"]}, {"main": tips["main"], "qa": baseline["qa"]}, max_commits=3
        )
        .branches[0]
        .commits_truncated
    )


def test_a_failing_handler_gets_the_same_changes_again(tmp_path: Path, upstream_repo: UpstreamRepo) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "a"})
    recorder = Recorder()
    poller = Poller(local_mirror(tmp_path, upstream_repo), recorder)
    poller.poll_once()
    sha = upstream_repo.commit("main", {"shipyard.yaml": "b"})
    recorder.fail = True
    assert poller.poll_once() is None
    assert poller.health().last_error and "ledger unavailable" in (poller.health().last_error or "")
    recorder.fail = False
    changes = poller.poll_once()
    assert changes is not None and changes.branches[0].new == sha
    assert recorder.commits().count(sha) == 1


def test_backoff_doubles_per_failure_up_to_the_cap_with_bounded_jitter() -> None:
    assert poll_delay(30, 0.1, 0, 300, 0.0) == 30
    assert poll_delay(30, 0.1, 0, 300, 0.999) == pytest.approx(32.997)
    assert [poll_delay(1, 0, n, 10, 0.5) for n in range(1, 6)] == [2, 4, 8, 10, 10]
    assert poll_delay(1, 0.5, 40, 10, 0.99) == 10  # the cap holds with jitter and huge failure counts


def test_the_upstream_going_away_backs_off_shows_it_and_recovers_without_loss_or_duplicates(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_daemon: GitDaemon
) -> None:
    main = upstream_repo.commit("main", {"shipyard.yaml": "a"})
    made = [main, upstream_repo.commit("qa", {"svc/values.yaml": "image: x:0\n"}, base="main")]
    mirror = Mirror(tmp_path / "m.git", resolve_upstream(Settings(upstream=git_daemon.url("project.git"))))
    recorder = Recorder()
    poller = Poller(mirror, recorder, interval=0.05, jitter=0.0, backoff_max=0.4)
    poller.start()
    try:
        assert wait_until(lambda: poller.health().state == "ok" and recorder.calls, 10)
        git_daemon.stop()
        made.append(
            upstream_repo.commit("qa", {"svc/values.yaml": "image: x:1\n"})
        )  # pushed while we are cut off
        assert wait_until(lambda: poller.health().consecutive_failures >= 4, 10)
        health = poller.health()
        assert health.state == "backing-off" and health.reachable is False
        assert health.last_error and "unreachable" in health.last_error
        assert health.last_success is not None and health.next_attempt is not None
        assert health.next_attempt > health.last_attempt  # type: ignore[operator]
        made.append(upstream_repo.commit("qa", {"svc/values.yaml": "image: x:2\n"}))
        git_daemon.start()
        assert wait_until(lambda: poller.health().state == "ok" and made[-1] in recorder.commits(), 10)
    finally:
        poller.stop()
    seen = recorder.commits("qa")  # qa's history includes main's first commit
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    assert recorder.commits("main") == [main]
    assert poller.health().branches["qa"] == made[-1]


def test_a_watched_local_upstream_is_polled_within_a_second_of_a_commit(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "a"})
    recorder = Recorder()
    mirror = local_mirror(tmp_path, upstream_repo)
    poller = Poller(mirror, recorder, interval=3600)
    poller.start()
    watcher = watch_upstream(mirror.upstream, poller)
    assert watcher is not None and poller.health().watching
    try:
        assert recorder.event.wait(10)  # the first poll at start
        recorder.event.clear()
        sha = upstream_repo.commit("main", {"shipyard.yaml": "b"})
        assert recorder.event.wait(1.0), "no poll within 1 s of the commit"
        assert sha in recorder.commits()
        recorder.event.clear()
        branch = upstream_repo.commit("production", {"x": "1"}, base="main")  # a new branch, too
        assert recorder.event.wait(1.0)
        assert recorder.calls[-1].get("production") is not None
        assert recorder.calls[-1].tips["production"] == branch
    finally:
        watcher.stop()
        poller.stop()


def test_only_local_upstreams_are_watched(tmp_path: Path, git_daemon: GitDaemon) -> None:
    mirror = Mirror(tmp_path / "m.git", resolve_upstream(Settings(upstream=git_daemon.url("project.git"))))
    poller = Poller(mirror, Recorder())
    assert watch_upstream(mirror.upstream, poller) is None and not poller.health().watching


def test_a_token_never_reaches_health_status_or_log(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_http_factory: Callable[..., SmartHttp]
) -> None:
    token = "ghp_Zx81tokenValueNeverShown"
    server = git_http_factory(token=token)
    upstream_repo.commit("main", {"shipyard.yaml": "a"})
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    try:
        url = server.url("project.git").replace("http://", f"http://{token}@")
        poller = Poller(Mirror(tmp_path / "m.git", resolve_upstream(Settings(upstream=url))), Recorder())
        assert poller.poll_once() is not None
        server.token = "rotated-elsewhere"  # our token stops working
        assert poller.poll_once() is None
        health = poller.health()
    finally:
        configure_logging(fmt="json", stream=io.StringIO())
    assert health.authenticated is False and health.reachable is True
    status = health.model_dump_json()
    assert token not in status and token not in buf.getvalue()
    assert "upstream.fetch_failed" in buf.getvalue()
    assert json.loads(status)["url"] == server.url("project.git")


# ------------------------------------------------------------------------------ crash safety

_POLLER = textwrap.dedent(
    """
    import sys, logging, structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    from pathlib import Path
    from reconciler.ledger.gitledger import Ledger
    from reconciler.settings import Settings
    from reconciler.upstream.credentials import resolve_upstream
    from reconciler.upstream.mirror import Mirror
    from reconciler.upstream.poll import Poller
    from reconciler.upstream.snapshot import SnapshotStore

    data, upstream = Path(sys.argv[1]), sys.argv[2]
    ledger = Ledger(data / "ledger.git", compact_every=2)
    mirror = Mirror.in_data_dir(data, resolve_upstream(Settings(upstream=upstream)))
    store = SnapshotStore(mirror.files())
    store.restore(ledger.events())

    def on_change(changes):
        events = store.decide(changes)
        ledger.extend(events)
        store.fold(events)

    Poller(mirror, on_change, baseline=store.baseline(), ignore_branches={"reconciler-ledger"}).poll_once()
    """
)


def _poll_process(data: Path, upstream: Path, crash: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RECONCILER_CRASH_AT", None)
    if crash:
        env["RECONCILER_CRASH_AT"] = crash
    return subprocess.run(
        [sys.executable, "-c", _POLLER, str(data), str(upstream)], env=env, capture_output=True, timeout=120
    )


def _ledger_state(data: Path) -> list[tuple[str, str, str]]:
    return [(e.id, e.type, json.dumps(e.data, sort_keys=True)) for e in Ledger(data / "ledger.git").events()]


def _history(upstream: UpstreamRepo) -> list[Callable[[], object]]:
    """Steps a team takes upstream; each is followed by one poll (one process)."""
    example = REPO_ROOT / "example-upstream"
    return [
        lambda: upstream.seed_from_directory(example),
        lambda: upstream.commit(
            "qa", {"helloservice/values.yaml": "image: ghcr.io/podtato-head/podtatoserver:v0.1.2\n"}
        ),
        lambda: upstream.commit(
            "main", {"shipyard.yaml": "apiVersion: spec.keptn.sh/0.2.2\nspec: {stages: oops}\n"}
        ),
        lambda: upstream.force_push("production", {"helloservice/slo.yaml": "broken: [\n"}),
    ]


def _run_history(
    root: Path, crash_step: int | None = None, crash: str | None = None
) -> list[tuple[str, str, str]]:
    upstream = UpstreamRepo(root / "upstream.git")
    data = root / "data"
    for step, change in enumerate(_history(upstream)):
        change()
        if step == crash_step:
            killed = _poll_process(data, upstream.path, crash=crash)
            assert killed.returncode == -signal.SIGKILL, f"crash point {crash} not reached at step {step}"
        result = _poll_process(data, upstream.path)
        assert result.returncode == 0, result.stderr.decode()
    return _ledger_state(data)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, str]]:
    state = _run_history(tmp_path_factory.mktemp("uninterrupted"))
    types = [t for _, t, _ in state]
    assert "reconciler.upstream.rejected" in types and "reconciler.upstream.force-pushed" in types
    assert "sh.keptn.event.qa.delivery.triggered" in types
    return state


@pytest.mark.parametrize(
    ("step", "crash"),
    [
        (0, "poll.after-fetch"),
        (0, "ledger.after-blob:3"),
        (1, "ledger.after-commit-objects"),
        (1, "ledger.after-ref"),
        (2, "poll.after-handler"),
        (3, "ledger.after-pack"),
    ],
)
def test_killed_between_any_two_steps_of_a_poll_a_restart_ends_in_the_same_state(
    tmp_path: Path, uninterrupted: list[tuple[str, str, str]], step: int, crash: str
) -> None:
    assert _run_history(tmp_path, step, crash) == uninterrupted


def test_keep_alive_refs_survive_in_the_mirror_after_restart(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"a": "1"})
    old = upstream_repo.commit("qa", {"a": "2"}, base="main")
    mirror = local_mirror(tmp_path, upstream_repo)
    mirror.fetch()
    upstream_repo.force_push("qa", {"b": "1"})
    mirror.fetch()
    reopened = pygit2.Repository(str(tmp_path / "data" / "upstream.git"))
    assert reopened.get(old) is not None
    assert Ledger(tmp_path / "data" / "ledger.git").tip is None  # the mirror is not the ledger


def _tree_of(repo: pygit2.Repository, files: dict[str, tuple[bytes, int]]) -> pygit2.Tree:
    """A tree from path -> (content, mode); nested directories built bottom-up."""
    index = pygit2.Index()
    for path, (data, mode) in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), mode))
    return repo[index.write_tree(repo)].peel(pygit2.Tree)


def _libgit2_paths(old: pygit2.Tree | None, new: pygit2.Tree | None) -> list[str]:
    if old is None:
        assert new is not None
        diff = new.diff_to_tree(swap=True)
    elif new is None:
        diff = old.diff_to_tree()
    else:
        diff = old.diff_to_tree(new)
    paths = {d.old_file.path for d in diff.deltas} | {d.new_file.path for d in diff.deltas}
    return sorted(paths - {""})


def test_the_changed_paths_of_a_commit_are_exactly_what_git_reports(tmp_path: Path) -> None:
    """The poll's own tree walk (which skips unchanged subtrees) names the same changed files
    as libgit2's diff for every kind of change: edits deep down, added and removed
    directories, a file that became a directory and back, a mode change."""

    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True)
    rng = random.Random(19)
    blob, exe = int(pygit2.enums.FileMode.BLOB), int(pygit2.enums.FileMode.BLOB_EXECUTABLE)
    files = {
        f"svc{i}/{name}": (f"{i}{name}".encode(), blob)
        for i in range(30)
        for name in ("slo.yaml", "job/config.yaml")
    }
    trees = [_tree_of(repo, files)]
    for step in range(60):
        files = dict(files)
        kind = step % 6
        path = rng.choice(sorted(files))
        if kind == 0:
            files[path] = (files[path][0] + b"!", files[path][1])  # edit
        elif kind == 1:
            files[f"new{step}/deep/er/file.yaml"] = (b"x", blob)  # added directory
        elif kind == 2:
            top = path.split("/")[0]
            files = {p: v for p, v in files.items() if not p.startswith(top + "/")}  # removed directory
        elif kind == 3:
            files[path] = (files[path][0], exe if files[path][1] == blob else blob)  # mode only
        elif kind == 4:
            del files[path]  # a file becomes a directory of the same name
            files[path + "/inner.yaml"] = (b"y", blob)
        else:
            files.pop(path)
        trees.append(_tree_of(repo, files))
    pairs: list[tuple[pygit2.Tree | None, pygit2.Tree | None]] = [
        *itertools.pairwise(trees),
        (trees[0], trees[-1]),
        (None, trees[5]),
        (trees[7], None),
    ]
    for old, new in pairs:
        assert _diff_paths(repo, old, new) == _libgit2_paths(old, new)
    assert any(_diff_paths(repo, a, b) for a, b in pairs)
