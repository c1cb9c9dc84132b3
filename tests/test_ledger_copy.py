"""The ledger's copy in the upstream: local upstreams written by git, long histories pushed in
steps, and the mirror leaving the ledger branch out (real repositories and a git daemon)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from reconciler.formats.events import KeptnEvent
from reconciler.ledger import transfer
from reconciler.ledger.gitledger import Ledger
from reconciler.runtime.observability import configure_logging
from reconciler.upstream.credentials import Upstream
from reconciler.upstream.mirror import Mirror
from tests.support.gitserver import GitDaemon, UpstreamRepo
from tests.support.history import deliveries, key_file


def event(i: int) -> KeptnEvent:
    return KeptnEvent(
        id=f"evt-{i:05d}",
        source="shipyard-controller",
        type="sh.keptn.event.t.triggered",
        time="2024-05-01T10:00:00.000Z",
        shkeptncontext="ctx",
        data={"n": i},
    )


def logged(fn: object) -> list[dict[str, object]]:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    try:
        fn()  # type: ignore[operator]
    finally:
        configure_logging(fmt="json", stream=io.StringIO())
    return [json.loads(line) for line in buf.getvalue().splitlines()]


@pytest.mark.parametrize("git", ["cli", "libgit2"])
def test_a_local_upstream_takes_the_ledger_and_gives_it_back(
    tmp_path: Path, upstream_repo: UpstreamRepo, git: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if git == "libgit2":
        monkeypatch.setattr(transfer.shutil, "which", lambda _name: None)
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    key = key_file(tmp_path / "secret")
    history = deliveries(2)
    ledger = Ledger.in_data_dir(tmp_path / "data", key_file=key)
    ledger.extend(history[:12])
    assert ledger.push(str(upstream_repo.path)).pushed
    ledger.extend(history[12:15])
    assert ledger.push(f"file://{upstream_repo.path}").pushed  # the next batch, file:// form
    assert upstream_repo.tip("reconciler-ledger") == ledger.tip

    fresh = Ledger.in_data_dir(tmp_path / "empty", key_file=key)
    assert fresh.recover(str(upstream_repo.path)) == 15
    assert [e.to_json() for e in fresh.events()] == [e.to_json() for e in ledger.events()]


def test_a_local_upstream_written_by_someone_else_refuses_a_non_fast_forward(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    other = Ledger(tmp_path / "other" / "ledger.git")
    other.append(event(99))
    assert other.push(str(upstream_repo.path)).pushed
    ours = Ledger(tmp_path / "data" / "ledger.git")
    ours.append(event(1))
    result = ours.push(str(upstream_repo.path), attempts=3, retry_delay=0.01)
    assert not result.pushed and result.attempts == 1  # not retried: retrying cannot help
    assert upstream_repo.tip("reconciler-ledger") == other.tip


def test_a_long_history_is_pushed_to_a_remote_in_steps(
    tmp_path: Path, git_daemon: GitDaemon, upstream_repo: UpstreamRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "PUSH_STEP", 10)
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    ledger = Ledger(tmp_path / "data" / "ledger.git")
    ledger.extend([event(i) for i in range(25)])
    url = git_daemon.url("project.git")

    lines = logged(lambda: ledger.push(url))
    assert upstream_repo.tip("reconciler-ledger") == ledger.tip
    assert [line["steps"] for line in lines if line["event"] == "ledger.pushed_in_steps"] == [3]
    assert "refs/reconciler/push-step" not in list(ledger._repo.references)

    ledger.extend([event(i) for i in range(25, 28)])  # a short batch later: one push
    lines = logged(lambda: ledger.push(url))
    assert upstream_repo.tip("reconciler-ledger") == ledger.tip
    assert not [line for line in lines if line["event"] == "ledger.pushed_in_steps"]


def test_the_mirror_leaves_the_ledger_branch_out_and_still_follows_every_other_branch(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    data = tmp_path / "data"
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    qa = upstream_repo.commit("qa", {"svc/slo.yaml": "a"})
    upstream = Upstream(url=str(upstream_repo.path), transport="local")
    # a mirror from before: it had fetched the ledger branch back from the upstream
    ledger = Ledger(data / "ledger.git")
    ledger.extend([event(i) for i in range(5)])
    assert ledger.push(str(upstream_repo.path)).pushed
    assert "reconciler-ledger" in Mirror(data / "upstream.git", upstream).fetch()

    mirror = Mirror.in_data_dir(data, upstream)
    assert mirror.fetch() == {"main": upstream_repo.tip("main"), "qa": qa}  # dropped from the mirror
    ledger.append(event(5))
    assert ledger.push(str(upstream_repo.path)).pushed
    staging = upstream_repo.commit("staging", {"svc/slo.yaml": "b"})
    assert mirror.fetch() == {"main": upstream_repo.tip("main"), "qa": qa, "staging": staging}
    assert mirror.fetch() == {"main": upstream_repo.tip("main"), "qa": qa, "staging": staging}  # no-op

    upstream_repo.delete_branch("qa")  # a deleted branch is dropped and its tip kept readable
    assert "qa" not in mirror.fetch()
    assert mirror.has_commit(qa)
    assert not mirror.has_commit(ledger.tip or "")  # the ledger's newest commit never came back


def test_a_new_ledger_names_its_branch_before_the_first_event(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    data = tmp_path / "data"
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    other = Ledger(tmp_path / "elsewhere" / "ledger.git", branch="audit")  # another reconciler's copy
    other.append(event(1))
    assert other.push(str(upstream_repo.path)).pushed
    Ledger(data / "ledger.git", branch="audit")  # ours: empty so far
    mirror = Mirror.in_data_dir(data, Upstream(url=str(upstream_repo.path), transport="local"))
    assert mirror.fetch() == {"main": upstream_repo.tip("main")}
