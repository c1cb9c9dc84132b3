"""The sequence engine on plain events, with executors as separate scripted components."""

from __future__ import annotations

from datetime import timedelta

from reconciler.core.planning import Policy
from reconciler.core.triggers import matching_triggers
from reconciler.formats.events import KeptnEvent
from reconciler.formats.shipyard import load_shipyard
from tests.support.engine import EngineHarness, answer, trigger
from tests.support.events import new_id, now_text

TUTORIAL = """
apiVersion: spec.keptn.sh/0.2.3
kind: Shipyard
metadata: {name: shipyard-fulltour}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - name: je-deployment
            - name: je-test
            - name: evaluation
              properties: {timeframe: 2m}
    - name: production
      sequences:
        - name: delivery
          triggeredOn:
            - event: qa.delivery.finished
          tasks:
            - name: approval
              properties: {pass: automatic, warning: automatic}
            - name: je-deployment
            - name: je-test
            - name: evaluation
              properties: {timeframe: 2m}
        - name: remediation
          triggeredOn:
            - event: production.remediation.finished
              selector:
                match:
                  evaluation.result: fail
          tasks:
            - name: get-action
            - name: action
            - name: je-test
            - name: evaluation
              properties: {timeframe: 2m}
"""

WORKED = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: p}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - {name: deployment, properties: {deploymentstrategy: direct}}
            - {name: test, properties: {teststrategy: performance}}
            - {name: evaluation, properties: {timeframe: 5m}}
            - {name: release}
    - name: production
      sequences:
        - name: delivery
          triggeredOn: [{event: qa.delivery.finished}]
          tasks:
            - {name: approval, properties: {pass: automatic, warning: manual}}
            - {name: deployment, properties: {deploymentstrategy: direct}}
            - {name: release}
        - name: rollback
          triggeredOn: [{event: production.delivery.finished, selector: {match: {result: fail}}}]
          tasks: [{name: rollback}]
"""


def auto_approval(h: EngineHarness) -> None:
    def fn(ev: KeptnEvent) -> list[KeptnEvent]:
        return [
            answer(ev, "started", "approval-service", h.now, status="succeeded"),
            answer(ev, "finished", "approval-service", h.now, status="succeeded", result="pass"),
        ]

    h.on("approval", fn)


def tutorial(eval_result: str = "pass") -> EngineHarness:
    h = EngineHarness(TUTORIAL)
    h.passing("je-deployment")
    h.passing("je-test", test={"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T10:02:00Z"})
    h.passing(
        "evaluation",
        source="lighthouse-service",
        result=eval_result,
        evaluation={"result": eval_result, "score": 100.0 if eval_result == "pass" else 25.0},
    )
    auto_approval(h)
    return h


def test_passing_qa_delivery_starts_production_delivery_in_the_same_context() -> None:
    h = tutorial("pass")
    h.run(trigger("qa", "delivery", configurationChange={"values": {"image": "podtato:v0.1.1"}}))
    seq = [t for t in h.types() if ".delivery." in t]
    assert seq == [
        "sh.keptn.event.qa.delivery.triggered",
        "sh.keptn.event.qa.delivery.started",
        "sh.keptn.event.qa.delivery.finished",
        "sh.keptn.event.production.delivery.triggered",
        "sh.keptn.event.production.delivery.started",
        "sh.keptn.event.production.delivery.finished",
    ]
    assert {e.shkeptncontext for e in h.ledger} == {"ctx-1"}
    prod_finished = h.ledger[-1]
    assert prod_finished.type == "sh.keptn.event.production.delivery.finished"
    assert prod_finished.result == "pass" and prod_finished.status == "succeeded"
    # the image given to qa reaches production's deployment task
    prod_deploy = [e for e in h.ledger if e.type == "sh.keptn.event.je-deployment.triggered"][1]
    assert prod_deploy.stage == "production"
    assert prod_deploy.data["configurationChange"]["values"]["image"] == "podtato:v0.1.1"
    assert prod_deploy.gitcommitid == "production-head"


def test_failed_qa_gate_does_not_start_production() -> None:
    h = tutorial("fail")
    h.run(trigger("qa", "delivery"))
    assert h.types()[-1] == "sh.keptn.event.qa.delivery.finished"
    assert h.ledger[-1].result == "fail"
    assert not any("production" in t for t in h.types())


def test_qa_warning_still_promotes_because_no_selector_fires_on_pass_and_warning() -> None:
    h = tutorial("warning")
    h.run(trigger("qa", "delivery"))
    assert "sh.keptn.event.production.delivery.triggered" in h.types()


def test_worked_example_event_order_and_payloads() -> None:
    h = EngineHarness(WORKED, project="p")
    for task in ("deployment", "release"):
        h.passing(task, message=f"Task '{task}' finished successfully!")
    h.passing("test", test={"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T10:05:00Z"})
    h.passing(
        "evaluation",
        source="lighthouse-service",
        result="warning",
        labels={"buildId": "7"},
        evaluation={"result": "warning", "score": 87.5},
    )
    auto_approval(h)
    first = trigger(
        "qa",
        "delivery",
        labels={"buildId": "7"},
        configurationChange={"values": {"image": "reg/svc:1.2"}},
        deployment={"deploymentURIsLocal": None, "deploymentstrategy": ""},
    )
    first.data["project"] = "p"
    h.run(first)
    types = h.types()
    expected_qa = [
        "sh.keptn.event.qa.delivery.triggered",
        "sh.keptn.event.qa.delivery.started",
        "sh.keptn.event.deployment.triggered",
        "sh.keptn.event.deployment.started",
        "sh.keptn.event.deployment.finished",
        "sh.keptn.event.test.triggered",
        "sh.keptn.event.test.started",
        "sh.keptn.event.test.finished",
        "sh.keptn.event.evaluation.triggered",
        "sh.keptn.event.evaluation.started",
        "sh.keptn.event.evaluation.finished",
        "sh.keptn.event.release.triggered",
        "sh.keptn.event.release.started",
        "sh.keptn.event.release.finished",
        "sh.keptn.event.qa.delivery.finished",
        "sh.keptn.event.production.delivery.triggered",
        "sh.keptn.event.production.delivery.started",
        "sh.keptn.event.approval.triggered",
    ]
    assert types[: len(expected_qa)] == expected_qa
    by_type = {}
    for e in h.ledger:
        by_type.setdefault(e.type, []).append(e)
    deploy = by_type["sh.keptn.event.deployment.triggered"][0]
    assert deploy.data["deployment"]["deploymentstrategy"] == "direct"
    assert deploy.gitcommitid == "qa-head"
    test = by_type["sh.keptn.event.test.triggered"][0]
    # task properties are not carried forward; the trigger's value is back
    assert test.data["deployment"]["deploymentstrategy"] == ""
    assert test.data["test"] == {"teststrategy": "performance"}
    assert test.data["result"] == "pass" and test.data["message"] == ""
    evaluation = by_type["sh.keptn.event.evaluation.triggered"][0]
    assert evaluation.data["evaluation"] == {"timeframe": "5m"}
    assert evaluation.data["test"]["start"] == "2024-01-01T10:00:00Z"
    release = by_type["sh.keptn.event.release.triggered"][0]
    assert release.data["result"] == "warning"
    assert release.data["evaluation"]["score"] == 87.5
    qa_done = by_type["sh.keptn.event.qa.delivery.finished"][0]
    # the sequence result is the last task's (release pass), not the worst (evaluation warning)
    assert qa_done.result == "pass"
    assert qa_done.triggeredid == first.id
    prod = by_type["sh.keptn.event.production.delivery.triggered"][0]
    assert prod.data["stage"] == "production"
    assert prod.data["evaluation"]["score"] == 87.5
    assert prod.data["configurationChange"]["values"]["image"] == "reg/svc:1.2"
    assert prod.triggeredid is None and prod.shkeptncontext == first.shkeptncontext
    approval = by_type["sh.keptn.event.approval.triggered"][0]
    assert approval.data["approval"] == {"pass": "automatic", "warning": "manual"}
    assert approval.gitcommitid == "production-head"


def test_failed_production_deployment_starts_rollback_via_result_selector() -> None:
    h = EngineHarness(WORKED, project="p")
    for task in ("deployment", "test", "evaluation", "release", "rollback"):
        h.passing(task)
    auto_approval(h)
    h.run(trigger("qa", "delivery", project="p"))
    assert "sh.keptn.event.production.rollback.triggered" not in h.types()

    h2 = EngineHarness(WORKED, project="p")
    for task in ("test", "evaluation", "release", "rollback"):
        h2.passing(task)
    auto_approval(h2)

    def deploy(ev: KeptnEvent) -> list[KeptnEvent]:
        result = "fail" if ev.stage == "production" else "pass"
        status = "errored" if ev.stage == "production" else "succeeded"
        return [
            answer(ev, "started", "jes", h2.now, status="succeeded"),
            answer(ev, "finished", "jes", h2.now, status=status, result=result),
        ]

    h2.on("deployment", deploy)
    h2.run(trigger("qa", "delivery", project="p"))
    prod_done = next(e for e in h2.ledger if e.type == "sh.keptn.event.production.delivery.finished")
    assert (prod_done.result, prod_done.status) == ("fail", "errored")
    assert "sh.keptn.event.production.rollback.triggered" in h2.types()
    # release never ran in production
    assert [e.stage for e in h2.ledger if e.type == "sh.keptn.event.release.triggered"] == ["qa"]


def test_remediation_retriggers_while_evaluation_fails_and_stops_on_warning() -> None:
    h = EngineHarness(TUTORIAL)
    rounds = {"n": 0}
    h.passing("get-action", source="remediation-service")
    h.passing("action")
    h.passing("je-test")

    def evaluation(ev: KeptnEvent) -> list[KeptnEvent]:
        rounds["n"] += 1
        result = "fail" if rounds["n"] < 3 else "warning"
        return [
            answer(ev, "started", "lighthouse-service", h.now, status="succeeded"),
            answer(ev, "finished", "lighthouse-service", h.now, status="succeeded", result=result),
        ]

    h.on("evaluation", evaluation)
    h.run(trigger("production", "remediation", problem={"problemTitle": "slow"}))
    finished = [e for e in h.ledger if e.type == "sh.keptn.event.production.remediation.finished"]
    assert [e.result for e in finished] == ["fail", "fail", "warning"]
    assert h.types().count("sh.keptn.event.production.remediation.triggered") == 3
    # every round carries the problem from the first trigger
    get_actions = [e for e in h.ledger if e.type == "sh.keptn.event.get-action.triggered"]
    assert all(e.data["problem"]["problemTitle"] == "slow" for e in get_actions)


def test_remediation_stops_when_get_action_fails_because_selector_names_evaluation() -> None:
    h = EngineHarness(TUTORIAL)
    h.passing("get-action", source="remediation-service", result="fail")
    h.run(trigger("production", "remediation"))
    assert h.types().count("sh.keptn.event.production.remediation.triggered") == 1
    assert h.ledger[-1].type == "sh.keptn.event.production.remediation.finished"
    assert h.ledger[-1].result == "fail"


def test_a_sequence_that_loops_forever_is_capped() -> None:
    h = EngineHarness(TUTORIAL, policy=Policy(max_iterations=3))
    for task in ("get-action", "action", "je-test"):
        h.passing(task)
    h.passing("evaluation", result="fail")
    h.run(trigger("production", "remediation"))
    finished = [e for e in h.ledger if e.type == "sh.keptn.event.production.remediation.finished"]
    assert len(finished) == 4
    assert finished[-1].status == "errored"
    assert "limit 3" in finished[-1].data["message"]
    assert h.types().count("sh.keptn.event.get-action.triggered") == 3


def test_two_triggers_for_one_service_run_one_after_the_other_others_in_parallel() -> None:
    h = EngineHarness(TUTORIAL)
    h.record(trigger("qa", "delivery", context="c1"))
    h.record(trigger("qa", "delivery", context="c2"))
    h.record(trigger("qa", "delivery", context="c3", service="other"))
    started = [e.shkeptncontext for e in h.ledger if e.type == "sh.keptn.event.qa.delivery.started"]
    assert started == ["c1", "c3"]
    # answer c1's tasks: c2 starts only after c1 finished
    h.passing("je-deployment")
    h.passing("je-test")
    h.passing("evaluation", result="fail")
    h.run(None)
    order = [
        (e.type.split(".")[-1], e.shkeptncontext)
        for e in h.ledger
        if e.type.startswith("sh.keptn.event.qa.delivery.") and e.service == "helloservice"
    ]
    assert order.index(("finished", "c1")) < order.index(("started", "c2"))
    # never interleaved: no c2 task was triggered before c1 finished
    c1_done = next(
        i
        for i, e in enumerate(h.ledger)
        if e.type == "sh.keptn.event.qa.delivery.finished" and e.shkeptncontext == "c1"
    )
    assert all(e.shkeptncontext != "c2" for e in h.ledger[:c1_done] if e.etype and e.etype.is_task)


def test_executor_that_never_answers_times_out_the_sequence_with_a_terminal_event() -> None:
    h = EngineHarness(TUTORIAL, policy=Policy(start_deadline=timedelta(minutes=10)))
    plan = h.record(trigger("qa", "delivery"))
    assert plan.wake_at is not None
    h.advance(timedelta(minutes=9))
    assert h.types()[-1] == "sh.keptn.event.je-deployment.triggered"
    h.advance(timedelta(minutes=2))
    task_done, seq_done = h.ledger[-2], h.ledger[-1]
    assert task_done.type == "sh.keptn.event.je-deployment.finished"
    assert task_done.source == "shipyard-controller" and task_done.status == "errored"
    assert seq_done.type == "sh.keptn.event.qa.delivery.finished"
    assert (seq_done.status, seq_done.result) == ("errored", "fail")
    assert "je-deployment" in seq_done.data["message"] and "10m" in seq_done.data["message"]
    assert h.state.executions[h.ledger[0].id].state == "timedOut"
    # a timed-out sequence chains nothing
    assert "sh.keptn.event.production.delivery.triggered" not in h.types()


def test_started_task_that_never_finishes_hits_the_run_deadline_after_a_restart() -> None:
    h = EngineHarness(TUTORIAL, policy=Policy(run_deadline=timedelta(minutes=30)))
    h.record(trigger("qa", "delivery"))
    deploy = h.ledger[-1]
    h.record(answer(deploy, "started", "job-executor-service", h.now, status="succeeded"))
    h.advance(timedelta(minutes=20))
    assert h.ledger[-1].type == "sh.keptn.event.je-deployment.started"
    # restart: rebuild state from the ledger alone, then keep going
    h.state = h.replayed()
    h.advance(timedelta(minutes=11))
    assert h.ledger[-1].type == "sh.keptn.event.qa.delivery.finished"
    assert "job-executor-service" in h.ledger[-2].data["message"]
    assert h.ledger[-1].status == "errored"


def test_replayed_state_equals_live_state_and_plans_nothing_new() -> None:
    h = tutorial("pass")
    h.run(trigger("qa", "delivery"))
    replayed = h.replayed()
    assert [(e.sequence, e.stage, e.state, e.result) for e in replayed.executions.values()] == [
        (e.sequence, e.stage, e.state, e.result) for e in h.state.executions.values()
    ]
    h.state = replayed
    assert h.record(None).events == []


def test_worst_result_wins_and_missing_result_fails_within_a_task() -> None:
    h = EngineHarness(TUTORIAL)

    def two(ev: KeptnEvent) -> list[KeptnEvent]:
        return [
            answer(ev, "started", "a", h.now, status="succeeded"),
            answer(ev, "started", "b", h.now, status="succeeded"),
            answer(ev, "finished", "a", h.now, status="succeeded", result="pass"),
            answer(ev, "finished", "b", h.now, status="succeeded", result="warning"),
        ]

    h.on("je-deployment", two)
    h.passing("je-test", result="")
    h.run(trigger("qa", "delivery"))
    done = [r for r in h.state.executions[h.ledger[0].id].tasks]
    assert (done[0].result, done[0].status) == ("warning", "succeeded")
    assert done[1].result == "fail"  # empty result counts as fail and stops the sequence
    assert h.ledger[-1].type == "sh.keptn.event.qa.delivery.finished" and h.ledger[-1].result == "fail"


def test_finished_without_started_does_not_complete_the_task() -> None:
    h = EngineHarness(TUTORIAL)
    h.record(trigger("qa", "delivery"))
    deploy = h.ledger[-1]
    h.record(answer(deploy, "finished", "jes", h.now, status="succeeded", result="pass"))
    assert h.ledger[-1].type == "sh.keptn.event.je-deployment.finished"
    h.record(answer(deploy, "started", "jes", h.now, status="succeeded"))
    assert h.ledger[-1].type == "sh.keptn.event.je-test.triggered"


def test_pause_holds_the_next_task_and_resume_releases_it_abort_ends_with_aborted() -> None:
    h = EngineHarness(TUTORIAL)
    h.record(trigger("qa", "delivery"))
    deploy = h.ledger[-1]
    h.record(
        KeptnEvent(
            source="cli",
            type="reconciler.sequence.control",
            shkeptncontext="ctx-1",
            data={"context": "ctx-1", "state": "pause"},
            id=new_id(),
            time=now_text(),
        )
    )
    h.record(answer(deploy, "started", "jes", h.now, status="succeeded"))
    h.record(answer(deploy, "finished", "jes", h.now, status="succeeded", result="pass"))
    assert "sh.keptn.event.je-test.triggered" not in h.types()
    h.record(
        KeptnEvent(
            source="cli",
            type="reconciler.sequence.control",
            shkeptncontext="ctx-1",
            data={"context": "ctx-1", "state": "resume"},
            id=new_id(),
            time=now_text(),
        )
    )
    assert h.types()[-1] == "sh.keptn.event.je-test.triggered"
    h.record(
        KeptnEvent(
            source="cli",
            type="reconciler.sequence.control",
            shkeptncontext="ctx-1",
            data={"context": "ctx-1", "state": "abort", "message": "stop it"},
            id=new_id(),
            time=now_text(),
        )
    )
    last = h.ledger[-1]
    assert last.type == "sh.keptn.event.qa.delivery.finished"
    assert last.status == "aborted" and last.data["message"] == "stop it"
    assert h.state.executions[h.ledger[0].id].state == "aborted"
    # a late answer to the aborted task changes nothing
    test_task = next(e for e in h.ledger if e.type == "sh.keptn.event.je-test.triggered")
    assert (
        h.record(answer(test_task, "finished", "jes", h.now, status="succeeded", result="pass")).events == []
    )


def test_unknown_stage_or_sequence_finishes_errored_at_once() -> None:
    h = EngineHarness(TUTORIAL)
    h.record(trigger("staging", "delivery"))
    assert h.ledger[-1].type == "sh.keptn.event.staging.delivery.finished"
    assert h.ledger[-1].data["message"] == "Unable to start sequence delivery: no stage with name staging"
    h.record(trigger("qa", "hotfix"))
    assert "no task sequence with name hotfix found in stage qa" in h.ledger[-1].data["message"]


def test_builtin_evaluation_sequence_exists_in_every_stage() -> None:
    h = EngineHarness(TUTORIAL)
    h.record(trigger("qa", "evaluation"))
    assert h.types()[-1] == "sh.keptn.event.evaluation.triggered"


def test_triggered_after_delays_the_task() -> None:
    yaml = TUTORIAL.replace(
        "            - name: je-test\n              ", "            - name: je-test\n              ", 1
    )
    yaml = yaml.replace(
        "            - name: je-test\n", "            - name: je-test\n              triggeredAfter: 5m\n", 1
    )
    h = EngineHarness(yaml)
    h.passing("je-deployment")
    h.run(trigger("qa", "delivery"))
    assert "sh.keptn.event.je-test.triggered" not in h.types()
    assert h.last_plan.wake_at is not None
    h.advance(timedelta(minutes=5))
    assert h.types()[-1] == "sh.keptn.event.je-test.triggered"


def test_selector_semantics() -> None:
    sy = load_shipyard(TUTORIAL)
    assert matching_triggers(sy, "qa", "delivery", "pass", "evaluation") == [("production", "delivery")]
    assert matching_triggers(sy, "qa", "delivery", "warning", "evaluation") == [("production", "delivery")]
    assert matching_triggers(sy, "qa", "delivery", "fail", "evaluation") == []
    assert matching_triggers(sy, "production", "remediation", "fail", "evaluation") == [
        ("production", "remediation")
    ]
    # the selector names the evaluation task: a failure elsewhere does not loop
    assert matching_triggers(sy, "production", "remediation", "fail", "get-action") == []
    assert matching_triggers(sy, "production", "remediation", "pass", "evaluation") == []


def control(context: str, state: str, message: str = "") -> KeptnEvent:
    return KeptnEvent(
        source="cli",
        type="reconciler.sequence.control",
        shkeptncontext=context,
        data={"context": context, "state": state, "message": message},
        id=new_id(),
        time=now_text(),
    )


def test_an_abort_replayed_after_a_restart_does_not_reach_a_later_sequence_of_its_context() -> None:
    h = EngineHarness(TUTORIAL)
    h.record(trigger("qa", "delivery", context="ctx-1"))
    h.record(control("ctx-1", "abort", "stop the first"))
    assert h.ledger[-1].type == "sh.keptn.event.qa.delivery.finished" and h.ledger[-1].status == "aborted"
    # a new delivery in the same context, after the abort
    h.record(trigger("qa", "delivery", context="ctx-1", attempt="2"))
    second = h.ledger[-2]
    assert second.type == "sh.keptn.event.qa.delivery.started"
    # restart: the abort is replayed with everything else; it was about the first run only
    h.state = h.replayed()
    assert h.record(None).events == []
    assert h.state.executions[second.triggeredid or ""].state == "started"
