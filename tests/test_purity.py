"""`plan` and `admit` mean it: the same inputs give the same decision and leave the inputs as
they were (deep copies compared), at every point of a run."""

from __future__ import annotations

import copy
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.admission import UpstreamAdmission, admit, admit_upstream
from reconciler.core.engine_state import replay
from reconciler.core.planning import Policy, plan
from reconciler.formats.events import KeptnEvent
from reconciler.formats.upstreamrecords import ACCEPTED, BRANCH_DELETED, REJECTED
from reconciler.upstream.poll import diff_branches
from reconciler.upstream.snapshot import snapshot_of
from tests.support.engine import EngineHarness, answer, trigger
from tests.support.events import new_id, now_text
from tests.support.upstreamsync import UpstreamSync
from tests.test_engine import TUTORIAL, auto_approval, control, tutorial


def assert_pure_at_every_prefix(h: EngineHarness) -> None:
    for n in range(len(h.ledger) + 1):
        state = replay(h.ledger[:n])
        before = copy.deepcopy(state)
        first = plan(state, h.config, h.now, h.policy)
        assert state == before, f"plan changed the state after {n} events"
        assert plan(state, h.config, h.now, h.policy) == first, f"plan is not repeatable after {n} events"
        assert h.config == copy.deepcopy(h.config)


def test_plan_is_pure_through_a_delivery_to_production() -> None:
    h = tutorial("pass")
    h.run(trigger("qa", "delivery"))
    assert_pure_at_every_prefix(h)


def test_plan_is_pure_through_remediation_loops_up_to_the_cap() -> None:
    h = EngineHarness(TUTORIAL, policy=Policy(max_iterations=3))
    for task in ("get-action", "action", "je-test"):
        h.passing(task)
    h.passing("evaluation", result="fail")
    h.run(trigger("production", "remediation"))
    assert_pure_at_every_prefix(h)


def test_plan_is_pure_through_deadlines_pauses_and_aborts() -> None:
    h = EngineHarness(TUTORIAL, policy=Policy(start_deadline=timedelta(minutes=10)))
    h.record(trigger("qa", "delivery", context="c1"))
    h.record(trigger("qa", "delivery", context="c2"))
    h.record(control("c2", "pause"))
    h.advance(timedelta(minutes=11))
    h.record(control("c2", "resume"))
    h.record(control("c2", "abort", "no"))
    h.record(trigger("staging", "delivery", context="c3"))
    assert_pure_at_every_prefix(h)


ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("trigger"), st.sampled_from(["c1", "c2", "c3"]), st.sampled_from(["qa", "production"])
        ),
        st.tuples(st.just("answer"), st.integers(0, 5), st.sampled_from(["pass", "warning", "fail", ""])),
        st.tuples(
            st.just("control"),
            st.sampled_from(["c1", "c2", "c3"]),
            st.sampled_from(["pause", "resume", "abort"]),
        ),
        st.tuples(st.just("advance"), st.integers(1, 20), st.just("")),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(ACTIONS)
def test_plan_is_pure_over_random_histories(actions: list[tuple[str, object, object]]) -> None:
    h = EngineHarness(TUTORIAL)
    auto_approval(h)
    for kind, a, b in actions:
        if kind == "trigger":
            h.record(trigger(str(b), "delivery", context=str(a), n=str(len(h.ledger))))
        elif kind == "answer":
            open_tasks = [run.triggered for _, run in h.state.open_tasks()]
            if open_tasks:
                task = open_tasks[int(str(a)) % len(open_tasks)]
                h.record(answer(task, "started", "jes", h.now, status="succeeded"))
                h.record(answer(task, "finished", "jes", h.now, status="succeeded", result=str(b)))
        elif kind == "control":
            h.record(control(str(a), str(b)))
        else:
            h.advance(timedelta(minutes=int(str(a))))
        state = h.state
        before = copy.deepcopy(state)
        first = plan(state, h.config, h.now, h.policy)
        assert state == before and plan(state, h.config, h.now, h.policy) == first
    assert replay(h.ledger) == h.state  # the live state is the fold of what was recorded


def test_an_engine_event_is_one_the_plan_derived() -> None:
    """A plan re-made from the same state derives the same ids (what dedups after a crash)."""
    h = tutorial("pass")
    h.record(trigger("qa", "delivery"))
    state = replay(h.ledger[:1])
    ids = [e.id for e in plan(state, h.config, h.now, h.policy).events]
    assert ids == [e.id for e in plan(copy.deepcopy(state), h.config, h.now, h.policy).events]
    assert all(isinstance(e, KeptnEvent) and e.id for e in plan(state, h.config, h.now, h.policy).events)


def test_a_control_for_nobody_changes_nothing() -> None:
    h = EngineHarness(TUTORIAL)
    h.record(
        KeptnEvent(
            id=new_id(),
            source="cli",
            type="reconciler.sequence.control",
            time=now_text(),
            shkeptncontext="nobody",
            data={"context": "nobody", "state": "abort"},
        )
    )
    assert h.ledger[-1].type == "reconciler.sequence.control" and h.last_plan.events == []


# --- admission ---------------------------------------------------------------------------------


def _admit_twice(sync: UpstreamSync) -> list[str]:
    """admit_upstream on what the next poll observes, twice: equal results, inputs untouched."""
    store = sync.store
    tips = sync.mirror.fetch()
    changes = store.observe(
        diff_branches(sync.mirror.repo, store.baseline(), tips, ignore={"reconciler-ledger"})
    )
    records = store._state  # the folded records admission reads
    before = (copy.deepcopy(changes), copy.deepcopy(records))

    def admitted() -> UpstreamAdmission:
        return admit_upstream(
            changes, records, store.validator, main_branch="main", default_project="", deploy_on_commit=True
        )

    first, second = admitted(), admitted()
    assert first.events == second.events and first.rejected == second.rejected
    assert first.project == second.project and first.deploy_problems == second.deploy_problems
    assert (changes, records) == before
    return [e.type for e in first.events]


def test_admit_upstream_is_pure_for_a_rejection_an_acceptance_a_deploy_and_a_deletion(
    upstream_sync: UpstreamSync,
) -> None:
    repo = upstream_sync.upstream
    repo.commit(
        "main", {"shipyard.yaml": "apiVersion: spec.keptn.sh/0.2.2\nkind: Shipyard\nspec: [\n"}, "bad"
    )
    assert _admit_twice(upstream_sync) == [REJECTED]
    upstream_sync.poll()
    values = "image: ghcr.io/podtato-head/podtatoserver:v0.1.2\n"
    repo.commit("qa", {"helloservice/values.yaml": values}, "deploy v0.1.2")
    assert _admit_twice(upstream_sync)[-2:] == ["sh.keptn.event.qa.delivery.triggered", ACCEPTED]
    upstream_sync.poll()
    repo.delete_branch("production")
    assert BRANCH_DELETED in _admit_twice(upstream_sync)


def test_admit_event_is_pure(upstream_sync: UpstreamSync) -> None:
    view = snapshot_of(upstream_sync.mirror.files(), pins=upstream_sync.store.current().accepted)
    event = trigger("qa", "delivery", service="helloservice")
    before = copy.deepcopy(event)
    first = admit(event, view=view, project="fulltour")
    assert admit(event, view=view, project="fulltour") == first and event == before
