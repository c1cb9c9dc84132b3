"""The engine state's checkpoint: a restart folds only the ledger events after it, and ends
with the state a full replay builds; any doubt about the file (damaged, truncated, another
format version, a tip the ledger's history does not hold) costs a full replay, never a
wrong state, and says so in one warning.

States are compared as the first control-loop step leaves them (its compaction), which
is where a full replay and a checkpointed one must agree (see `ledger.enginecheckpoint`).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import reconciler.app as app_module
from reconciler.app import App
from reconciler.controller.loop import Controller
from reconciler.core.commands import control_event
from reconciler.core.engine_payload import PAYLOAD_VERSION, EngineStatePayload, from_payload, to_payload
from reconciler.core.engine_state import EngineState, apply, replay
from reconciler.formats.events import KeptnEvent
from reconciler.formats.shipyard import load_shipyard
from reconciler.ledger import checkpoint, enginecheckpoint
from reconciler.ledger.enginecheckpoint import KIND, EngineCheckpoint, engine_checkpoint_path
from reconciler.ledger.gitledger import Ledger
from reconciler.runtime.metrics import Metrics
from tests.support.engine import T0, StaticConfig
from tests.support.gitserver import UpstreamRepo
from tests.support.history import SHIPYARD_AUTOMATIC, deliveries, pending_approval
from tests.support.logcapture import records
from tests.support.running import running_apps
from tests.support.shop import deploy, recording_job, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

COMPACT_EVERY = 40
KEEP_FINISHED = 3
SAVE_EVERY = 30


def forget(buf: io.StringIO) -> None:
    """Drop what the setup logged (its first start had no checkpoint yet, and said so)."""
    buf.seek(0)
    buf.truncate()


def history(first: int, start: int = 0) -> list[KeptnEvent]:
    """`first` finished deliveries, one waiting for a person, a paused context: every kind of state."""
    events = deliveries(first, start=start)
    waiting, _ = pending_approval(context=f"ctx-waiting-{start}")
    pause = control_event(
        context=f"ctx-{start:04d}", state="pause", stage="qa", source="cli", event_id=f"pause-{start}", now=T0
    )
    return [*events, *waiting, pause]


def controller(ledger: Ledger, *, saved: bool = True) -> Controller:
    return Controller(
        ledger=ledger,
        config=StaticConfig({"m": load_shipyard(SHIPYARD_AUTOMATIC)}, "m"),
        executors=[],
        context_factory=lambda: None,  # type: ignore[arg-type, return-value]
        compact_every=COMPACT_EVERY,
        keep_finished=KEEP_FINISHED,
        checkpoint=EngineCheckpoint(ledger.path, save_every=SAVE_EVERY) if saved else None,
    )


def started(ledger: Ledger, *, saved: bool = True) -> Controller:
    """A controller after its start-up replay and the compaction its first step does."""
    ctrl = controller(ledger, saved=saved)
    ctrl.replay()
    ctrl._compact_if_due()
    return ctrl


def full_replay(path: Path) -> EngineState:
    return started(Ledger(path, checkpoint_every=0), saved=False).state


def saved_after(path: Path, events: list[KeptnEvent]) -> Path:
    """A ledger holding `events` whose reconciler stopped cleanly (so it saved its checkpoint)."""
    ledger = Ledger(path, checkpoint_every=0)
    ledger.extend(events)
    ctrl = started(ledger)
    assert ctrl.save_checkpoint()
    return engine_checkpoint_path(path)


def test_the_payload_holds_the_state_exactly() -> None:
    state = replay(history(6))
    assert state.live and state.paused and state.by_task  # something of every part
    text = to_payload(state).model_dump_json()
    again = from_payload(EngineStatePayload.model_validate_json(text))
    assert again == state
    assert again.by_task[next(iter(state.by_task))] is again.executions[next(iter(state.live))]


def test_a_restart_folds_only_the_events_after_the_checkpoint_and_equals_a_full_replay(
    tmp_path: Path, logs: io.StringIO
) -> None:
    path = tmp_path / "data" / "ledger.git"
    before = history(8)
    saved_after(path, before)
    rest = history(5, start=100)
    Ledger(path, checkpoint_every=0).extend(rest)  # e.g. the CLI, after the stop
    forget(logs)

    ctrl = started(Ledger(path, checkpoint_every=0))
    report = ctrl.replay_report
    assert report is not None
    assert (report.from_checkpoint, report.folded, report.events) == (
        len(before),
        len(rest),
        len(before + rest),
    )
    assert ctrl.state == full_replay(path)
    assert ctrl.state.event_count == len(before + rest)
    assert ctrl.state.forgotten_runs  # the compaction's count of forgotten runs came through
    assert records(logs, "engine_checkpoint_loaded")[0]["events"] == len(before)
    assert not records(logs, "engine_checkpoint_ignored")


def test_the_control_loop_saves_in_the_background_and_that_state_resumes_to_the_same_result(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / "ledger.git"
    ledger = Ledger(path, checkpoint_every=0)
    ledger.extend(history(6))
    live = controller(ledger)
    live.replay()
    live.step()  # folds, compacts, and hands the state to the writer (due: 30 events since none)
    assert live.checkpoint is not None and live.checkpoint.wait()
    found = checkpoint.read(engine_checkpoint_path(path), KIND, PAYLOAD_VERSION, EngineStatePayload)
    assert isinstance(found, checkpoint.Loaded) and found.header.key["events"] == len(ledger.events())
    assert found.header.key["tip"] == ledger.tip

    ledger.extend(history(4, start=50))
    assert started(Ledger(path, checkpoint_every=0)).state == full_replay(path)


def test_a_checkpoint_that_cannot_be_written_costs_the_loop_nothing(
    tmp_path: Path, logs: io.StringIO
) -> None:
    path = tmp_path / "data" / "ledger.git"
    ledger = Ledger(path, checkpoint_every=0)
    events = history(6)
    ledger.extend(events)
    engine_checkpoint_path(path).mkdir()  # e.g. a read-only or broken data directory: the write fails
    live = controller(ledger)
    live.replay()
    live.step()
    assert live.checkpoint is not None and live.checkpoint.wait()
    assert records(logs, "engine_checkpoint_not_written")
    assert live.cycles == 1 and live.state == full_replay(path)


def damage_bytes(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-100] ^= 0xFF
    saved.write_bytes(bytes(data))


def truncate(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes()[:-500])


def other_version(saved: Path) -> None:
    found = checkpoint.read(saved, KIND, PAYLOAD_VERSION, EngineStatePayload)
    assert isinstance(found, checkpoint.Loaded)
    checkpoint.write(saved, KIND, PAYLOAD_VERSION + 1, found.header.key, found.payload)


def unparsable(saved: Path) -> None:
    """Intact framing and checksum around a payload that is not the model's (a writer's bug)."""
    found = checkpoint.read(saved, KIND, PAYLOAD_VERSION, EngineStatePayload)
    assert isinstance(found, checkpoint.Loaded)
    wrong = found.payload.model_copy(update={"order": ["no-such-execution"]})
    checkpoint.write(saved, KIND, PAYLOAD_VERSION, found.header.key, wrong)


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (damage_bytes, "checksum"),
        (truncate, "truncated"),
        (other_version, "version"),
        (unparsable, "damaged"),
    ],
)
def test_a_spoiled_checkpoint_is_ignored_with_a_warning_and_the_whole_ledger_is_folded(
    tmp_path: Path, logs: io.StringIO, spoil: Callable[[Path], None], reason: str
) -> None:
    path = tmp_path / "data" / "ledger.git"
    events = history(8)
    saved = saved_after(path, events)
    spoil(saved)
    forget(logs)

    ctrl = started(Ledger(path, checkpoint_every=0))
    assert ctrl.replay_report is not None
    assert (ctrl.replay_report.from_checkpoint, ctrl.replay_report.folded) == (0, len(events))
    assert ctrl.state == full_replay(path)
    (warning,) = records(logs, "engine_checkpoint_ignored")
    assert reason in str(warning["reason"]) and warning["level"] == "warning"

    assert ctrl.save_checkpoint()  # the next clean stop writes a good one again
    assert started(Ledger(path, checkpoint_every=0)).replay_report.from_checkpoint == len(events)  # type: ignore[union-attr]


@pytest.mark.parametrize("longer", [True, False])
def test_a_checkpoint_of_another_ledger_is_stale_and_ignored(
    tmp_path: Path, logs: io.StringIO, longer: bool
) -> None:
    """The data directory's ledger was replaced (restored from elsewhere, recovered from another
    upstream): the checkpoint's tip is not in its history, whatever its length."""
    saved = saved_after(tmp_path / "a" / "ledger.git", history(6))
    path = tmp_path / "b" / "ledger.git"
    Ledger(path, checkpoint_every=0).extend(history(10 if longer else 3, start=200))
    engine_checkpoint_path(path).write_bytes(saved.read_bytes())
    forget(logs)

    ctrl = started(Ledger(path, checkpoint_every=0))
    assert ctrl.replay_report is not None and ctrl.replay_report.from_checkpoint == 0
    assert ctrl.state == full_replay(path)
    (warning,) = records(logs, "engine_checkpoint_ignored")
    assert "stale" in str(warning["reason"])


def test_a_checkpoint_whose_tip_is_gone_from_a_rewritten_branch_is_stale(
    tmp_path: Path, logs: io.StringIO
) -> None:
    """Same events up to the checkpoint's position, but its commit is not the branch's ancestor."""
    events = history(6)
    saved = saved_after(tmp_path / "a" / "ledger.git", events)
    path = tmp_path / "b" / "ledger.git"
    Ledger(path, checkpoint_every=0).extend(events)  # the same events, other commits (other times)
    engine_checkpoint_path(path).write_bytes(saved.read_bytes())
    forget(logs)

    ctrl = started(Ledger(path, checkpoint_every=0))
    assert ctrl.replay_report is not None and ctrl.replay_report.from_checkpoint == 0
    (warning,) = records(logs, "engine_checkpoint_ignored")
    assert "does not hold" in str(warning["reason"]) or "stale" in str(warning["reason"])


def test_no_checkpoint_on_a_small_ledger_is_not_a_warning(tmp_path: Path, logs: io.StringIO) -> None:
    ledger = Ledger(tmp_path / "ledger.git", checkpoint_every=0)
    ledger.extend(history(1))
    ctrl = controller(ledger)
    ctrl.checkpoint = EngineCheckpoint(ledger.path)  # the default: every 5,000 events
    ctrl.replay()
    assert not records(logs, "engine_checkpoint_ignored")
    assert ctrl.save_checkpoint() is False  # below one save's worth: nothing to gain


def test_folding_after_the_checkpoint_keeps_the_compaction_counts(tmp_path: Path) -> None:
    """Compacted at other moments than a full replay's chunks, the state still agrees once the
    first step compacts: the same executions forgotten and the same runs counted for the cap."""
    events = history(12)
    whole = EngineState()
    for i, event in enumerate(events):
        apply(whole, event)
        if (i + 1) % COMPACT_EVERY == 0:
            whole.compact(KEEP_FINISHED)
    whole.compact(KEEP_FINISHED)
    path = tmp_path / "ledger.git"
    Ledger(path, checkpoint_every=0).extend(events[:37])
    saved_after_state = started(Ledger(path, checkpoint_every=0))
    assert saved_after_state.save_checkpoint()
    Ledger(path, checkpoint_every=0).extend(events[37:])
    resumed = started(Ledger(path, checkpoint_every=0))
    resumed.state.compact(KEEP_FINISHED)
    assert resumed.state == whole


ENGINE_COUNTERS = (
    "reconciler_sequences_finished_total",
    "reconciler_task_duration_seconds",
    "reconciler_evaluations_total",
    "reconciler_job_runs_total",
)


def counted(path: Path, *, saved: bool) -> tuple[Controller, list[str]]:
    """A start wired like the app's (metrics hooked on the cycle, its counters a checkpoint part),
    its first cycle's hooks run, and the engine counters /metrics then shows."""
    metrics = Metrics()
    ctrl = controller(Ledger(path, checkpoint_every=0), saved=saved)
    ctrl.checkpoint_parts = {"metrics": metrics.checkpoint_part()}
    ctrl.on_cycle.append(metrics.on_cycle)
    ctrl.replay()
    metrics.on_cycle(ctrl)
    ctrl._compact_if_due()
    body = metrics.render()[0].decode()
    return ctrl, sorted(line for line in body.splitlines() if line.startswith(ENGINE_COUNTERS))


def test_counters_continue_from_the_whole_ledger_after_a_checkpointed_start(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    Ledger(path, checkpoint_every=0).extend(history(8))
    first, _ = counted(path, saved=True)
    assert first.save_checkpoint()
    Ledger(path, checkpoint_every=0).extend(history(5, start=100))

    resumed, shown = counted(path, saved=True)
    assert resumed.replay_report is not None and resumed.replay_report.from_checkpoint > 0
    _, whole = counted(path, saved=False)
    assert shown == whole
    assert 'reconciler_sequences_finished_total{result="pass",sequence="delivery",stage="qa"} 13.0' in shown


def test_counters_that_do_not_read_back_make_the_checkpoint_unused(tmp_path: Path, logs: io.StringIO) -> None:
    path = tmp_path / "ledger.git"
    Ledger(path, checkpoint_every=0).extend(history(8))
    first, _ = counted(path, saved=True)
    assert first.save_checkpoint()
    saved = engine_checkpoint_path(path)
    found = checkpoint.read(saved, KIND, PAYLOAD_VERSION, EngineStatePayload)
    assert isinstance(found, checkpoint.Loaded)
    spoiled = found.payload.model_copy(update={"parts": {"metrics": {"closed": 3}}})
    checkpoint.write(saved, KIND, PAYLOAD_VERSION, found.header.key, spoiled)
    forget(logs)

    resumed, shown = counted(path, saved=True)
    assert resumed.replay_report is not None and resumed.replay_report.from_checkpoint == 0
    assert shown == counted(path, saved=False)[1]
    (warning,) = records(logs, "engine_checkpoint_ignored")
    assert "metrics" in str(warning["reason"])


# ------------------------------------------------------------------ through the app


SHOP = shipyard(stage("qa", sequence("delivery", task("deploy"))))


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[UpstreamRepo], App]]:
    monkeypatch.setattr(enginecheckpoint, "SAVE_EVERY", 5)  # the tutorial's few events are worth one
    yield from running_apps(tmp_path / "data", local_commands=["*"])


def delivered_once(apps: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo, tmp_path: Path) -> App:
    """A running app on the shop's qa stage whose ledger holds one finished qa delivery."""
    seed_shop(
        upstream_repo, SHOP, stages=("qa",), files={"web/job/config.yaml": recording_job(tmp_path / "runs")}
    )
    app = apps(upstream_repo)
    deploy(upstream_repo, "2.0")
    wait_for(
        lambda: any(e.type == "sh.keptn.event.qa.delivery.finished" for e in app.ledger.events()),
        what="the qa delivery",
    )
    return app


def test_a_restart_uses_the_checkpoint_and_a_corrupted_one_is_rebuilt(
    apps: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo, tmp_path: Path, logs: io.StringIO
) -> None:
    app = delivered_once(apps, upstream_repo, tmp_path)
    app.stop(grace=5)  # a clean stop saves the folded state
    count = len(app.ledger.events())
    saved = engine_checkpoint_path(tmp_path / "data" / "ledger.git")
    assert saved.is_file()

    again = apps(upstream_repo)
    replay_status = again.status()["engine"]["replay"]
    assert replay_status["from_checkpoint"] == count and replay_status["folded"] == 0
    (line,) = records(logs, "ledger_replayed")[-1:]
    assert line["from_checkpoint"] == count and line["folded"] == 0
    again.stop(grace=5)

    damage_bytes(saved)
    third = apps(upstream_repo)
    replay_status = third.status()["engine"]["replay"]
    assert replay_status["from_checkpoint"] == 0 and replay_status["folded"] >= count
    assert records(logs, "engine_checkpoint_ignored")
    assert [(e.stage, e.state) for e in third.controller.state.executions.values()] == [("qa", "finished")]
    third.stop(grace=5)
    found = checkpoint.read(saved, KIND, PAYLOAD_VERSION, EngineStatePayload)
    assert isinstance(found, checkpoint.Loaded)  # rebuilt at the stop


def engine_counters(app: App) -> list[str]:
    body = app.metrics.render()[0].decode()
    return sorted(line for line in body.splitlines() if line.startswith(ENGINE_COUNTERS))


def delivered_then_checkpoint_lost(
    apps: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo, tmp_path: Path
) -> tuple[Path, int, list[str]]:
    """A data directory whose ledger holds one finished delivery and whose engine checkpoint is
    gone (a fresh data directory on a copied or recovered ledger); the engine counters it showed.
    The engine keeps no finished execution, so only the counters saved with the state show it."""
    first = delivered_once(apps, upstream_repo, tmp_path)
    wait_for(lambda: first.controller.cursor == len(first.ledger.events()), what="the loop to fold it all")
    counters = engine_counters(first)
    first.stop(grace=5)
    saved = engine_checkpoint_path(tmp_path / "data" / "ledger.git")
    saved.unlink()
    return saved, len(first.ledger.events()), counters


def small_ledger_is_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tutorial's few events stand for 100,000 (a fold that long resumes from its own
    checkpoint), and the engine keeps no finished execution, so only the counters show them."""
    monkeypatch.setattr(app_module, "BULK_EVENTS", 1)
    monkeypatch.setattr(app_module, "Controller", functools.partial(Controller, keep_finished=0))


def test_a_start_that_folds_the_whole_ledger_then_runs_on_the_checkpoint_it_wrote_as_a_restart_does(
    apps: Callable[[UpstreamRepo], App],
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small_ledger_is_bulk(monkeypatch)
    _, count, counters = delivered_then_checkpoint_lost(apps, upstream_repo, tmp_path)
    forget(logs)

    cold = apps(upstream_repo)
    replay_status = cold.status()["engine"]["replay"]
    assert replay_status["from_checkpoint"] == 0 and replay_status["folded"] == count
    (resumed,) = records(logs, "engine_state_resumed")
    assert resumed["events"] == count
    assert [r["reason"] for r in records(logs, "engine_checkpoint_ignored")] == ["no checkpoint"]
    with cold.controller.lock:
        state = from_payload(to_payload(cold.controller.state))  # a copy, as it was at the start
    assert not state.executions and state.event_count == count
    assert engine_counters(cold) == counters  # /metrics still counts the whole ledger
    cold.stop(grace=5)

    restarted = apps(upstream_repo)
    assert restarted.status()["engine"]["replay"]["folded"] == 0
    with restarted.controller.lock:
        assert restarted.controller.state == state
    wait_for(lambda: engine_counters(restarted) == counters, what="the counters after its first cycle")


def test_a_checkpoint_spoiled_as_the_cold_start_writes_it_is_detected_and_written_again(
    apps: Callable[[UpstreamRepo], App],
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
    logs: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small_ledger_is_bulk(monkeypatch)
    saved, count, counters = delivered_then_checkpoint_lost(apps, upstream_repo, tmp_path)
    write = checkpoint.write
    spoiled: list[Path] = []

    def spoiling_write(path: Path, kind: str, *args: Any, **kwargs: Any) -> int:
        """The first engine checkpoint lands damaged (a bad disk, a bit flipped on the way)."""
        size = write(path, kind, *args, **kwargs)
        if kind == KIND and not spoiled:
            damage_bytes(path)
            spoiled.append(path)
        return size

    monkeypatch.setattr(checkpoint, "write", spoiling_write)
    forget(logs)

    cold = apps(upstream_repo)
    assert spoiled == [saved]
    reasons = [str(r["reason"]) for r in records(logs, "engine_checkpoint_ignored")]
    assert reasons[0] == "no checkpoint" and "damaged" in reasons[1]  # seen on reading it back
    assert records(logs, "engine_checkpoint_not_resumed") and not records(logs, "engine_state_resumed")
    assert cold.controller.replay_report is not None and cold.controller.replay_report.folded == count
    assert cold.controller.state.event_count == count
    assert engine_counters(cold) == counters
    wait_for(  # the control loop's first cycle writes it again, intact
        lambda: isinstance(
            checkpoint.read(saved, KIND, PAYLOAD_VERSION, EngineStatePayload), checkpoint.Loaded
        ),
        what="the engine checkpoint written again",
    )
    cold.stop(grace=5)

    restarted = apps(upstream_repo)
    assert restarted.status()["engine"]["replay"]["folded"] == 0
    wait_for(lambda: engine_counters(restarted) == counters, what="the counters after its first cycle")
