"""Damaged ledgers on disk (issue 20, item 5b and 5c, and `reconciler events` on each).

- A loose object truncated anywhere between 2 bytes and one byte short made libgit2 read
  forever: `reconciler run` spun without listening, `reconciler events` hung. Every length
  is now found before libgit2 reads, and both commands fail at once naming the object and
  its file. The commands run as subprocesses with a timeout, so a regression fails the
  test instead of hanging it.
- A deleted (or rewound) ledger ref looked like a new, empty ledger: with `ledger_push:
  never` the reconciler started "ready" on nothing. The tip mark beside the repository
  makes it refuse, saying how to put the branch back or how to start over on purpose.
- `reconciler events` on any damaged ledger: one line naming what and where, exit 1,
  never a traceback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from reconciler.app import App
from reconciler.ledger.gitledger import Ledger, LedgerError, event_path
from reconciler.settings import Settings
from tests.support.gitserver import GIT, UpstreamRepo
from tests.support.history import deliveries

BRANCH = "reconciler-ledger"
REF = f"refs/heads/{BRANCH}"
TIMEOUT = 60.0
"""Seconds a command may take before the test calls it hung (it answers in about one)."""


def cli(*args: str, data_dir: Path, timeout: float = TIMEOUT, **env: str) -> subprocess.CompletedProcess[str]:
    """`reconciler <args>` in a fresh process, bounded in time (a hang is a failure, not a stuck test)."""
    environ = {**os.environ, "RECONCILER_DATA_DIR": str(data_dir), "RECONCILER_LOG_FORMAT": "json", **env}
    try:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`reconciler {' '.join(args)}` did not finish within {timeout:.0f} s (hung)")


def make_ledger(data_dir: Path, n: int = 1) -> Ledger:
    """A ledger of `n` deliveries with every object still loose (as versions before
    packs-per-append wrote them; no compaction yet)."""
    ledger = Ledger(data_dir / "ledger.git", compact_every=0, write_loose=True)
    assert len(ledger) == 0  # loaded, as a running reconciler's is (its mark then counts events)
    ledger.extend(deliveries(n))
    return ledger


def loose(data_dir: Path, oid: str) -> Path:
    return data_dir / "ledger.git" / "objects" / oid[:2] / oid[2:]


def objects_of_tip(data_dir: Path) -> dict[str, str]:
    repo = pygit2.Repository(str(data_dir / "ledger.git"))
    tip = repo.references[REF].peel(pygit2.Commit)
    event_id = tip.message.rsplit("Event-Id: ", 1)[1].split("\n", 1)[0]
    return {
        "commit": str(tip.id),
        "root tree": str(tip.tree.id),
        "event blob": str(tip.tree[event_path(event_id)].id),
    }


def truncate(path: Path, length: int) -> None:
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[:length])


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    lines = [
        line for line in done.stderr.splitlines() if line.startswith("Error:") or line.startswith("error:")
    ]
    assert len(lines) == 1, done.stderr
    return lines[0]


# ------------------------------------------------------------------ 5b: truncated loose objects


@pytest.mark.parametrize("kind", ["commit", "root tree", "event blob"])
def test_every_truncation_of_a_loose_object_is_found_before_libgit2_reads_it(
    tmp_path: Path, kind: str
) -> None:
    from reconciler.ledger.errors import LedgerDamaged
    from reconciler.ledger.integrity import check_loose_objects

    make_ledger(tmp_path)
    oid = objects_of_tip(tmp_path)[kind]
    path = loose(tmp_path, oid)
    whole = path.read_bytes()
    assert check_loose_objects(tmp_path / "ledger.git") > 8
    for length in range(len(whole)):  # 0 bytes (a power loss) to one byte short
        truncate(path, length)
        with pytest.raises(LedgerDamaged) as damaged:
            check_loose_objects(tmp_path / "ledger.git")
        assert oid in str(damaged.value) and str(path) in str(damaged.value), length
    path.write_bytes(whole)
    assert check_loose_objects(tmp_path / "ledger.git") > 8


@pytest.mark.parametrize(
    ("kind", "length"),
    [("commit", 2), ("commit", 5), ("commit", 120), ("commit", -2), ("root tree", 40), ("event blob", 200)],
)
def test_reconciler_events_on_a_truncated_object_fails_at_once_naming_it(
    tmp_path: Path, kind: str, length: int
) -> None:
    make_ledger(tmp_path)
    oid = objects_of_tip(tmp_path)[kind]
    path = loose(tmp_path, oid)
    truncate(path, length if length > 0 else path.stat().st_size + length)
    line = one_line_error(cli("events", data_dir=tmp_path))
    assert oid in line and str(path) in line and "truncated" in line


def test_reconciler_run_on_a_truncated_object_exits_naming_it_instead_of_spinning(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    data = tmp_path / "data"
    make_ledger(data)
    oid = objects_of_tip(data)["root tree"]
    truncate(loose(data, oid), 30)
    done = cli(
        "run",
        "--upstream",
        str(upstream_repo.path),
        "--api-listen",
        "",
        data_dir=data,
        RECONCILER_LEDGER_PUSH="never",
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert oid in done.stderr and "cannot start" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------ 5c: a vanished or rewound ref


def delete_ref(data_dir: Path) -> None:
    subprocess.run(
        [GIT, f"--git-dir={data_dir / 'ledger.git'}", "update-ref", "-d", REF], check=True, timeout=30
    )


def test_a_deleted_ledger_ref_refuses_to_start_and_says_how_to_put_it_back(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    data = tmp_path / "data"
    tip = make_ledger(data, 3).tip
    assert tip is not None
    delete_ref(data)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "run",
            "--upstream",
            str(upstream_repo.path),
            "--api-listen",
            "",
        ],
        env={**os.environ, "RECONCILER_DATA_DIR": str(data), "RECONCILER_LEDGER_PUSH": "never"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        pytest.fail("reconciler run started on a ledger whose branch vanished (it should refuse)")
    assert proc.returncode == 1, err[-2000:]
    assert f"branch {BRANCH} is gone" in err and tip[:12] in err and "36 events" in err
    assert f"update-ref {REF} {tip}" in err and "--ledger-start-over" in err

    line = one_line_error(cli("events", data_dir=data))  # and the CLI says the same, in one line
    assert f"branch {BRANCH} is gone" in line

    subprocess.run([GIT, f"--git-dir={data / 'ledger.git'}", "update-ref", REF, tip], check=True, timeout=30)
    assert len(Ledger(data / "ledger.git")) == 36  # the suggested fix works


def settings(data: Path, upstream: UpstreamRepo) -> Settings:
    return Settings(
        upstream=str(upstream.path), data_dir=data, api_listen="", ledger_push="never", watch=False
    )


def test_a_ledger_rewound_to_an_older_copy_refuses_and_start_over_is_explicit_and_recorded(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    data = tmp_path / "data"
    ledger = make_ledger(data, 1)
    old = ledger.tip
    ledger.extend(deliveries(1, start=7))
    ledger.flush_mark()
    subprocess.run(
        [GIT, f"--git-dir={data / 'ledger.git'}", "update-ref", REF, str(old)], check=True, timeout=30
    )
    with pytest.raises(LedgerError, match="which does not contain it"):
        App(settings(data, upstream_repo), serve_api=False).start()

    app = App(settings(data, upstream_repo), serve_api=False, ledger_start_over=True).start()
    try:
        contexts = {e.shkeptncontext for e in app.ledger.events()}
        assert "ctx-0000" in contexts and "ctx-0007" not in contexts  # on the older copy, as asked
        assert (data / "ledger.tip.abandoned").read_text().count("--ledger-start-over") == 1
    finally:
        app.stop(grace=5)
    App(settings(data, upstream_repo), serve_api=False).start().stop(grace=5)  # and from now on it starts


def test_a_removed_ledger_repository_is_not_started_over_silently(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": "x"})
    data = tmp_path / "data"
    make_ledger(data, 1)
    shutil.rmtree(data / "ledger.git")
    with pytest.raises(LedgerError, match=r"restore .* from a backup"):
        App(settings(data, upstream_repo), serve_api=False).start()


def test_a_ref_deleted_under_a_running_process_is_not_replaced_by_a_new_history(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, 1)
    delete_ref(tmp_path)
    with pytest.raises(LedgerError, match="is gone"):
        ledger.extend(deliveries(1, start=3))
    assert pygit2.Repository(str(tmp_path / "ledger.git")).references.get(REF) is None


def test_the_mark_follows_appends_within_a_second(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path, 1)
    from reconciler.ledger.tipmark import marked_tip

    mark = tmp_path / "ledger.tip"
    assert marked_tip(mark, BRANCH) is not None
    ledger.extend(deliveries(1, start=5))
    deadline = time.monotonic() + 5
    while marked_tip(mark, BRANCH) != ledger.tip and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marked_tip(mark, BRANCH) == ledger.tip


# ------------------------------------------------------------------ `reconciler events` on each damage


def _missing_object(data: Path) -> str:
    oid = objects_of_tip(data)["root tree"]
    loose(data, oid).unlink()
    return oid


def _garbage_ref(data: Path) -> str:
    (data / "ledger.git" / REF).write_text("not a commit id\n")
    return REF


def _truncated_pack(data: Path) -> str:
    Ledger(data / "ledger.git").compact()
    pack = next((data / "ledger.git" / "objects" / "pack").glob("pack-*.pack"))
    truncate(pack, pack.stat().st_size // 2)
    return "damaged"


def _vanished_ref(data: Path) -> str:
    delete_ref(data)
    return "is gone"


def _damaged_blob(data: Path) -> str:
    oid = objects_of_tip(data)["event blob"]
    path = loose(data, oid)
    os.chmod(path, 0o644)
    path.write_bytes(zlib.compress(b"blob 5\0{bad}"))  # a whole, readable object that is not this one
    return oid


@pytest.mark.parametrize(
    "damage",
    [_missing_object, _garbage_ref, _truncated_pack, _vanished_ref, _damaged_blob],
    ids=lambda f: f.__name__,
)
def test_reconciler_events_on_a_damaged_ledger_prints_one_line_and_exits_1(
    tmp_path: Path, damage: Callable[[Path], str]
) -> None:
    make_ledger(tmp_path)
    where = damage(tmp_path)
    line = one_line_error(cli("events", data_dir=tmp_path))
    assert where in line and str(tmp_path / "ledger.git") in line
