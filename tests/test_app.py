"""The whole reconciler in-process against a real git upstream: commit-to-deploy, a two-stage
delivery run by the local runner, and a restart that replays the ledger and does nothing twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.app import App
from reconciler.core.engine_state import replay
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import Ledger
from tests.support.gitserver import UpstreamRepo
from tests.support.running import running_apps
from tests.support.shop import approval, deploy, recording_job, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

SHIPYARD = shipyard(
    stage("qa", sequence("delivery", task("deploy"), task("evaluation", timeframe="5m"))),
    stage(
        "production", sequence("delivery", approval(), task("deploy"), triggered_on="qa.delivery.finished")
    ),
)


def seed(repo: UpstreamRepo, runs: Path) -> None:
    """The deploy "job" is a real local process appending one line per run (image and stage)."""
    job = recording_job(runs, "$(IMAGE) $(KEPTN_STAGE)")
    seed_shop(repo, SHIPYARD, stages=("qa", "production"), files={"web/job/config.yaml": job})


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[[UpstreamRepo], App]]:
    yield from running_apps(tmp_path / "data", local_commands=["*"])  # the jobs are python one-liners


def ledger_types(app: App) -> list[str]:
    return [e.type for e in app.ledger.events()]


def finished(app: App, type_: str) -> list[KeptnEvent]:
    return [e for e in app.ledger.events() if e.type == type_]


def test_commit_to_deploy_runs_qa_then_production_and_a_restart_repeats_nothing(
    app_factory: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    seed(upstream_repo, runs)
    app = app_factory(upstream_repo)
    assert app.store.current().ready
    deploy(upstream_repo, "2.0")

    wait_for(lambda: finished(app, "sh.keptn.event.production.delivery.finished") != [], what="production")
    qa_done = finished(app, "sh.keptn.event.qa.delivery.finished")[0]
    assert qa_done.result == "pass"
    prod_done = finished(app, "sh.keptn.event.production.delivery.finished")[0]
    assert prod_done.result == "pass", prod_done.data
    assert runs.read_text().splitlines() == ["web:2.0 qa", "web:2.0 production"]
    trigger = finished(app, "sh.keptn.event.qa.delivery.triggered")[0]
    assert trigger.gitcommitid == upstream_repo.tip("qa")
    assert trigger.data["configurationChange"]["values"]["image"] == "web:2.0"
    # the evaluation had no SLO: Keptn's "no SLO configured" pass, recorded with its reason
    evaluation = finished(app, "sh.keptn.event.evaluation.finished")[0]
    assert evaluation.result == "pass" and "no SLO" in evaluation.data["message"]

    count = len(app.ledger.events())
    app.stop(grace=5)
    again = app_factory(upstream_repo)
    polls, cycles = again.poller.health().polls, again.controller.cycles
    wait_for(
        lambda: again.poller.health().polls >= polls + 2 and again.controller.cycles >= cycles + 2,
        what="two more polls and control-loop cycles",
    )
    assert len(again.ledger.events()) == count
    assert runs.read_text().splitlines() == ["web:2.0 qa", "web:2.0 production"]
    state = replay(Ledger(tmp_path / "data" / "ledger.git", "reconciler-ledger").events())
    assert [(e.stage, e.state, e.result) for e in state.executions.values()] == [
        ("qa", "finished", "pass"),
        ("production", "finished", "pass"),
    ]


def test_invalid_shipyard_commit_is_rejected_and_the_last_good_one_keeps_serving(
    app_factory: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo, tmp_path: Path
) -> None:
    seed(upstream_repo, tmp_path / "runs.txt")
    app = app_factory(upstream_repo)
    good = upstream_repo.tip("main")
    upstream_repo.commit(
        "main", {"shipyard.yaml": SHIPYARD.replace("tasks:", "taskz:", 1) + "  bad: [\n"}, "oops"
    )
    wait_for(lambda: "reconciler.upstream.rejected" in ledger_types(app), what="rejection")
    rejected = finished(app, "reconciler.upstream.rejected")[0]
    assert "shipyard.yaml" in str(rejected.data)
    assert app.store.current().commit("main") == good
    # still serving: a delivery runs on the last good shipyard
    deploy(upstream_repo, "3.0")
    wait_for(lambda: finished(app, "sh.keptn.event.qa.delivery.finished") != [], what="qa delivery")
