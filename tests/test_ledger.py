"""The events ledger on real git repositories: one commit per event, CAS appends, replay, push/recover."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pygit2
import pytest

from reconciler.formats.events import KeptnEvent
from reconciler.ledger import gitledger
from reconciler.ledger.gitledger import Ledger, event_path
from reconciler.ledger.push import LedgerPusher
from reconciler.runtime.observability import configure_logging
from reconciler.upstream.credentials import Credentials
from tests.support.events import now_text
from tests.support.gitserver import GitDaemon, SmartHttp, UpstreamRepo
from tests.support.history import deliveries, key_file

REPO_ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git")


def event(i: int, *, ctx: str = "5f1c8f2e-0000-4000-8000-000000000000", **data: object) -> KeptnEvent:
    return KeptnEvent(
        id=f"evt-{i:05d}",
        source="shipyard-controller",
        type="sh.keptn.event.deployment.triggered",
        time="2024-05-01T10:00:00.000Z",
        shkeptncontext=ctx,
        triggeredid=f"trig-{i}" if i % 2 else None,
        data={"project": "fulltour", "stage": "qa", "service": "helloservice", "n": i, **data},
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], check=True, capture_output=True, text=True
    ).stdout


def test_each_event_is_one_commit_readable_with_git_log(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.git")
    ev = event(1)
    assert ledger.append(ev) is True
    assert ledger.append(event(2)) is True

    oneline = git(
        tmp_path / "ledger.git", "log", "--oneline", "--format=%s", "reconciler-ledger"
    ).splitlines()
    assert oneline == [
        "sh.keptn.event.deployment.triggered fulltour/qa/helloservice 5f1c8f2e",
        "sh.keptn.event.deployment.triggered fulltour/qa/helloservice 5f1c8f2e",
    ]
    trailers = git(
        tmp_path / "ledger.git",
        "log",
        "-1",
        "--skip=1",
        "--format=%(trailers:only,unfold)",
        "reconciler-ledger",
    )
    assert "Keptn-Context: 5f1c8f2e-0000-4000-8000-000000000000" in trailers
    assert "Keptn-Triggered-Id: trig-1" in trailers
    assert "Event-Id: evt-00001" in trailers
    stored = git(tmp_path / "ledger.git", "show", f"reconciler-ledger~1:{event_path(ev.id)}")
    assert stored == ev.to_json()


def test_a_repeated_event_id_is_recorded_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.git")
    assert ledger.append(event(1)) is True
    assert ledger.append(event(1, changed="yes")) is False
    assert ledger.extend([event(2), event(2), event(1), event(3)]) == [True, False, False, True]
    assert git(tmp_path / "ledger.git", "rev-list", "--count", "reconciler-ledger").strip() == "3"
    # a fresh process (no cache) dedups from the tip tree alone
    other = Ledger(tmp_path / "ledger.git")
    assert other.contains("evt-00002") and not other.contains("evt-00009")
    assert other.append(event(3)) is False
    assert [e.id for e in other.events()] == ["evt-00001", "evt-00002", "evt-00003"]


def test_an_object_directory_pruned_under_a_write_is_retried_and_other_write_errors_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pack merge's `git prune-packed` (this or another process) removes empty fan-out
    directories; libgit2 then fails the rename of a loose object it just wrote. Seen in a
    CI run with three processes appending while merging: the append must go on."""
    ledger = Ledger(tmp_path / "ledger.git")
    ledger.append(event(1))
    real = ledger._writer.blob
    failures = [
        OSError(
            f"failed to rename lockfile to '{tmp_path}/ledger.git/objects/c9/63a8': No such file or directory"
        )
    ]

    def pruned_once(data: bytes) -> bytes:
        if failures:
            raise failures.pop()
        return real(data)

    monkeypatch.setattr(ledger._writer, "blob", pruned_once)
    assert ledger.append(event(2)) is True
    assert [e.id for e in Ledger(tmp_path / "ledger.git").events()] == ["evt-00001", "evt-00002"]

    failures.append(OSError("failed to write object: No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        ledger.append(event(3))
    assert [e.id for e in Ledger(tmp_path / "ledger.git").events()] == ["evt-00001", "evt-00002"]


def test_compaction_while_another_process_merges_packs_loses_nothing_and_fails_no_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in a full run: a writer's compaction listed objects/, another process's pack merge
    (`git repack -d`, whose prune-packed removes the fan-out directories it emptied) ran, and
    listing objects/e0 raised; the append, already recorded, failed and the writer stopped."""
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=4, merge_packs_above=0, write_loose=True)  # as older versions
    for i in range(3):
        ledger.append(event(i))
    objects = path / "objects"
    real_iterdir = Path.iterdir
    merged: list[bool] = []

    def another_process_merges_in_between(self: Path) -> Any:
        if self.parent == objects and len(self.name) == 2 and not merged:
            merged.append(True)
            env = {**os.environ, "GIT_DIR": str(path)}
            subprocess.run(["git", "repack", "-d", "-q"], env=env, check=True)
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", another_process_merges_in_between)
    assert ledger.append(event(3)) is True  # the 4th append compacts
    monkeypatch.undo()
    assert merged
    assert not [d for d in objects.iterdir() if len(d.name) == 2 and any(d.iterdir())]
    ledger.append(event(4))
    assert [e.id for e in Ledger(path).events()] == [f"evt-{i:05d}" for i in range(5)]
    subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict", "--no-dangling"], check=True)


def test_a_compaction_that_fails_after_the_append_was_recorded_does_not_fail_the_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=2, merge_packs_above=0)
    ledger.append(event(1))

    class DiskFull(pygit2.PackBuilder):  # type: ignore[misc]
        def write(self, path: str | None = None) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gitledger.pygit2, "PackBuilder", DiskFull)
    assert ledger.append(event(2)) is True  # recorded: packing is housekeeping
    monkeypatch.undo()
    assert [e.id for e in Ledger(path).events()] == ["evt-00001", "evt-00002"]
    ledger.append(event(3))
    ledger.append(event(4))  # the next compaction packs what the failed one left
    assert not [d for d in (path / "objects").iterdir() if len(d.name) == 2 and any(d.iterdir())]


def test_an_append_a_stalled_writer_overwrote_is_written_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stopped while it held the ref lock (Ctrl-Z, a stalled process) has its lock
    broken as stale; when it resumes it renames the lock file that is there onto the branch,
    and an append that had just "succeeded" is gone from the branch. It must be written
    again, not reported recorded and lost."""
    path = tmp_path / "ledger.git"
    ledger = Ledger(path)
    ledger.append(event(1))
    stalled = Ledger(path)
    _, _, theirs = stalled._build([event(2)], ledger.tip, stalled.signing_key())  # on the tip it had seen
    stalled._write_batch()  # its objects are on disk before it takes the ref lock
    real_move = ledger._move_ref
    resumed: list[bool] = []

    def and_then_the_stalled_writer_resumes(
        ref: pygit2.Reference | None, new_tip: str, deadline: float
    ) -> bool:
        moved = real_move(ref, new_tip, deadline)
        if moved and not resumed:  # the filesystem operation of its late rename: its value, not ours
            lock = path / "refs" / "heads" / "reconciler-ledger.lock"
            lock.write_text(theirs + "\n")
            os.rename(lock, path / "refs" / "heads" / "reconciler-ledger")
            resumed.append(True)
        return moved

    monkeypatch.setattr(ledger, "_move_ref", and_then_the_stalled_writer_resumes)
    assert ledger.append(event(3)) is True
    assert resumed
    assert [e.id for e in Ledger(path).events()] == ["evt-00001", "evt-00002", "evt-00003"]


def test_replay_returns_exact_events_in_append_order(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.git", compact_every=7)
    odd = KeptnEvent(
        id='line\nbreak "quoted"',
        source="x",
        type="reconciler.sequence.control",
        data={"ü": "✓"},
        time=now_text(),
    )
    appended = [event(i) for i in range(20)] + [odd]
    for ev in appended:
        ledger.append(ev)
    replayed = Ledger(tmp_path / "ledger.git").events()
    assert [e.to_json() for e in replayed] == [e.to_json() for e in appended]
    assert Ledger(tmp_path / "ledger.git").get(odd.id) == odd


def test_compaction_packs_loose_objects_and_keeps_every_event_readable(tmp_path: Path) -> None:
    """Ledgers written before packs-per-append hold loose objects: compaction still packs them."""
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=0, write_loose=True)
    ledger.extend([event(i) for i in range(30)])
    loose_before = sum(1 for _ in (path / "objects").glob("??/*"))
    packed = ledger.compact()
    assert packed == loose_before and packed > 30
    assert not list((path / "objects").glob("??/*"))
    assert len(Ledger(path)) == 30
    assert ledger.append(event(30)) is True
    assert len(Ledger(path)) == 31


@pytest.mark.skipif(GIT is None, reason="needs the git CLI")
def test_compacted_packs_pass_git_fsck_and_git_reads_and_merges_them(tmp_path: Path) -> None:
    """Compaction writes its packs itself: git must find nothing wrong with them, read the
    events from them, and roll them into a larger pack as the ledger's merge does."""
    assert GIT is not None
    path = tmp_path / "ledger.git"
    # an older version's loose objects, then this version's batch packs
    Ledger(path, compact_every=0, write_loose=True).extend([event(i) for i in range(10)])
    ledger = Ledger(path, compact_every=0)
    ledger.extend([event(i, big="x" * 70_000 if i == 12 else "") for i in range(10, 30)])
    assert ledger.compact() > 30 * 8
    cli = [GIT, "--git-dir", str(path)]
    fsck = subprocess.run([*cli, "fsck", "--strict", "--no-dangling"], capture_output=True, text=True)
    assert fsck.returncode == 0 and fsck.stdout == "" and fsck.stderr == "", fsck
    for i in (0, 12, 29):
        shown = subprocess.run(
            [*cli, "cat-file", "blob", f"{ledger.ref_name}:{event_path(f'evt-{i:05d}')}"],
            capture_output=True,
            check=True,
        )
        assert KeptnEvent.from_json(shown.stdout) == Ledger(path).get(f"evt-{i:05d}")
    ledger.append(event(30))
    assert ledger.compact() >= 8
    subprocess.run([*cli, "repack", "-a", "-d", "-q"], check=True)
    assert ledger.pack_count() == 1
    assert [e.id for e in Ledger(path).events()] == [f"evt-{i:05d}" for i in range(31)]


def test_repack_leaves_one_pack_and_every_event_readable(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=4)
    for i in range(13):
        ledger.append(event(i))
    # each compaction rolls up the small packs before it (fewer than FOREIGN_BELOW objects);
    # then the 13th append's own
    assert ledger.pack_count() == 2
    written = ledger.repack()
    assert ledger.pack_count() == 1 and written >= 13 * 8
    assert not list((path / "objects").glob("??/*"))
    assert [e.id for e in Ledger(path).events()] == [f"evt-{i:05d}" for i in range(13)]
    assert ledger.append(event(13)) is True and len(Ledger(path)) == 14


def test_refresh_brings_in_what_another_writer_appended(tmp_path: Path) -> None:
    engine = Ledger(tmp_path / "ledger.git")
    engine.append(event(1))
    assert engine.refresh() == []  # first look: everything is "known"
    cli = Ledger(tmp_path / "ledger.git")  # e.g. `reconciler approve` in another process
    cli.append(event(2))
    cli.append(event(3))
    engine.append(event(4))  # the engine's own append pulls the CLI's events in first...
    assert [e.id for e in engine.events()] == ["evt-00001", "evt-00002", "evt-00003", "evt-00004"]
    assert [e.id for e in engine.refresh()] == ["evt-00002", "evt-00003"]  # ...and still reports them once
    assert engine.refresh() == []


def test_wait_for_change_wakes_on_an_append_and_times_out_without_one(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.git")
    assert ledger.wait_for_change(0.05) is False
    other = Ledger(tmp_path / "ledger.git")
    timer = threading.Timer(0.1, lambda: other.append(event(1)))
    timer.start()
    try:
        assert ledger.wait_for_change(5.0) is True
    finally:
        timer.cancel()
    assert [e.id for e in ledger.refresh()] == ["evt-00001"]


def test_a_lock_left_by_a_killed_writer_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, stale_lock_after=0.2)
    ledger.append(event(1))
    lock = path / "refs" / "heads" / "reconciler-ledger.lock"
    lock.write_text("")
    old = time.time() - 5
    os.utime(lock, (old, old))
    assert ledger.append(event(2)) is True
    assert not lock.exists()


_WRITER = textwrap.dedent(
    """
    import sys
    from reconciler.formats.events import KeptnEvent
    from reconciler.ledger.gitledger import Ledger
    import structlog, logging
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    path, writer, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ledger = Ledger(path, compact_every=int(sys.argv[4]))
    events = [
        KeptnEvent(id=f"{writer}-{i:04d}", source=writer, type="sh.keptn.event.test.triggered",
                   time="2024-05-01T10:00:00.000Z", data={"project": "p", "n": i})
        for i in range(count)
    ]
    i = 0
    while i < count:  # singles and batches of three, like the engine does
        if i % 4 == 0:
            ledger.extend(events[i:i + 3]); i += 3
        else:
            ledger.append(events[i]); i += 1
    """
)


def _writer(
    path: Path, name: str, count: int, *, compact_every: int = 50, crash: str | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RECONCILER_CRASH_AT", None)
    if crash:
        env["RECONCILER_CRASH_AT"] = crash
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), name, str(count), str(compact_every)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


_FIRST_APPEND = textwrap.dedent(
    """
    import sys, time
    from reconciler.formats.events import KeptnEvent
    from reconciler.ledger.gitledger import Ledger
    import structlog, logging
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    base, writer, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    for r in range(rounds):  # every round: a fresh ledger, all writers append at the same instant
        ledger = Ledger(f"{base}/{r}/ledger.git")
        event = KeptnEvent(id=f"{writer}-{r}", source=writer, type="sh.keptn.event.test.triggered",
                           time="2024-05-01T10:00:00.000Z", data={"project": "p"})
        while time.time() < start + r * 0.25:
            pass
        ledger.append(event)
    """
)


def test_writers_racing_to_create_the_branch_lose_no_event(tmp_path: Path) -> None:
    """The first append creates the branch; four processes doing it at the same instant must
    all end up on it (libgit2 alone lets the later creator drop the earlier one's commit)."""
    rounds = 12
    for r in range(rounds):
        Ledger(tmp_path / str(r) / "ledger.git")
    start = time.time() + 3.0  # time for the interpreters to start and import
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRST_APPEND, str(tmp_path), f"w{n}", str(start), str(rounds)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    for r in range(rounds):
        ids = {e.id for e in Ledger(tmp_path / str(r) / "ledger.git").events()}
        assert ids == {f"w{n}-{r}" for n in range(4)}, f"round {r}: only {sorted(ids)} recorded"


def test_four_concurrent_writers_lose_no_commit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    Ledger(path)  # create once, as the app does before starting writers
    procs = [_writer(path, f"w{n}", 100) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    assert git(path, "rev-list", "--count", "reconciler-ledger").strip() == "400"
    events = Ledger(path).events()
    assert len({e.id for e in events}) == 400
    for n in range(4):  # each writer's events keep its order
        mine = [e.data["n"] for e in events if e.source == f"w{n}"]
        assert mine == list(range(100))


def _state(path: Path) -> list[str]:
    return [e.to_json() for e in Ledger(path).events()]


CRASH_POINTS = [
    ("ledger.after-blob", 4),
    ("ledger.after-commit-objects", 1),
    ("ledger.after-commit-objects", 6),
    ("ledger.after-ref", 2),
    ("ledger.after-ref", 9),
    ("ledger.after-pack", 1),
    ("ledger.mid-prune", 1),
]


def test_killed_between_any_two_steps_of_an_append_a_restart_ends_in_the_same_state(tmp_path: Path) -> None:
    reference = tmp_path / "reference.git"
    proc = _writer(reference, "w", 24, compact_every=5)
    assert proc.wait(timeout=60) == 0
    expected = _state(reference)
    assert len(expected) == 24

    for point, nth in CRASH_POINTS:
        path = tmp_path / f"{point}-{nth}.git"
        killed = _writer(path, "w", 24, compact_every=5, crash=f"{point}:{nth}")
        assert killed.wait(timeout=60) == -signal.SIGKILL, (
            point,
            killed.stderr.read() if killed.stderr else b"",
        )
        restarted = _writer(path, "w", 24, compact_every=5)
        _, err = restarted.communicate(timeout=60)
        assert restarted.returncode == 0, (point, err.decode())
        assert _state(path) == expected, point
        assert git(path, "rev-list", "--count", "reconciler-ledger").strip() == "24"


@pytest.mark.slow
def test_killed_at_random_moments_a_restart_ends_in_the_same_state(tmp_path: Path) -> None:
    reference = tmp_path / "reference.git"
    assert _writer(reference, "w", 200, compact_every=30).wait(timeout=120) == 0
    expected = _state(reference)
    rng = random.Random(7)
    for trial in range(25):
        path = tmp_path / f"trial-{trial}.git"
        for _ in range(3):  # up to three kills, then a clean run
            proc = _writer(path, "w", 200, compact_every=30)
            time.sleep(rng.uniform(0.3, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert _writer(path, "w", 200, compact_every=30).wait(timeout=120) == 0
        assert _state(path) == expected, trial


def test_pushed_ledger_is_recovered_into_an_empty_data_dir(
    tmp_path: Path, git_daemon: GitDaemon, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    key = key_file(tmp_path / "secret")  # the same key on both sides, as a Secret gives it
    history = deliveries(2)
    ledger = Ledger.in_data_dir(tmp_path / "data", key_file=key)
    ledger.extend(history[:10])
    url = git_daemon.url("project.git")
    first = ledger.push(url)
    assert first.pushed and first.error is None
    ledger.extend(history[10:15])  # the next batch
    assert ledger.push(url).pushed
    assert upstream_repo.tip("reconciler-ledger") == ledger.tip

    fresh = Ledger.in_data_dir(tmp_path / "empty-data", key_file=key)
    assert fresh.recover(url) == 15
    assert [e.to_json() for e in fresh.events()] == [e.to_json() for e in ledger.events()]
    assert fresh.recover(url) == 0  # never overwrites a non-empty ledger


def test_push_over_http_with_a_token_keeps_the_token_out_of_ledger_and_log(
    tmp_path: Path, git_http_factory: object, upstream_repo: UpstreamRepo
) -> None:
    token = "tok-3f9a1c77e2b54d0a"
    server: SmartHttp = git_http_factory(token=token)  # type: ignore[operator]
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    from reconciler.base.redact import register_secrets

    register_secrets([token])
    try:
        ledger = Ledger(tmp_path / "data" / "ledger.git")
        ledger.extend([event(i) for i in range(3)])
        refused = ledger.push(
            server.url("project.git"), Credentials(username="git", secret="wrong-token"), attempts=1
        )
        assert not refused.pushed and refused.error
        result = ledger.push(server.url("project.git"), Credentials(username="git", secret=token))
        assert result.pushed, result.error
    finally:
        configure_logging(fmt="json", stream=io.StringIO())
    assert upstream_repo.tip("reconciler-ledger") == ledger.tip
    assert token not in buf.getvalue()
    assert token not in (refused.error or "")
    for f in (tmp_path / "data").rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert sum(1 for line in lines if line["event"] == "ledger.appended") == 3


def test_the_pusher_sends_new_commits_in_batches_and_skips_when_nothing_is_new(
    tmp_path: Path, git_daemon: GitDaemon, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    ledger = Ledger(tmp_path / "ledger.git")
    pusher = LedgerPusher(ledger, git_daemon.url("project.git"), interval=3600)
    assert pusher.push_if_due() is None  # empty ledger: nothing to push
    ledger.extend([event(i) for i in range(5)])
    assert pusher.status().pending
    first = pusher.push_if_due()
    assert first is not None and first.pushed
    ledger.extend([event(i) for i in range(5, 8)])
    assert pusher.push_if_due() is None  # the interval has not passed: the next batch waits
    second = pusher.push_if_due(force=True)
    assert second is not None and second.pushed and upstream_repo.tip("reconciler-ledger") == ledger.tip
    assert pusher.push_if_due(force=True) is None and not pusher.status().pending


@pytest.mark.parametrize(("mode", "still_enabled"), [("auto", False), ("always", True)])
def test_a_read_only_upstream_switches_auto_push_off_but_not_always(
    tmp_path: Path, upstream_repo: UpstreamRepo, mode: str, still_enabled: bool
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    daemon = GitDaemon(upstream_repo.path.parent, push=False)
    daemon.start()
    try:
        ledger = Ledger(tmp_path / "ledger.git")
        ledger.append(event(1))
        pusher = LedgerPusher(ledger, daemon.url("project.git"), mode=mode, interval=0)  # type: ignore[arg-type]
        result = pusher.push_if_due()
        assert result is not None and not result.pushed
        status = pusher.status()
        assert status.enabled is still_enabled and status.last_error and status.consecutive_failures == 1
        assert upstream_repo.tip("reconciler-ledger") is None
    finally:
        daemon.stop()


def test_the_ledger_is_a_plain_git_branch(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, branch="audit")
    ledger.append(event(1))
    repo = pygit2.Repository(str(path))
    assert repo.is_bare
    assert "audit" in repo.branches.local
    assert (
        subprocess.run(["git", f"--git-dir={path}", "fsck", "--strict"], capture_output=True).returncode == 0
    )
