"""The served configuration as one immutable value: what plan and admission read without git."""

from __future__ import annotations

import pytest

from reconciler.appcontext import AppContext
from reconciler.core.engine import pinned_shipyards
from reconciler.core.engine_state import EngineState, apply
from reconciler.settings import Settings
from tests.support.engine import trigger
from tests.support.upstreamsync import UpstreamSync


def test_a_snapshot_cannot_be_changed_after_it_is_built(upstream_sync: UpstreamSync) -> None:
    snap = upstream_sync.store.current()
    assert snap.ready and snap.main_commit() == upstream_sync.upstream.tip("main")
    with pytest.raises(TypeError):
        snap.accepted["main"] = "0" * 40  # type: ignore[index]
    with pytest.raises(AttributeError):
        snap.project = "other"  # type: ignore[misc]


def test_plan_finds_the_shipyard_a_running_sequence_pinned_in_the_snapshot(
    upstream_sync: UpstreamSync,
) -> None:
    """A sequence started before a shipyard commit keeps its shipyard: the shell loads it into
    the snapshot by commit, so plan reads it from memory."""
    store, repo = upstream_sync.store, upstream_sync.upstream
    old = store.current().main_commit()
    shipyard = (upstream_sync.mirror.files().read("main", "shipyard.yaml") or b"").decode()
    repo.commit("main", {"shipyard.yaml": shipyard + "\n# a comment\n"}, "touch the shipyard")
    upstream_sync.poll()
    assert store.current().main_commit() != old
    assert old is not None and store.current().shipyard(old) is None  # not loaded: nobody needs it
    state = EngineState()
    started = trigger("qa", "delivery", service="helloservice").model_copy(update={"id": "t"})
    apply(state, started)
    state.executions["t"].shipyard_commit = old
    snap = store.snapshot_for(pinned_shipyards(state))
    assert snap.shipyard(old) is not None and snap.shipyard(old) == store.current().shipyard()
    assert store.current().shipyard(old) is None  # the store's snapshot itself did not change


def test_executors_read_the_project_level_config_at_the_accepted_main_commit(
    upstream_sync: UpstreamSync,
) -> None:
    """Behaviour change (keptn-differences J20): a read without a pinned commit (the project
    level of job/config.yaml, prometheus/sli.yaml) is at the commit the reconciler serves,
    not at an unvalidated tip."""
    store, repo = upstream_sync.store, upstream_sync.upstream
    files = upstream_sync.mirror.files()
    served = files.read("main", "job/config.yaml")
    repo.commit(
        "main", {"job/config.yaml": "apiVersion: v2\nactions: [\n"}, "a broken project-level job config"
    )
    upstream_sync.poll()
    assert "main" in store.current().rejected
    ctx = AppContext(Settings(), upstream_sync.ledger, files, accepted=lambda: store.current().accepted)
    assert files.read("main", "job/config.yaml") == b"apiVersion: v2\nactions: [\n"  # the tip
    assert ctx.read_file("main", "job/config.yaml") == served  # what executors read
