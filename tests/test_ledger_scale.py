"""The ledger at scale, on real repositories: lean memory, decode on access, bounded packs,
and consumers that fold long histories without keeping them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pygit2
import pytest

from reconciler.controller.loop import Controller
from reconciler.core import engine_state
from reconciler.core.engine_state import REASON_LOOP_LIMIT
from reconciler.core.outcomes import Outcome, Succeeded, started_event, task_of
from reconciler.core.planning import Policy
from reconciler.executors.base import TaskContext, TaskExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.shipyard import load_shipyard
from reconciler.ledger import gitledger as gitledger_module
from reconciler.ledger import packs as packs_module
from reconciler.ledger.gitledger import Ledger, LedgerError, event_path, subject_scope
from reconciler.ledger.packs import geometric_rollup
from reconciler.runtime.metrics import Metrics
from tests.support.context import MemoryContext
from tests.support.engine import StaticConfig, trigger
from tests.support.events import now_text

REPO_ROOT = Path(__file__).resolve().parent.parent


def event(
    i: int, *, type_: str = "sh.keptn.event.deployment.triggered", ctx: str = "", **extra: object
) -> KeptnEvent:
    return KeptnEvent(
        id=f"evt-{i:05d}",
        source="shipyard-controller",
        type=type_,
        time="2024-05-01T10:00:00.000Z",
        shkeptncontext=ctx or f"ctx-{i % 7}",
        triggeredid=f"trig-{i}" if i % 2 else None,
        data={"project": "fulltour", "stage": "qa", "service": f"svc-{i % 3}", "n": i},
        **extra,
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={repo}", *args], check=True, capture_output=True, text=True
    ).stdout


# ------------------------------------------------------------------------- reading back


ODD_TYPES = [
    "my custom type",  # a space: the commit line cannot tell where the type ends
    "line\nbreak",  # sanitised on the commit line
    "sh.keptn.event." + "x" * 300 + ".triggered",  # shortened on the commit line
    "reconciler.upstream.accepted",
]


def test_a_fresh_process_reads_back_exactly_what_was_appended_whatever_the_type(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=7)
    appended = [event(i) for i in range(20)]
    appended += [event(100 + n, type_=t) for n, t in enumerate(ODD_TYPES)]
    appended.append(event(200, sequencetriggeredid="seq-1", shipyardcommit="abc"))  # extensions
    appended.append(
        KeptnEvent(id="no-context", source="x", type="sh.keptn.event.a.finished", data={}, time=now_text())
    )
    ledger.extend(appended[:10])
    for ev in appended[10:]:
        ledger.append(ev)

    fresh = Ledger(path)
    view = fresh.events()
    assert [e.to_json() for e in view] == [e.to_json() for e in appended]
    assert view[-1] == appended[-1] and view[3:5] == appended[3:5]
    for i, ev in enumerate(appended):  # what the catalog knows without decoding matches the event
        meta = view.meta(i)
        assert (meta.id, meta.type, meta.context, meta.triggeredid) == (
            ev.id,
            ev.type,
            ev.shkeptncontext,
            ev.triggeredid,
        )
    assert fresh.get("evt-00200") == appended[-2]
    assert fresh.get("evt-00200").model_extra == {"sequencetriggeredid": "seq-1", "shipyardcommit": "abc"}  # type: ignore[union-attr]


def test_selecting_by_type_context_and_service_returns_what_a_scan_would(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.git")
    appended = [
        event(i, type_="sh.keptn.event.evaluation.finished" if i % 4 == 0 else "sh.keptn.event.test.finished")
        for i in range(40)
    ]
    ledger.extend(appended)
    view = Ledger(tmp_path / "ledger.git").events()

    evaluations = view.select(types=["sh.keptn.event.evaluation.finished"])
    assert evaluations == [e for e in appended if e.type == "sh.keptn.event.evaluation.finished"]
    in_ctx = view.select(types=["sh.keptn.event.test.finished"], context="ctx-3")
    assert in_ctx == [e for e in appended if e.type.endswith("test.finished") and e.shkeptncontext == "ctx-3"]
    assert view.select(context="ctx-5") == [e for e in appended if e.shkeptncontext == "ctx-5"]
    of_service = view.select(
        types=["sh.keptn.event.evaluation.finished"], scope=subject_scope("fulltour", "qa", "svc-1")
    )
    assert of_service == [e for e in evaluations if e.service == "svc-1"] and of_service


def test_the_commit_line_shows_the_scope_selection_compares(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    ledger = Ledger(path)
    cases = [("fulltour", "qa", "helloservice"), ("fulltour", "", ""), ("", "", ""), ("p", "", "svc")]
    for n, (project, stage, service) in enumerate(cases):
        ledger.append(
            KeptnEvent(
                id=f"e{n}",
                source="x",
                type="t.x",
                shkeptncontext="abcdefghij",
                data={"project": project, "stage": stage, "service": service},
                time=now_text(),
            )
        )
    lines = git(path, "log", "--reverse", "--format=%s", "reconciler-ledger").splitlines()
    assert lines == [f"t.x {subject_scope(*case)} abcdefgh" for case in cases]


def test_a_corrupt_event_is_reported_naming_it_when_read(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    ledger = Ledger(path)
    ledger.append(event(1))
    # someone commits a broken event onto the branch with a proper message
    repo = pygit2.Repository(str(path))
    tip = repo.references["refs/heads/reconciler-ledger"].peel(pygit2.Commit)
    index = pygit2.Index()
    index.read_tree(tip.tree)
    index.add(
        pygit2.IndexEntry(
            event_path("broken"), repo.create_blob(b'{"id": "broken"'), pygit2.GIT_FILEMODE_BLOB
        )
    )
    sig = pygit2.Signature("x", "x@localhost")
    repo.create_commit(
        "refs/heads/reconciler-ledger",
        sig,
        sig,
        "sh.keptn.event.x.triggered fulltour abc\n\nKeptn-Context: abc\nEvent-Id: broken\n",
        index.write_tree(repo),
        [tip.id],
    )

    fresh = Ledger(path)
    assert len(fresh) == 2 and fresh.events()[0] == event(1)
    with pytest.raises(LedgerError, match=r"'broken'.*invalid event"):
        fresh.events()[1]


def test_reading_a_long_ledger_keeps_a_few_hundred_bytes_per_event(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    writer = Ledger(path)
    appended = [event(i) for i in range(1200)]
    for i in range(0, len(appended), 100):
        writer.extend(appended[i : i + 100])

    tracemalloc.start()
    try:
        ledger = Ledger(path, keep_decoded=32)
        assert len(ledger) == 1200
        n = sum(1 for e in ledger.events() if e.data["n"] >= 0)
        kept, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 1200
    # a decoded event is ~5 KB of Python objects; the ledger keeps ~0.5 KB of metadata per event
    assert kept / n < 1500, f"{kept / n:.0f} bytes per event kept after reading every event"


# ------------------------------------------------------------------------- packs


def test_geometric_rollup_merges_the_smallest_packs_until_each_is_twice_the_next() -> None:
    assert geometric_rollup([1000] * 10) == 10
    assert geometric_rollup([1000, 1000, 100_000]) == 2
    assert geometric_rollup([1000, 4000, 100_000]) == 0
    assert geometric_rollup([1000]) == 0
    assert geometric_rollup([]) == 0


_HOLD_MERGE_LOCK = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_one_merge_at_a_time_across_processes_and_a_dead_holder_blocks_nothing(tmp_path: Path) -> None:
    """The merge lock is the kernel's: while another process holds it no merge starts here,
    and once that process is gone (killed, never unlocking) the next merge runs."""
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=5, merge_packs_above=0)
    for i in range(20):
        ledger.append(event(i))
    merger = packs_module.PackMerger(path, merge_above=1)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_MERGE_LOCK, str(path / packs_module.LOCK_NAME)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert merger.merge_now() is False and merger.merges == 0
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert merger.merge_now() is True and merger.merges == 1
    assert merger.merge_now() is True  # released after each merge: the lock file stays, unlocked
    assert [e.id for e in Ledger(path).events()] == [f"evt-{i:05d}" for i in range(20)]


@pytest.mark.parametrize("tool", ["git", "libgit2"])
def test_packs_stay_few_while_appending_and_every_event_reads_back(
    tmp_path: Path, tool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if tool == "libgit2":
        monkeypatch.setattr(packs_module.shutil, "which", lambda _name: None)
    # compactions of 10 appends leave packs as a thousand appends' do: too large for the next
    # compaction to roll up (FOREIGN_BELOW), so the merger keeps them few
    monkeypatch.setattr(gitledger_module, "FOREIGN_BELOW", 0)
    path = tmp_path / "ledger.git"
    ledger = Ledger(path, compact_every=10, merge_packs_above=3)
    appended = [event(i) for i in range(150)]
    for ev in appended:  # 15 compactions: 15 packs without merging
        ledger.append(ev)
        if ledger.pack_count() > 3:
            assert ledger.wait_for_maintenance(60)
    assert ledger.wait_for_maintenance(60)
    assert ledger._packs.merges >= 1 and ledger._packs.last_error is None
    assert ledger.pack_count() <= 4
    assert [e.to_json() for e in Ledger(path).events()] == [e.to_json() for e in appended]
    assert not list((path / "objects" / "pack").glob("*.lock"))
    git(path, "fsck", "--strict", "--no-dangling")


_WRITER = textwrap.dedent(
    """
    import sys, logging, structlog
    from reconciler.formats.events import KeptnEvent
    from reconciler.ledger.gitledger import Ledger
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    path, writer, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ledger = Ledger(path, compact_every=8, merge_packs_above=2)
    for i in range(count):
        ledger.append(KeptnEvent(id=f"{writer}-{i:04d}", source=writer, type="sh.keptn.event.t.triggered",
                                 time="2024-05-01T10:00:00.000Z", data={"n": i}))
    assert ledger.wait_for_maintenance(120)
    """
)


def test_merges_in_several_processes_while_they_append_lose_no_event(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    Ledger(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), f"w{n}", "80"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(3)
    ]
    for n, proc in enumerate(procs):
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"writer w{n}: {err.decode()[-3000:]}"
    events = Ledger(path).events()
    for n in range(3):
        mine = [e.data["n"] for e in events if e.source == f"w{n}"]
        assert mine == list(range(80)), f"w{n} missing {sorted(set(range(80)) - set(mine))}"
    assert git(path, "rev-list", "--count", "reconciler-ledger").strip() == "240"
    git(path, "fsck", "--strict", "--no-dangling")


# ------------------------------------------------------------------------- consumers

SHIPYARD = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: s}
spec:
  stages:
    - name: production
      sequences:
        - name: fast
          tasks:
            - name: deploy
"""


class Deployer(TaskExecutor):
    name = "deployer"

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        return event.etype is not None and event.etype.kind == "triggered" and task_of(event) == "deploy"

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        if not started:
            ctx.emit(started_event(event, self.name, now=ctx.now()))
        return Succeeded()


class LedgerContext(MemoryContext):
    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def emit(self, event: KeptnEvent) -> None:
        self.ledger.append(event)


def controller(ledger: Ledger, metrics: Metrics, max_iterations: int = 10) -> Controller:
    ctrl = Controller(
        ledger=ledger,
        config=StaticConfig({"m": load_shipyard(SHIPYARD)}, "m"),
        executors=[Deployer()],  # type: ignore[list-item]
        context_factory=lambda: LedgerContext(ledger),
        policy=Policy(max_iterations=max_iterations),
        compact_every=12,
        keep_finished=2,
    )
    ctrl.on_cycle.append(metrics.on_cycle)
    return ctrl


def settle(ctrl: Controller) -> None:
    for _ in range(20):
        ctrl.step()
        ctrl.drain()
        if not ctrl.state.open_tasks() and not any(True for _ in ctrl.state.active()):
            return


def finished_total(metrics: Metrics) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    body, _ = metrics.render()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if (
                sample.name == "reconciler_sequences_finished_total"
                and sample.labels.get("sequence") == "fast"
            ):
                return sample.value
    return 0.0


def test_a_long_history_is_folded_without_keeping_it_and_metrics_count_all_of_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.git")
    live = Metrics()
    ctrl = controller(ledger, live)
    for n in range(12):
        ledger.append(trigger("production", "fast", context=f"ctx-{n}"))
        settle(ctrl)
    assert finished_total(live) == 12
    assert len(ctrl.state.executions) <= 2 + 1  # the newest finished ones (and the one compaction left)

    restarted_metrics = Metrics()
    restarted = controller(Ledger(tmp_path / "ledger.git"), restarted_metrics)
    assert restarted.replay() == len(ledger)
    restarted.step()
    assert finished_total(restarted_metrics) == 12
    assert len(restarted.state.executions) <= 3


def test_the_iteration_cap_counts_runs_compaction_forgot(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.git")
    ctrl = controller(ledger, Metrics(), max_iterations=3)
    for n in range(4):  # the same context over and over, as a remediation loop would
        ledger.append(trigger("production", "fast", context="ctx-loop", round=n))
        settle(ctrl)
        ctrl.state.compact(keep_finished=0)
    finished = [e for e in ledger.events() if e.type == "sh.keptn.event.production.fast.finished"]
    assert [e.result for e in finished] == ["pass", "pass", "pass", "fail"]
    assert finished[-1].data["reconciler"]["reason"] == REASON_LOOP_LIMIT


def test_the_cap_still_counts_a_looping_context_when_old_counts_are_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every delivery is a new context; the counts of long-finished ones are let go (at most
    FORGOTTEN_KEEP), while a context that keeps re-triggering keeps its count and is capped:
    here fewer than FORGOTTEN_KEEP other runs are forgotten between two of its runs."""
    monkeypatch.setattr(engine_state, "FORGOTTEN_KEEP", 4)
    ledger = Ledger(tmp_path / "ledger.git")
    ctrl = controller(ledger, Metrics(), max_iterations=3)
    for n in range(4):
        for other in range(3):  # deliveries in new contexts between the loop's rounds
            ledger.append(trigger("production", "fast", context=f"ctx-{n}-{other}"))
            settle(ctrl)
        ledger.append(trigger("production", "fast", context="ctx-loop", round=n))
        settle(ctrl)
        ctrl.state.compact(keep_finished=0)
        assert len(ctrl.state.forgotten_runs) <= 4  # of up to 13 contexts forgotten
    looped = [
        e
        for e in ledger.events()
        if e.type == "sh.keptn.event.production.fast.finished" and e.shkeptncontext == "ctx-loop"
    ]
    assert [e.result for e in looped] == ["pass", "pass", "pass", "fail"]
    assert looped[-1].data["reconciler"]["reason"] == REASON_LOOP_LIMIT
    others = [e for e in ledger.events() if e.type == "sh.keptn.event.production.fast.finished"]
    assert sum(e.result == "pass" for e in others) == 12 + 3  # no other context was capped
