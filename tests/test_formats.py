"""The format models accept Keptn 1.x users' files unchanged and lose nothing on the way.

Round trip: loading a file and dumping the model with its own field names
(`model_dump(by_alias=True, exclude_unset=True)`) gives back exactly the data the
YAML held, for the tutorial's files and the reference snippets of every format.
The remaining tests pin the Keptn defaults and quirks a user's gate depends on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from reconciler.formats.events import EventType, KeptnEvent, event_from_obj
from reconciler.formats.jobconfig import JobConfig, load_jobconfig
from reconciler.formats.metadata import ProjectMetadata, load_project_metadata
from reconciler.formats.problems import ConfigError
from reconciler.formats.remediation import Remediation, load_remediation
from reconciler.formats.shipyard import Shipyard, load_shipyard
from reconciler.formats.sli import SLIConfig, load_sli, merge_sli
from reconciler.formats.slo import SLO, load_slo
from reconciler.formats.yamldoc import load_yaml, validate_doc
from tests.support import upstreams

REPO = Path(__file__).resolve().parent.parent

# --- reference snippets (keptn-semantics sections 2.1, 2.12, 4.3, 5.2, 6.1, 7.2) -------------------------

SHIPYARD_SPEC = """\
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: shipyard-sockshop}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          triggeredOn:
            - event: qa.delivery.finished
              selector:
                match: {result: fail}
          tasks:
            - name: deployment
              triggeredAfter: "10m"
              properties: {deploymentstrategy: direct, replicas: 2, nested: {a: [1, 2]}}
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

SLO_SPEC = """\
spec_version: "1.0"
filter: {handler: "ItemsController"}
comparison:
  compare_with: single_result
  include_result_with_score: all
  number_of_comparison_results: 3
  aggregate_function: avg
objectives:
  - sli: response_time_p95
    displayName: "Response time P95"
    pass:
      - criteria: ["<=+10%", "<600"]
    warning:
      - criteria: ["<=800"]
    weight: 1
    key_sli: false
total_score:
  pass: "90%"
  warning: "75%"
"""

SLI_SPEC = """\
spec_version: "1.0"
indicators:
  response_time_p95: histogram_quantile(0.95, sum by(le) (rate(http_response_time_milliseconds_bucket{job="$SERVICE-$PROJECT-$STAGE",handler="$handler"}[$DURATION_SECONDS])))
  error_rate: sum(rate(http_requests_total{job="$SERVICE-$PROJECT-$STAGE",status!~"2.."}[$DURATION_SECONDS])) / sum(rate(http_requests_total{job="$SERVICE-$PROJECT-$STAGE"}[$DURATION_SECONDS]))
"""

REMEDIATION_SPEC = """\
apiVersion: spec.keptn.sh/0.1.4
kind: Remediation
metadata: {name: svc-remediation}
spec:
  remediations:
    - problemType: "Response time degradation"
      actionsOnOpen:
        - name: Scale up
          action: scale
          description: Increase replicas
          value: {replicas: 3}
    - problemType: default
      actionsOnOpen:
        - {name: Escalate, action: escalate, description: Notify on-call}
"""

JOBCONFIG_SPEC = """\
apiVersion: v2
actions:
  - name: "Deploy with helm"
    silent: false
    events:
      - name: "sh.keptn.event.deployment.triggered"
        jsonpath:
          property: "$.data.deployment.deploymentstrategy"
          match: "direct"
    tasks:
      - name: "helm upgrade"
        image: "alpine/helm:3.12.0"
        imagePullPolicy: "IfNotPresent"
        files: ["charts", "/values.yaml"]
        cmd: ["helm"]
        args: ["upgrade", "--install", "$(KEPTN_SERVICE)", "/keptn/charts/$(KEPTN_SERVICE).tgz", "--set", "image=$(IMAGE)"]
        env:
          - {name: IMAGE, value: "$.data.configurationChange.values.image", valueFrom: event}
          - {name: EVENT, value: "$", valueFrom: event, as: json}
          - {name: my-secret, valueFrom: secret}
          - {name: LOG_LEVEL, value: debug, valueFrom: string}
        workingDir: "/keptn"
        maxPollDuration: 1200
        namespace: "keptn-jobs"
        serviceAccount: "helm-deployer"
        ttlSecondsAfterFinished: 600
        resources:
          limits: {cpu: "1", memory: 512Mi}
          requests: {cpu: 50m, memory: 128Mi}
        securityContext:
          runAsUser: 1000
          runAsGroup: 1000
          runAsNonRoot: true
          readOnlyRootFilesystem: false
          privileged: false
          allowPrivilegeEscalation: false
          capabilities: {add: [], drop: [ALL]}
          procMount: Default
          seccompProfile: {type: RuntimeDefault}
        annotations: {key1: value1}
"""

DELIVERY_EVENT = {
    "type": "sh.keptn.event.qa.delivery.triggered",
    "source": "https://github.com/keptn/keptn/cli#configuration-change",
    "specversion": "1.0",
    "datacontenttype": "application/json",
    "id": "0b2e8a4c-4a51-4a34-9c1c-9f8d1a0b7e11",
    "time": "2024-01-01T10:00:00.000Z",
    "shkeptncontext": "5c4c2a6e-8f2a-4f3e-9a55-0f6f5d1f2b3c",
    "data": {
        "project": "P",
        "stage": "qa",
        "service": "S",
        "labels": {"k1": "v1"},
        "configurationChange": {"values": {"image": "IMG", "a": {"b": "v"}}},
        "deployment": {"deploymentURIsLocal": None, "deploymentstrategy": ""},
    },
}

ACTION_EVENT = {
    "type": "sh.keptn.event.action.triggered",
    "source": "shipyard-controller",
    "specversion": "1.0",
    "id": "e3b0c442-98fc-4c14-9afb-f4c8996fb924",
    "time": "2024-01-01T10:05:00.000Z",
    "shkeptncontext": "5c4c2a6e-8f2a-4f3e-9a55-0f6f5d1f2b3c",
    "gitcommitid": "0123456789abcdef0123456789abcdef01234567",
    "data": {
        "project": "sockshop",
        "stage": "production",
        "service": "carts",
        "action": {
            "name": "Feature toggling",
            "action": "toggle-feature",
            "description": "Toggles a feature flag",
            "value": {"EnableItemCache": "on"},
        },
        "problem": {"problemTitle": "cpu_usage_sockshop_carts", "rootCause": "cpu"},
        "get-action": {"actionIndex": 1},
        "result": "pass",
        "status": "succeeded",
    },
}

MODEL_OF = {
    "shipyard.yaml": Shipyard,
    "metadata.yaml": ProjectMetadata,
    "slo.yaml": SLO,
    "sli.yaml": SLIConfig,
    "remediation.yaml": Remediation,
    "config.yaml": JobConfig,
}


def round_trip(model: type[BaseModel], text: str | bytes, name: str = "file.yaml") -> tuple[Any, Any]:
    doc = load_yaml(text, name)
    loaded = validate_doc(model, doc)
    return loaded.model_dump(by_alias=True, exclude_unset=True), doc.value


SNIPPETS = [
    ("shipyard-spec", Shipyard, SHIPYARD_SPEC),
    ("shipyard-tests", Shipyard, upstreams.SHIPYARD),
    ("slo-spec", SLO, SLO_SPEC),
    ("slo-tests", SLO, upstreams.SLO),
    ("sli-spec", SLIConfig, SLI_SPEC),
    ("sli-tests", SLIConfig, upstreams.SLI),
    ("remediation-spec", Remediation, REMEDIATION_SPEC),
    ("remediation-tests", Remediation, upstreams.REMEDIATION),
    ("jobconfig-spec", JobConfig, JOBCONFIG_SPEC),
    ("jobconfig-tests", JobConfig, upstreams.JOB_CONFIG),
    ("metadata", ProjectMetadata, "projectName: fulltour\nisUsingDirectoryStructure: false\n"),
]


@pytest.mark.parametrize(("model", "text"), [s[1:] for s in SNIPPETS], ids=[s[0] for s in SNIPPETS])
def test_reference_files_round_trip_without_losing_a_field(model: type[BaseModel], text: str) -> None:
    dumped, data = round_trip(model, text)
    assert dumped == data


def _example_files() -> list[Path]:
    root = REPO / "example-upstream"
    if not (root / "main" / "shipyard.yaml").is_file():
        return []
    return sorted(p for p in root.rglob("*.yaml") if p.name in MODEL_OF and "_chart" not in p.parts)


@pytest.mark.skipif(not _example_files(), reason="example-upstream/ is not written yet")
@pytest.mark.parametrize(
    "path", _example_files(), ids=lambda p: str(p.relative_to(REPO / "example-upstream"))
)
def test_tutorial_files_round_trip_without_losing_a_field(path: Path) -> None:
    model = MODEL_OF[path.name]
    if path.name == "config.yaml" and path.parent.name != "job":
        pytest.skip("not a job config")
    if path.name == "sli.yaml" and path.parent.name != "prometheus":
        pytest.skip("not an SLI file")
    dumped, data = round_trip(model, path.read_bytes(), path.name)
    assert dumped == data


@pytest.mark.parametrize(
    "event", [DELIVERY_EVENT, ACTION_EVENT], ids=["delivery-triggered", "action-triggered"]
)
def test_cloudevents_round_trip_with_keptn_extensions(event: dict[str, Any]) -> None:
    loaded = event_from_obj(json.loads(json.dumps(event)))
    assert loaded.model_dump(by_alias=True, exclude_unset=True) == event
    assert KeptnEvent.from_json(loaded.to_json()).model_dump() == loaded.model_dump()


def test_go_model_contenttype_spelling_is_accepted() -> None:
    event = {k: v for k, v in DELIVERY_EVENT.items() if k != "datacontenttype"} | {
        "contenttype": "application/json"
    }
    assert event_from_obj(event).datacontenttype == "application/json"


# --- Keptn defaults and quirks the models must keep ------------------------------------------------------


def test_event_type_grammar_splits_like_keptn() -> None:
    assert EventType.parse("sh.keptn.event.get-action.triggered") == EventType(
        kind="triggered", task="get-action"
    )
    seq = EventType.parse("sh.keptn.event.qa.delivery.finished")
    assert seq is not None and (seq.stage, seq.sequence, seq.kind) == ("qa", "delivery", "finished")
    changed = EventType.parse("sh.keptn.event.deployment.status.changed")
    assert changed is not None and changed.is_sequence and changed.kind == "changed"
    assert EventType.parse("sh.keptn.event.a.b.c.d") is None
    assert EventType.parse("sh.keptn.event..triggered") is None


@pytest.mark.parametrize("version", ["0.2.0", "0.2.1", "0.2.2", "0.2.3", "0.2.4", "0.2"])
def test_shipyard_accepts_the_api_versions_keptn_1_defined(version: str) -> None:
    assert load_shipyard(upstreams.SHIPYARD.replace("0.2.4", version)).api_version.endswith(version)


@pytest.mark.parametrize("version", ["0.1.7", "v0.1", "latest", "0.2.5", "0.3.0", "1.0.0", "9.9.9", "0.2.4x"])
def test_shipyard_refuses_other_api_versions_where_they_are_naming_the_supported_ones(version: str) -> None:
    """A version we have never seen may carry fields the lenient parser would drop unseen."""
    with pytest.raises(ConfigError) as err:
        load_shipyard(upstreams.SHIPYARD.replace("0.2.4", version), "shipyard.yaml")
    [problem] = err.value.problems
    line = next(n for n, text in enumerate(upstreams.SHIPYARD.splitlines(), 1) if "apiVersion" in text)
    assert (problem.file, problem.line, problem.field) == ("shipyard.yaml", line, "apiVersion")
    assert version in problem.message
    assert "spec.keptn.sh/0.2.0" in problem.message and "spec.keptn.sh/0.2.4" in problem.message


def test_shipyard_ignores_unknown_keys_as_keptn_did() -> None:
    shipyard = load_shipyard(
        upstreams.SHIPYARD.replace("kind: Shipyard\n", "kind: Shipyard\nx-owner: team-a\n")
    )
    assert shipyard.stage_names == ["qa", "production"]


def test_stage_without_evaluation_sequence_has_the_builtin_one() -> None:
    stage = load_shipyard(upstreams.SHIPYARD).stage("qa")
    assert stage is not None
    builtin = stage.sequence("evaluation")
    assert builtin is not None and [t.name for t in builtin.tasks] == ["evaluation"]


def test_slo_without_comparison_block_compares_one_result() -> None:
    slo = load_slo("objectives: []\ntotal_score: {pass: '90%'}\n")
    assert slo is not None and slo.effective_comparison.requested == 1


def test_slo_comparison_block_without_count_compares_three_results() -> None:
    slo = load_slo("comparison: {aggregate_function: avg}\nobjectives: []\ntotal_score: {pass: '90'}\n")
    assert slo is not None and slo.effective_comparison.requested == 3


def test_slo_weight_zero_counts_as_one_and_null_objectives_are_dropped() -> None:
    slo = load_slo("objectives:\n  - sli: a\n    weight: 0\n  -\ntotal_score: {pass: '90%'}\n")
    assert slo is not None and [o.weight for o in slo.objectives] == [1]


def test_empty_slo_file_means_no_slo() -> None:
    assert load_slo("  \n") is None


def test_remediation_keys_are_case_insensitive_like_go_decoding() -> None:
    text = upstreams.REMEDIATION.replace("problemType:", "ProblemType:").replace(
        "actionsOnOpen:", "ActionsOnOpen:"
    )
    remediation = load_remediation(text)
    entry = remediation.spec.remediations[0]
    assert entry.problem_type == "Response time degradation"
    assert entry.actions_on_open is not None and entry.actions_on_open[0].payload() == {
        "name": "Scale up",
        "action": "scale",
        "description": "More replicas",
        "value": "3",
    }


def test_job_config_is_strict_about_unknown_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_jobconfig(
            upstreams.JOB_CONFIG.replace(
                "        cmd: [helm]\n", "        cmd: [helm]\n        shell: bash\n", 1
            )
        )
    problem = err.value.problems[0]
    assert problem.field == "actions[0].tasks[0].shell" and "unknown field" in problem.message


def test_job_config_annotations_must_be_a_map_as_job_executor_parsed_them() -> None:
    with pytest.raises(ConfigError) as err:
        load_jobconfig(JOBCONFIG_SPEC.replace("annotations: {key1: value1}", "annotations: [key1=value1]"))
    assert err.value.problems[0].field == "actions[0].tasks[0].annotations"


def test_job_config_api_version_messages_match_job_executor() -> None:
    with pytest.raises(ConfigError, match="apiVersion must be specified"):
        load_jobconfig("apiVersion: ''\nactions: []\n")
    with pytest.raises(ConfigError, match="apiVersion v3 is not supported, use v2"):
        load_jobconfig("apiVersion: v3\nactions: []\n")


def test_sli_levels_merge_with_later_levels_winning() -> None:
    project = load_sli("indicators: {a: p_a, b: p_b}\n")
    service = load_sli("indicators: {b: s_b, c: s_c}\n")
    assert merge_sli(project, None, service) == {"a": "p_a", "b": "s_b", "c": "s_c"}


def test_metadata_project_name_is_read_and_checked() -> None:
    assert load_project_metadata("projectName: fulltour\n").project_name == "fulltour"
    assert load_project_metadata("").project_name is None
    with pytest.raises(ConfigError, match="invalid project name"):
        load_project_metadata("projectName: Full Tour\n")


def test_model_errors_name_line_column_and_field() -> None:
    with pytest.raises(ConfigError) as err:
        load_shipyard(
            upstreams.SHIPYARD.replace("triggeredAfter: 1m", "triggeredAfter: soon"), "shipyard.yaml"
        )
    problem = err.value.problems[0]
    line = upstreams.SHIPYARD.splitlines().index("              triggeredAfter: 1m") + 1
    assert (problem.file, problem.line, problem.field) == (
        "shipyard.yaml",
        line,
        "spec.stages[1].sequences[1].tasks[2].triggeredAfter",
    )
    assert problem.column == len("              triggeredAfter: ") + 1


DEEP_FLOW = "name: x\nvalue: " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_MAPPINGS = "name: x\nvalue: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n"


@pytest.mark.timeout(5)
@pytest.mark.parametrize("scanner", ["libyaml", "pure-python"])
@pytest.mark.parametrize("text", [DEEP_FLOW, DEEP_MAPPINGS], ids=["lists", "mappings"])
def test_deep_nesting_is_refused_in_our_words_at_the_first_level_too_deep(
    monkeypatch: pytest.MonkeyPatch, scanner: str, text: str
) -> None:
    """PyYAML's libyaml scanner (6.0.4 on) stops at 1000 levels with its own message before
    our limit is counted; the pure-Python scanner has no limit. Both must give our message,
    pointing where the 64 levels are exceeded, not where a library gave up."""
    import yaml

    from reconciler.formats import yamldoc

    if scanner == "pure-python":
        monkeypatch.setattr(yamldoc, "_Loader", yaml.SafeLoader)
    with pytest.raises(ConfigError) as err:
        load_yaml(text, "deep.yaml")
    [problem] = err.value.problems
    line = text.splitlines()[1]
    brackets = [i for i, c in enumerate(line) if c == line[len("value: ")]]
    assert (problem.file, problem.line) == ("deep.yaml", 2)
    # the document's own mapping is the first level, so its 64th bracket is the 65th level
    assert problem.column == brackets[yamldoc.MAX_DEPTH - 1] + 1
    assert f"nesting deeper than {yamldoc.MAX_DEPTH} levels" in problem.message
