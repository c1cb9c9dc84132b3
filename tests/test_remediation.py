"""get-action: which action a problem gets, round after round (spec 5.3, 5.5)."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.core.planning import Policy
from reconciler.core.remediation import ProblemKey, carried_index, problem_of, round_index, select
from reconciler.executors.remediation import SOURCE, GetActionExecutor
from reconciler.formats.events import KeptnEvent, derived_id, task_type
from reconciler.formats.remediation import load_remediation
from tests.support.context import MemoryContext
from tests.support.engine import EngineHarness, answer, trigger
from tests.support.events import now_text
from tests.support.ingress import GitUpstream

THREE = """
apiVersion: spec.keptn.sh/0.1.4
kind: Remediation
metadata: {name: r}
spec:
  remediations:
    - problemType: Response time degradation
      actionsOnOpen:
        - {name: Scale to 2, action: scale, value: "2"}
        - {name: Scale to 4, action: scale, value: "4"}
        - {name: Roll back, action: rollback, description: previous revision}
    - problemType: default
      actionsOnOpen:
        - {name: Page, action: escalate}
"""


def get_action(context: str = "ctx-1", commit: str | None = None, **data: Any) -> KeptnEvent:
    payload = {"project": "fulltour", "stage": "production", "service": "helloservice", **data}
    return KeptnEvent(
        id=derived_id("get-action", context, str(sorted(payload.items()))),
        source="shipyard-controller",
        type=task_type("get-action", "triggered"),
        shkeptncontext=context,
        gitcommitid=commit,
        data=payload,
        time=now_text(),
    )


def run(ctx: MemoryContext, event: KeptnEvent) -> KeptnEvent:
    GetActionExecutor().run(event, ctx, started=False)
    started, finished = ctx.recorded[-2:]
    assert started.type == "sh.keptn.event.get-action.started" and started.source == SOURCE
    assert finished.type == "sh.keptn.event.get-action.finished" and finished.triggeredid == event.id
    return finished


@pytest.fixture
def upstream(git_upstream: GitUpstream, tutorial_upstream: GitUpstream) -> GitUpstream:
    return tutorial_upstream


def test_tutorial_problem_gets_scale_with_value_two(tutorial_upstream: GitUpstream) -> None:
    ctx = MemoryContext(tutorial_upstream.files())
    done = run(ctx, get_action(problem={"problemTitle": "http_response_time_seconds_main_page_sum"}))
    assert (done.result, done.status) == ("pass", "succeeded")
    assert done.data["action"] == {
        "name": "Scale up",
        "action": "scale",
        "description": "Scale helloservice to 2 replicas",
        "value": "2",
    }
    assert done.data["get-action"]["actionIndex"] == 1


def test_root_cause_wins_over_title_and_alert_spelling_is_understood(tutorial_upstream: GitUpstream) -> None:
    ctx = MemoryContext(tutorial_upstream.files())
    done = run(
        ctx,
        get_action(
            problem={
                "ProblemTitle": "http_response_time_seconds_main_page_sum",
                "RootCause": "Response time degradation",
            }
        ),
    )
    assert done.data["action"]["action"] == "scaling"
    assert done.data["action"]["value"] == "3"


def test_unknown_problem_type_falls_back_to_default(tutorial_upstream: GitUpstream) -> None:
    ctx = MemoryContext(tutorial_upstream.files())
    done = run(ctx, get_action(problem={"problemTitle": "disk full"}))
    assert done.result == "pass"
    assert done.data["action"]["action"] == "rollback"
    assert "problemType 'default'" in done.data["message"]


def test_no_remediation_file_fails_clearly_naming_the_path(tutorial_upstream: GitUpstream) -> None:
    ctx = MemoryContext(tutorial_upstream.files())
    event = get_action(problem={"problemTitle": "slow"})
    event.data["stage"] = "qa"  # the tutorial has no remediation.yaml in qa
    done = run(ctx, event)
    assert (done.result, done.status) == ("fail", "errored")
    assert "Could not get remediation.yaml file for services helloservice in stage qa" in done.data["message"]
    assert "helloservice/remediation.yaml does not exist on branch qa" in done.data["message"]
    assert "action" not in done.data


def test_broken_remediation_file_names_file_and_line(git_upstream: GitUpstream) -> None:
    git_upstream.commit(
        "production",
        {"helloservice/remediation.yaml": "apiVersion: spec.keptn.sh/0.1.3\nkind: Remediation\nspec: {}\n"},
    )
    done = run(MemoryContext(git_upstream.files()), get_action(problem={"problemTitle": "x"}))
    assert (done.result, done.status) == ("fail", "errored")
    assert "production:helloservice/remediation.yaml:1" in done.data["message"]
    assert "spec.keptn.sh/0.1.4" in done.data["message"]


def test_no_match_and_no_default_says_which_problem(git_upstream: GitUpstream) -> None:
    git_upstream.commit(
        "production",
        {
            "helloservice/remediation.yaml": (
                "apiVersion: spec.keptn.sh/0.1.4\nspec:\n  remediations:\n"
                "    - problemType: cpu\n      actionsOnOpen: [{action: scale}]\n"
            )
        },
    )
    done = run(MemoryContext(git_upstream.files()), get_action(problem={"problemTitle": "memory leak"}))
    assert (done.result, done.status) == ("fail", "succeeded")
    assert done.data["message"].startswith("unable to find action for problem title memory leak")


def test_remediation_file_is_read_at_the_pinned_commit(git_upstream: GitUpstream) -> None:
    first = git_upstream.commit("production", {"helloservice/remediation.yaml": THREE})
    git_upstream.commit(
        "production",
        {"helloservice/remediation.yaml": THREE.replace('action: scale, value: "2"', "action: nap")},
    )
    problem = {"problemTitle": "Response time degradation"}
    pinned = run(MemoryContext(git_upstream.files()), get_action(commit=first, problem=problem))
    latest = run(MemoryContext(git_upstream.files()), get_action(problem=problem))
    assert pinned.data["action"]["action"] == "scale"
    assert latest.data["action"]["action"] == "nap"


def test_inherited_fail_result_is_not_copied_into_the_answer(git_upstream: GitUpstream) -> None:
    git_upstream.commit("production", {"helloservice/remediation.yaml": THREE})
    event = get_action(
        problem={"problemTitle": "Response time degradation"},
        result="fail",
        status="succeeded",
        **{"get-action": {"actionIndex": 1}},
    )
    done = run(MemoryContext(git_upstream.files()), event)
    assert done.result == "pass"
    assert done.data["action"]["value"] == "4"
    assert done.data["get-action"]["actionIndex"] == 2


def test_exhausted_actions_end_with_a_message_saying_so() -> None:
    rem = load_remediation(THREE)
    problem = ProblemKey(title="Response time degradation")
    assert [select(rem, problem, i).action.value for i in range(2)] == ["2", "4"]  # type: ignore[union-attr]
    third = select(rem, problem, 2)
    assert third.action is not None and third.action.action == "rollback"
    done = select(rem, problem, 3)
    assert (done.result, done.action) == ("fail", None)
    assert done.message.startswith(
        "there is no action with index 3 for problem title Response time degradation"
    )
    assert "all 3 action(s)" in done.message
    assert done.finished_data() == {}


def test_round_index_takes_the_larger_of_payload_and_ledger() -> None:
    assert carried_index({"get-action": {"actionIndex": 2}}) == 2
    assert carried_index({"Get-Action": {"ActionIndex": 1.0}}) == 1
    assert carried_index({"get-action": {"actionIndex": "2"}}) == 0
    assert carried_index({"get-action": {"actionIndex": True}}) == 0
    assert round_index({"get-action": {"actionIndex": 1}}, 2) == 2
    assert round_index({"get-action": {"actionIndex": 3}}, 0) == 3
    assert problem_of({"problem": "not an object"}) == ProblemKey()


def test_rounds_recorded_in_the_ledger_advance_the_index_without_a_carried_one(
    git_upstream: GitUpstream,
) -> None:
    git_upstream.commit("production", {"helloservice/remediation.yaml": THREE})
    ctx = MemoryContext(git_upstream.files())
    problem = {"problemTitle": "Response time degradation"}
    picked = []
    for n in range(4):
        done = run(ctx, get_action(problem=problem, round=n))  # each round: a fresh trigger, no index
        picked.append(done.data["action"]["name"] if "action" in done.data else done.result)
    assert picked == ["Scale to 2", "Scale to 4", "Roll back", "fail"]
    other_context = run(ctx, get_action(context="ctx-2", problem=problem))
    assert other_context.data["action"]["value"] == "2"


REMEDIATION_SHIPYARD = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: fulltour}
spec:
  stages:
    - name: production
      sequences:
        - name: remediation
          triggeredOn:
            - event: production.remediation.finished
              selector: {match: {evaluation.result: fail}}
          tasks:
            - name: get-action
            - name: action
            - name: evaluation
"""


def harness(
    git_upstream: GitUpstream, evaluation: str, policy: Policy | None = None, remediation: str | None = THREE
) -> tuple[EngineHarness, list[Any]]:
    """The pure engine with the real get-action executor; action and evaluation scripted."""
    files = (
        {"helloservice/remediation.yaml": remediation} if remediation else {"helloservice/slo.yaml": "x: 1\n"}
    )
    head = git_upstream.commit("production", files)
    h = EngineHarness(REMEDIATION_SHIPYARD, policy)
    h.config.heads["production"] = head  # sequences pin the real stage head
    ctx = MemoryContext(git_upstream.files(), clock=lambda: h.now)
    ran: list[Any] = []

    def get_action_fn(ev: KeptnEvent) -> list[KeptnEvent]:
        ctx.recorded = list(h.ledger)
        ctx._ids = {e.id for e in h.ledger}
        GetActionExecutor().run(ev, ctx, started=False)
        return ctx.recorded[-2:]

    def action_fn(ev: KeptnEvent) -> list[KeptnEvent]:
        ran.append(
            ev.data["action"]["value"] if "value" in ev.data["action"] else ev.data["action"]["action"]
        )
        return [
            answer(ev, "started", "job-executor-service", h.now, status="succeeded"),
            answer(ev, "finished", "job-executor-service", h.now, status="succeeded", result="pass"),
        ]

    h.on("get-action", get_action_fn)
    h.on("action", action_fn)
    h.passing("evaluation", source="lighthouse-service", result=evaluation, evaluation={"result": evaluation})
    return h, ran


def test_escalation_walks_the_action_list_while_evaluation_fails_then_stops(
    git_upstream: GitUpstream,
) -> None:
    h, ran = harness(git_upstream, "fail")
    h.run(trigger("production", "remediation", problem={"problemTitle": "Response time degradation"}))
    assert ran == ["2", "4", "rollback"]
    actions = [e.data["action"] for e in h.ledger if e.type == "sh.keptn.event.action.triggered"]
    # each round's action is exactly that round's, not merged with the previous round's
    assert actions[2] == {"name": "Roll back", "action": "rollback", "description": "previous revision"}
    indexes = [
        e.data["get-action"]["actionIndex"] for e in h.ledger if e.type == "sh.keptn.event.action.triggered"
    ]
    assert indexes == [1, 2, 3]
    finished = [e for e in h.ledger if e.type == "sh.keptn.event.production.remediation.finished"]
    assert len(finished) == 4
    assert finished[-1].result == "fail"
    assert "there is no action with index 3" in finished[-1].data["message"]
    assert h.types().count("sh.keptn.event.production.remediation.triggered") == 4


def test_passing_evaluation_ends_remediation_after_one_round(git_upstream: GitUpstream) -> None:
    h, ran = harness(git_upstream, "pass")
    h.run(trigger("production", "remediation", problem={"problemTitle": "Response time degradation"}))
    assert ran == ["2"]
    finished = [e for e in h.ledger if e.type == "sh.keptn.event.production.remediation.finished"]
    assert [e.result for e in finished] == ["pass"]


def test_iteration_cap_ends_an_endless_remediation_with_a_clear_message(git_upstream: GitUpstream) -> None:
    h, ran = harness(git_upstream, "fail", Policy(max_iterations=2))
    h.run(trigger("production", "remediation", problem={"problemTitle": "Response time degradation"}))
    assert ran == ["2", "4"]
    last = [e for e in h.ledger if e.type == "sh.keptn.event.production.remediation.finished"][-1]
    assert (last.status, last.result) == ("errored", "fail")
    assert "already ran 2 times" in last.data["message"]
    assert "remediation_max_iterations" in last.data["message"]


def test_no_remediation_file_ends_the_remediation_at_get_action(git_upstream: GitUpstream) -> None:
    h, ran = harness(git_upstream, "fail", remediation=None)
    h.run(trigger("production", "remediation", problem={"problemTitle": "Response time degradation"}))
    assert ran == []
    [done] = [e for e in h.ledger if e.type == "sh.keptn.event.production.remediation.finished"]
    assert (done.result, done.status) == ("fail", "errored")
    assert "helloservice/remediation.yaml does not exist on branch production" in done.data["message"]
