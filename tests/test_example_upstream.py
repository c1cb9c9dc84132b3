"""example-upstream/: the tutorial's fulltour upstream, its chart, and its local profile.

The files are data a user copies; these tests hold them to the tutorial's facts and to
the project's own parsers, scoring and matching, so a wrong number or argument shows up
as a failing gate or an unmatched action here rather than in someone's cluster.
"""

from __future__ import annotations

import gzip
import io
import shutil
import socket
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from reconciler.core.jobmatching import answering_action, evaluate, event_object
from reconciler.core.merge import deep_merge
from reconciler.core.remediation import ProblemKey, select
from reconciler.core.scoring import SLIAnswer, SLIValue
from reconciler.core.scoring import evaluate as score
from reconciler.core.simulation import load_outcomes
from reconciler.core.sliquery import QueryContext, substitute
from reconciler.core.validation import validate_upstream
from reconciler.demo import chartpack
from reconciler.formats.events import KeptnEvent
from reconciler.formats.jobconfig import JobConfig, JobTask, load_jobconfig
from reconciler.formats.notifications import load_notifications
from reconciler.formats.remediation import load_remediation
from reconciler.formats.shipyard import Shipyard, load_shipyard
from reconciler.formats.sli import load_sli
from reconciler.formats.slo import SLO, load_slo
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.events import new_id, now_text

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT / "example-upstream"
CHART_SRC = UPSTREAM / "_chart" / "helloservice"
STAGES = ("qa", "production")
GOOD = "ghcr.io/podtato-head/podtatoserver:v0.1.1"
K8S = "1.30"


def svc(stage: str, *parts: str) -> Path:
    return UPSTREAM.joinpath(stage, "helloservice", *parts)


def local(stage: str, *parts: str) -> Path:
    return UPSTREAM.joinpath("_local", stage, "helloservice", *parts)


def shipyard(path: Path = UPSTREAM / "main" / "shipyard.yaml") -> Shipyard:
    return load_shipyard(path.read_bytes(), str(path))


def slo(path: Path) -> SLO:
    loaded = load_slo(path.read_bytes(), str(path))
    assert loaded is not None
    return loaded


def jobconfig(path: Path) -> JobConfig:
    return load_jobconfig(path.read_bytes(), str(path))


# --- the chart ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_committed_chart_archive_equals_a_fresh_packaging_of_the_source(stage: str) -> None:
    committed = svc(stage, "charts", "helloservice.tgz").read_bytes()
    fresh = chartpack.pack_directory(CHART_SRC)
    # same files first (a readable failure), then the same bytes (no drift at all)
    assert chartpack.load_packaged(committed).files == chartpack.load_packaged(fresh).files, (
        "re-run: python -m reconciler.demo.chartpack example-upstream/_chart/helloservice "
        "example-upstream/{qa,production}/helloservice/charts/helloservice.tgz"
    )
    assert committed == fresh


def test_packaging_is_byte_identical_and_shaped_like_helm_package(tmp_path: Path) -> None:
    copy = tmp_path / "helloservice"
    shutil.copytree(CHART_SRC, copy)
    first = chartpack.pack_directory(copy)
    (copy / "templates" / "service.yaml").touch()  # a new mtime must not change the archive
    assert chartpack.pack_directory(copy) == first
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "helloservice/Chart.yaml"
    assert sorted(names) == sorted(
        f"helloservice/{p.relative_to(CHART_SRC).as_posix()}" for p in CHART_SRC.rglob("*") if p.is_file()
    )
    assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(chartpack.FIXED_MTIME, 0, 0, 0o644)}
    (copy / "values.yaml").write_text("image: other\nreplicaCount: 1\n")
    assert chartpack.pack_directory(copy) != first


def test_chartpack_check_mode_reports_drift(tmp_path: Path) -> None:
    out = tmp_path / "helloservice.tgz"
    assert chartpack.main([str(CHART_SRC), str(out)]) == 0
    assert chartpack.main(["--check", str(CHART_SRC), str(out)]) == 0
    out.write_bytes(out.read_bytes() + b"\0")
    assert chartpack.main(["--check", str(CHART_SRC), str(out)]) == 1


def rendered(
    values: dict[str, Any] | None = None, namespace: str = "fulltour-qa"
) -> dict[str, dict[str, Any]]:
    chart = chartpack.load_packaged(svc("qa", "charts", "helloservice.tgz").read_bytes())
    merged = deep_merge(chart.values, values or {})
    objects = chartpack.render(chart, merged, release="helloservice", namespace=namespace)
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize(
    ("values", "namespace", "replicas", "image"),
    [
        (None, "fulltour-qa", 1, GOOD),
        (
            {"replicaCount": 2, "image": "ghcr.io/podtato-head/podtatoserver:v0.1.2"},
            "fulltour-production",
            2,
            "ghcr.io/podtato-head/podtatoserver:v0.1.2",
        ),
    ],
)
def test_rendered_chart_is_valid_kubernetes_with_the_tutorials_shape(
    values: dict[str, Any] | None, namespace: str, replicas: int, image: str
) -> None:
    objects = rendered(values, namespace)
    assert set(objects) == {"Deployment", "Service"}
    for obj in objects.values():
        kubernetes_validate.validate(obj, K8S, strict=True)
        assert obj["metadata"]["name"] == "helloservice"
        assert obj["metadata"]["namespace"] == namespace
        assert obj["metadata"]["labels"] == {"app": "helloservice"}
    deployment, service = objects["Deployment"], objects["Service"]
    assert deployment["spec"]["replicas"] == replicas
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image
    assert [p["containerPort"] for p in container["ports"]] == [9000]
    assert container["env"] == [{"name": "PORT", "value": "9000"}]
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "helloservice"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "helloservice"}
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"app": "helloservice"}
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, 9000)]


def test_chart_defaults_are_the_good_build_and_one_replica() -> None:
    chart = chartpack.read_source(CHART_SRC)
    assert chart.values == {"image": GOOD, "replicaCount": 1}
    assert (chart.meta.api_version, chart.meta.name) == ("v2", "helloservice")


def test_renderer_refuses_templates_it_cannot_render_faithfully(tmp_path: Path) -> None:
    copy = tmp_path / "helloservice"
    shutil.copytree(CHART_SRC, copy)
    (copy / "templates" / "extra.yaml").write_text('a: 1\nb: {{ include "x" . }}\n')
    chart = chartpack.read_source(copy)
    with pytest.raises(chartpack.ConfigError) as err:
        chartpack.render(chart, chart.values, release="helloservice", namespace="fulltour-qa")
    assert "templates/extra.yaml:2" in str(err.value)
    assert "unsupported template expression" in str(err.value)


def test_least_privilege_rbac_is_valid_and_not_cluster_admin() -> None:
    docs = [
        d for d in yaml.safe_load_all((UPSTREAM / "_cluster" / "jes-deploy-using-helm.yaml").read_text()) if d
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S, strict=True)
    bound = {d["roleRef"]["name"] for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    assert "cluster-admin" not in bound
    subjects = {(s["name"], s["namespace"]) for d in docs for s in d.get("subjects", [])}
    # the account must live where the reconciler creates Jobs by default (and deploy/ puts it)
    assert subjects == {("jes-deploy-using-helm", Settings().job_namespace)}
    roles = {d["metadata"].get("namespace") for d in docs if d["kind"] == "Role"}
    assert roles == {"fulltour-qa", "fulltour-production"}
    cluster_rules = [r for d in docs if d["kind"] == "ClusterRole" for r in d["rules"]]
    assert cluster_rules == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create"]}]
    for role in (d for d in docs if d["kind"] == "Role"):
        assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in role["rules"])


# --- every file parses -------------------------------------------------------------------------


def test_every_yaml_file_parses_with_the_project_models() -> None:
    """Each YAML file has a checker; a file nobody checks fails the test too."""
    unchecked: list[str] = []
    for path in sorted(UPSTREAM.rglob("*.y*ml")):
        rel = path.relative_to(UPSTREAM).as_posix()
        data = path.read_bytes()
        if path.name == "shipyard.yaml":
            load_shipyard(data, rel)
        elif path.name == "slo.yaml":
            assert load_slo(data, rel) is not None
        elif rel.endswith("prometheus/sli.yaml"):
            assert load_sli(data, rel).indicators
        elif rel.endswith("job/config.yaml"):
            assert load_jobconfig(data, rel).actions
        elif path.name == "remediation.yaml":
            load_remediation(data, rel)
        elif rel == "main/notifications.yaml":
            assert load_notifications(data, rel).targets == ()  # off until a destination is uncommented
        elif rel == "main/metadata.yaml":
            assert yaml.safe_load(data)["projectName"] == "fulltour"
        elif rel.endswith("helloservice/values.yaml") and not rel.startswith("_"):
            assert yaml.safe_load(data) == {"image": GOOD}
        elif rel.startswith("_chart/"):
            chartpack.read_source(CHART_SRC)  # Chart.yaml, values.yaml; templates are rendered above
        elif rel.startswith("_cluster/"):
            assert list(yaml.safe_load_all(data))
        elif rel.startswith("_simulate/"):
            load_outcomes(data, rel)  # `reconciler simulate` outcome scripts for this upstream
        else:
            unchecked.append(rel)
    assert not unchecked


def test_branch_directories_hold_only_their_own_files() -> None:
    branches = sorted(p.name for p in UPSTREAM.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    assert branches == ["main", "production", "qa"]
    assert sorted(p.name for p in (UPSTREAM / "main").iterdir()) == [
        "metadata.yaml",
        "notifications.yaml",
        "shipyard.yaml",
    ]
    for stage in STAGES:
        assert [p.name for p in (UPSTREAM / stage).iterdir()] == ["helloservice"]
    assert not svc("qa", "remediation.yaml").exists(), "only production heals itself"


# --- the tutorial's facts --------------------------------------------------------------------------


def tasks(sy: Shipyard, stage: str, sequence: str) -> list[tuple[str, dict[str, Any] | None]]:
    st = sy.stage(stage)
    assert st is not None
    seq = st.sequence(sequence)
    assert seq is not None
    return [(t.name, t.properties) for t in seq.tasks]


def test_shipyard_is_the_tutorials_after_step_five() -> None:
    sy = shipyard()
    assert sy.project == "shipyard-fulltour"
    assert sy.stage_names == ["qa", "production"]
    window = {"timeframe": "2m"}
    assert tasks(sy, "qa", "delivery") == [("je-deployment", None), ("je-test", None), ("evaluation", window)]
    assert tasks(sy, "production", "delivery") == [
        ("approval", {"pass": "automatic", "warning": "automatic"}),
        ("je-deployment", None),
        ("je-test", None),
        ("evaluation", window),
    ]
    assert tasks(sy, "production", "remediation") == [
        ("get-action", None),
        ("action", None),
        ("je-test", None),
        ("evaluation", window),
    ]
    production = sy.stage("production")
    assert production is not None
    delivery, remediation = production.sequences
    assert [(t.event, t.selector) for t in delivery.triggered_on or []] == [("qa.delivery.finished", None)]
    (trigger,) = remediation.triggered_on or []
    assert trigger.event == "production.remediation.finished"
    assert trigger.selector is not None and trigger.selector.match == {"evaluation.result": "fail"}


@pytest.mark.parametrize("stage", STAGES)
def test_slo_numbers_are_the_tutorials(stage: str) -> None:
    gate = slo(svc(stage, "slo.yaml"))
    assert gate.comparison is not None
    assert (
        gate.comparison.compare_with,
        gate.comparison.include_result_with_score,
        gate.comparison.aggregate_function,
    ) == ("single_result", "pass", "avg")
    summary = [
        (
            o.sli,
            [g.criteria for g in o.pass_ or []],
            [g.criteria for g in o.warning or []],
            o.key_sli,
            o.weight,
        )
        for o in gate.objectives
    ]
    assert summary == [
        ("http_response_time_seconds_main_page_sum", [["<=0.4"]], [["<=0.1"]], False, 1),
        ("request_throughput", [[">=-80%"]], [], False, 1),
        ("go_routines", [["<=30"]], [], True, 1),
        ("failing_request", [["<10"]], [], False, 1),
    ]
    assert gate.objectives[0].display_name == "HTTP Response Time"
    assert gate.total_score is not None
    assert (gate.total_score.pass_, gate.total_score.warning) == ("90%", "75%")


def gate_result(path: Path, values: dict[str, float]) -> tuple[str, float]:
    answer = SLIAnswer(
        indicator_values=[SLIValue(metric=k, value=v, success=True) for k, v in values.items()]
    )
    evaluation = score(slo(path), answer)
    return evaluation.result, evaluation.score


GOOD_RUN = {
    "http_response_time_seconds_main_page_sum": 0.02,
    "request_throughput": 1.0,
    "go_routines": 12,
    "failing_request": 0,
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, ("pass", 100.0)),
        ({"http_response_time_seconds_main_page_sum": 0.8}, ("warning", 75.0)),  # the slow build
        ({"go_routines": 31}, ("fail", 75.0)),  # the key SLI fails the gate whatever the score
        ({"http_response_time_seconds_main_page_sum": 0.8, "failing_request": 10}, ("fail", 50.0)),
    ],
)
def test_the_gate_scores_like_the_tutorial_expects(
    change: dict[str, float], expected: tuple[str, float]
) -> None:
    assert gate_result(svc("qa", "slo.yaml"), {**GOOD_RUN, **change}) == expected


@pytest.mark.parametrize("stage", STAGES)
def test_sli_queries_select_this_stages_scrape_job(stage: str) -> None:
    queries = load_sli(svc(stage, "prometheus", "sli.yaml").read_bytes()).indicators
    assert set(queries) == {
        "http_response_time_seconds_main_page_sum",
        "request_throughput",
        "go_routines",
        "failing_request",
        "http_requests_total_sucess",
    }
    ctx = QueryContext(
        project="fulltour",
        stage=stage,
        service="helloservice",
        start=datetime(2024, 1, 1, 10, 0, tzinfo=UTC),
        end=datetime(2024, 1, 1, 10, 2, tzinfo=UTC),
    )
    for name, query in queries.items():
        resolved = substitute(query, ctx)
        assert f'job="helloservice-fulltour-{stage}"' in resolved, name
        assert "$" not in resolved, name
        assert resolved.startswith(("sum(", "max(")), f"{name} must return one sample however many pods run"
    main_page = substitute(queries["http_response_time_seconds_main_page_sum"], ctx)
    assert "[120s]" in main_page
    for selector in ('method="GET"', 'route="/"', 'status_code="200"'):
        assert main_page.count(selector) == 2
    assert (
        "http_requests_total" in queries["request_throughput"]
        and 'status="success"' in queries["request_throughput"]
    )
    assert "go_goroutines" in queries["go_routines"]
    assert 'code!="200"' in queries["failing_request"]


def action_event(action: dict[str, Any]) -> KeptnEvent:
    return KeptnEvent(
        source="shipyard-controller",
        type="sh.keptn.event.action.triggered",
        data={
            "project": "fulltour",
            "stage": "production",
            "service": "helloservice",
            "action": action,
            "problem": {"problemTitle": "http_response_time_seconds_main_page_sum"},
        },
        id=new_id(),
        time=now_text(),
    )


def test_remediation_maps_problems_to_actions_as_the_facts_say() -> None:
    remediation = load_remediation(svc("production", "remediation.yaml").read_bytes())
    seed = select(remediation, ProblemKey(title="http_response_time_seconds_main_page_sum"), 0)
    assert seed.action is not None
    assert (seed.action.action, seed.action.name, seed.action.value) == ("scale", "Scale up", "2")
    assert select(remediation, ProblemKey(title="http_response_time_seconds_main_page_sum"), 1).action is None
    # the companion repository's trigger: the root cause wins over the title
    both = ProblemKey(
        title="http_response_time_seconds_main_page_sum", root_cause="Response time degradation"
    )
    escalation = [select(remediation, both, i).action for i in range(3)]
    assert [(a.action, a.value) if a else None for a in escalation] == [
        ("scaling", "3"),
        ("rollback", None),
        None,
    ]
    fallback = select(remediation, ProblemKey(title="disk full"), 0).action
    assert fallback is not None and fallback.action == "rollback"


@pytest.mark.parametrize("profile", ["production", "_local/production"])
def test_every_remediation_action_has_a_job_that_carries_it_out(profile: str) -> None:
    remediation = load_remediation(svc("production", "remediation.yaml").read_bytes())
    config = jobconfig(UPSTREAM / profile / "helloservice" / "job" / "config.yaml")
    expected = {"scale": "helm scale", "scaling": "helm scale", "rollback": "helm rollback"}
    for entry in remediation.spec.remediations:
        for action in entry.actions_on_open or []:
            event = action_event(action.payload())
            matched = answering_action(config, event)
            assert matched is not None, f"no job action for remediation action {action.action!r}"
            assert [t.name for t in matched.action.tasks] == [expected[action.action]]
            if action.action in ("scale", "scaling"):
                (env,) = matched.action.tasks[0].env
                assert env.name == "REPLICA_COUNT"
                assert evaluate(env.value, event_object(event)) == action.value


def only_task(config: JobConfig, event_type: str) -> JobTask:
    matched = answering_action(
        config,
        KeptnEvent(source="shipyard-controller", type=event_type, data={}, id=new_id(), time=now_text()),
    )
    assert matched is not None, event_type
    (task,) = matched.action.tasks
    return task


NS = "$(KEPTN_PROJECT)-$(KEPTN_STAGE)"
CHART = "/keptn/charts/$(KEPTN_SERVICE).tgz"
DEPLOY_ARGS = [
    "upgrade",
    "--create-namespace",
    "--install",
    "-n",
    NS,
    "$(KEPTN_SERVICE)",
    CHART,
    "--set",
    "image=$(IMAGE)",
    "--wait",
]
SCALE_ARGS = [
    "upgrade",
    "-n",
    NS,
    "$(KEPTN_SERVICE)",
    CHART,
    "--reuse-values",
    "--set",
    "replicaCount=$(REPLICA_COUNT)",
    "--wait",
]
LOCUST_ARGS = [
    "--config",
    "/keptn/locust/locust.conf",
    "-f",
    "/keptn/locust/basic.py",
    "--host",
    "http://$(KEPTN_SERVICE).$(KEPTN_PROJECT)-$(KEPTN_STAGE)",
    "--only-summary",
]


@pytest.mark.parametrize("stage", STAGES)
def test_job_config_runs_the_tutorials_helm_and_locust_commands(stage: str) -> None:
    config = jobconfig(svc(stage, "job", "config.yaml"))
    deploy = only_task(config, "sh.keptn.event.je-deployment.triggered")
    assert (deploy.image, deploy.cmd, deploy.args) == ("alpine/helm:3.9.0", ["helm"], DEPLOY_ARGS)
    assert deploy.service_account == "jes-deploy-using-helm"
    assert deploy.files == ["charts"]
    assert [(e.name, e.value, e.value_from) for e in deploy.env] == [
        ("IMAGE", "$.data.configurationChange.values.image", "event")
    ]
    test = only_task(config, "sh.keptn.event.je-test.triggered")
    assert (test.image, test.cmd, test.args) == ("locustio/locust:2.8.6", ["locust"], LOCUST_ARGS)
    assert test.files == ["locust/basic.py", "locust/locust.conf"]
    for rel in [*test.files, "charts/helloservice.tgz"]:
        assert svc(stage, rel).is_file(), f"{rel} must exist on the {stage} branch for the job to mount"
    if stage == "production":
        scale = answering_action(config, action_event({"name": "Scale up", "action": "scale", "value": "2"}))
        assert scale is not None
        assert scale.action.tasks[0].args == SCALE_ARGS
        rollback = answering_action(config, action_event({"name": "Roll back", "action": "rollback"}))
        assert rollback is not None
        assert rollback.action.tasks[0].args == ["rollback", "-n", NS, "$(KEPTN_SERVICE)", "--wait"]
    else:
        assert answering_action(config, action_event({"action": "scale", "value": "2"})) is None


def test_load_test_files_say_what_the_facts_say() -> None:
    for stage in STAGES:
        conf = dict(
            line.split("=", 1)
            for line in svc(stage, "locust", "locust.conf").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
        assert {k.strip(): v.strip() for k, v in conf.items()} == {
            "headless": "true",
            "users": "10",
            "spawn-rate": "10",
            "run-time": "2m",
        }
        source = svc(stage, "locust", "basic.py").read_text()
        compile(source, "basic.py", "exec")  # valid Python, without importing locust here
        assert "between(5, 15)" in source and 'self.client.get("/")' in source


# --- the local profile ---------------------------------------------------------------------------


def test_local_shipyard_differs_only_in_one_minute_windows() -> None:
    main, fast = shipyard(), shipyard(UPSTREAM / "_local" / "main" / "shipyard.yaml")
    main_dump = main.model_dump()
    fast_dump = fast.model_dump()
    assert str(main_dump).replace("'timeframe': '2m'", "'timeframe': '1m'") == str(fast_dump)
    assert "'timeframe': '1m'" in str(fast_dump)


@pytest.mark.parametrize(("stage", "port"), [("qa", "18091"), ("production", "18092")])
def test_local_job_config_swaps_only_helm_and_the_service_address(stage: str, port: str) -> None:
    real, here = jobconfig(svc(stage, "job", "config.yaml")), jobconfig(local(stage, "job", "config.yaml"))
    assert [a.name for a in real.actions] == [a.name for a in here.actions]
    for real_action, local_action in zip(real.actions, here.actions, strict=True):
        assert real_action.events == local_action.events
        for real_task, local_task in zip(real_action.tasks, local_action.tasks, strict=True):
            assert (real_task.files, real_task.env, real_task.image) == (
                local_task.files,
                local_task.env,
                local_task.image,
            )
            if real_task.cmd == ["helm"]:
                assert local_task.cmd == ["python", "-m", "reconciler.demo.localhelm"]
                extra = local_task.args[len(real_task.args) :]
                assert local_task.args[: len(real_task.args)] == real_task.args
                assert extra in ([], ["--local-service-port", port])
            else:
                assert local_task.cmd == real_task.cmd == ["locust"]
                host = f"http://127.0.0.1:{port}"
                assert local_task.args == [host if a.startswith("http://") else a for a in real_task.args]
    deploy = only_task(here, "sh.keptn.event.je-deployment.triggered")
    assert deploy.args[-2:] == ["--local-service-port", port]


@pytest.mark.parametrize("stage", STAGES)
def test_local_gate_replaces_go_routines_with_a_real_python_measure(stage: str) -> None:
    queries = load_sli(local(stage, "prometheus", "sli.yaml").read_bytes()).indicators
    assert "go_routines" not in queries
    assert not any("go_goroutines" in q for q in queries.values())
    stage_queries = load_sli(svc(stage, "prometheus", "sli.yaml").read_bytes()).indicators
    assert {k: v for k, v in queries.items() if k != "python_threads"} == {
        k: v for k, v in stage_queries.items() if k != "go_routines"
    }
    gate = slo(local(stage, "slo.yaml"))
    # response time is key in the local profile: the demo's slow build must fail the gate
    assert [o.sli for o in gate.objectives if o.key_sli] == [
        "http_response_time_seconds_main_page_sum",
        "python_threads",
    ]
    values = {("python_threads" if k == "go_routines" else k): v for k, v in GOOD_RUN.items()}
    assert gate_result(local(stage, "slo.yaml"), values) == ("pass", 100.0)
    slow = {**values, "http_response_time_seconds_main_page_sum": 0.8}
    assert gate_result(local(stage, "slo.yaml"), slow) == ("fail", 75.0)


def test_local_load_test_fits_inside_the_local_evaluation_window() -> None:
    for stage in STAGES:
        text = local(stage, "locust", "locust.conf").read_text()
        assert "run-time = 30s" in text and "users = 10" in text


def test_local_profile_applied_over_the_branches_passes_validation(tmp_path: Path) -> None:
    """What the demo runs: the branches with `_local/<branch>/...` laid over them."""
    merged = tmp_path / "upstream"
    for branch in ("main", *STAGES):
        shutil.copytree(UPSTREAM / branch, merged / branch)
        shutil.copytree(UPSTREAM / "_local" / branch, merged / branch, dirs_exist_ok=True)
    assert (merged / "qa" / "helloservice" / "slo.yaml").read_bytes() == local("qa", "slo.yaml").read_bytes()
    result = validate_upstream(DirectoryFiles(merged))
    assert result.ok, "\n".join(str(p) for p in result.errors)
    assert not result.warnings, "\n".join(str(p) for p in result.warnings)


def test_the_demo_swaps_the_profiles_pinned_ports_for_free_ones_when_they_are_taken(tmp_path: Path) -> None:
    """Someone holds the profile's ports (here: this test, on ports it pins in a copy of the
    profile, so no other run on the machine is disturbed); the demo's upstream must not use them."""
    from reconciler.demo import scenario

    example = tmp_path / "example-upstream"
    shutil.copytree(UPSTREAM, example)
    with socket.socket() as qa_holder, socket.socket() as prod_holder:
        held = {}
        for stage, pinned, holder in (("qa", "18091", qa_holder), ("production", "18092", prod_holder)):
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            held[stage] = holder.getsockname()[1]
            config = example / "_local" / stage / "helloservice" / "job" / "config.yaml"
            config.write_text(config.read_text().replace(pinned, str(held[stage])))
        source = scenario.build_source(example, tmp_path / "source")
        ports = scenario.use_free_service_ports(source)
        assert set(ports) == {"qa", "production"} and len(set(ports.values())) == 2
        for stage, port in ports.items():
            assert port not in held.values()
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))  # free now
            cfg = load_jobconfig((source / stage / "helloservice" / "job" / "config.yaml").read_text())
            args = [a for action in cfg.actions for task in action.tasks for a in task.args]
            assert args[args.index("--local-service-port") + 1] == str(port)
            assert args[args.index("--host") + 1] == f"http://127.0.0.1:{port}"
            assert str(held[stage]) not in " ".join(args)


def test_the_commented_slack_notification_is_valid_once_uncommented() -> None:
    """As `reconciler demo` enables it, pointed at its local chat stand-in."""
    from reconciler.demo.newsreceiver import enable_chat

    text = (UPSTREAM / "main" / "notifications.yaml").read_text()
    config = load_notifications(enable_chat(text, "http://127.0.0.1:8765"), "main/notifications.yaml")
    [target] = config.targets
    assert (target.name, target.kind, len(target.events)) == ("team-chat", "slack", 5)
    assert target.url.text == "http://127.0.0.1:8765/services/demo"
