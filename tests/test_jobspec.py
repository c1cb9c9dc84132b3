"""Matching job actions to events and turning tasks into job specs (pure; spec 6.2-6.7)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from reconciler.core.jobmatching import MatchedAction, answering_action, matching_actions
from reconciler.core.jobspec import (
    MAX_CONFIGMAP_BYTES,
    JobDefaults,
    JobSpecError,
    build_action_specs,
    build_task_spec,
    expand,
    file_sources,
    files_configmap,
    format_event_value,
    go_duration,
    image_allowed,
    job_manifest,
    job_name,
    label_value,
)
from reconciler.formats.events import KeptnEvent
from reconciler.formats.jobconfig import JobConfig, load_jobconfig
from reconciler.formats.problems import ConfigError
from tests.support.events import now_text

EVENT_ID = "6de83495-4f83-481c-8dbe-fcceb2e0243b"


def event(type_: str = "sh.keptn.event.deployment.triggered", **data: Any) -> KeptnEvent:
    payload = {"project": "fulltour", "stage": "qa", "service": "helloservice", **data}
    return KeptnEvent(
        id=EVENT_ID,
        source="shipyard-controller",
        type=type_,
        shkeptncontext="3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10",
        gitcommitid="0123456789abcdef0123456789abcdef01234567",
        data=payload,
        time=now_text(),
    )


def config(actions: list[dict[str, Any]]) -> JobConfig:
    return load_jobconfig(yaml.safe_dump({"apiVersion": "v2", "actions": actions}))


def action(
    name: str, events: list[Any], tasks: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    evs = [e if isinstance(e, dict) else {"name": e} for e in events]
    return {
        "name": name,
        "events": evs,
        "tasks": tasks or [{"name": "t", "image": "alpine:3", "cmd": ["true"]}],
        **extra,
    }


def spec_for(
    task: dict[str, Any],
    ev: KeptnEvent | None = None,
    *,
    defaults: JobDefaults | None = None,
    files: dict[str, bytes] | None = None,
    secret_keys: dict[str, list[str]] | None = None,
) -> Any:
    cfg = config([action("a", [".*"], [task])])
    return build_task_spec(
        event=ev or event(),
        matched=MatchedAction(0, cfg.actions[0]),
        task_index=0,
        defaults=defaults or JobDefaults(),
        file_data=files or {},
        secret_keys=secret_keys,
    )


def env_of(spec: Any) -> dict[str, Any]:
    return {
        e.name: (e.value if e.secret_key_ref is None else e.secret_key_ref.model_dump()) for e in spec.env
    }


# --- matching ----------------------------------------------------------------------------------


def test_event_names_are_unanchored_regular_expressions() -> None:
    cfg = config(
        [
            action("wildcard", ["sh.keptn.event.*.triggered"]),
            action("prefix", ["sh.keptn.event.test"]),
        ]
    )
    assert [m.action.name for m in matching_actions(cfg, event("sh.keptn.event.test.triggered"))] == [
        "wildcard"
    ]
    assert [m.action.name for m in matching_actions(cfg, event("sh.keptn.event.test.finished"))] == ["prefix"]
    assert matching_actions(cfg, event("sh.keptn.event.release.finished")) == []


def test_any_of_an_actions_events_may_match() -> None:
    cfg = config(
        [action("both", ["sh.keptn.event.deployment.triggered", "sh.keptn.event.rollback.triggered"])]
    )
    assert answering_action(cfg, event("sh.keptn.event.rollback.triggered")) is not None
    assert answering_action(cfg, event("sh.keptn.event.test.triggered")) is None


def test_jsonpath_match_needs_an_equal_string() -> None:
    cfg = config(
        [
            action(
                "direct",
                [
                    {
                        "name": "deployment.triggered",
                        "jsonpath": {"property": "$.data.deployment.deploymentstrategy", "match": "direct"},
                    }
                ],
            ),
            action(
                "replicas",
                [{"name": "deployment.triggered", "jsonpath": {"property": "$.data.replicas", "match": "2"}}],
            ),
        ]
    )
    direct = event(deployment={"deploymentstrategy": "direct"}, replicas=2)
    names = [m.action.name for m in matching_actions(cfg, direct)]
    assert names == ["direct"]  # a number never equals the string "2"
    blue = event(deployment={"deploymentstrategy": "blue_green_service"})
    assert matching_actions(cfg, blue) == []
    assert matching_actions(cfg, event()) == []  # missing key: no match, no error


def test_silent_actions_run_before_the_answering_one_and_the_first_non_silent_ends_the_scan() -> None:
    cfg = config(
        [
            action("notify", ["deployment.triggered"], silent=True),
            action("deploy", ["deployment.triggered"]),
            action("never", ["deployment.triggered"]),
            action("late-silent", ["deployment.triggered"], silent=True),
        ]
    )
    matched = matching_actions(cfg, event())
    assert [(m.index, m.action.name) for m in matched] == [(0, "notify"), (1, "deploy")]
    answering = answering_action(cfg, event())
    assert answering is not None and answering.action.name == "deploy"


def test_only_silent_matches_leave_nobody_to_answer() -> None:
    cfg = config([action("notify", ["deployment.triggered"], silent=True)])
    assert [m.action.name for m in matching_actions(cfg, event())] == ["notify"]
    assert answering_action(cfg, event()) is None


# --- env -------------------------------------------------------------------------------------------


def test_env_from_event_string_and_secret() -> None:
    task = {
        "name": "helm",
        "image": "alpine/helm:3.9.0",
        "cmd": ["helm"],
        "env": [
            {"name": "IMAGE", "value": "$.data.configurationChange.values.image", "valueFrom": "event"},
            {"name": "LOG_LEVEL", "value": "debug", "valueFrom": "string"},
            {"name": "registry-creds", "valueFrom": "secret"},
        ],
    }
    ev = event(
        configurationChange={"values": {"image": "ghcr.io/podtato-head/podtatoserver:v0.1.1"}},
        labels={"build-id": "12", "version": "v0.1.1"},
    )
    spec = spec_for(task, ev, secret_keys={"registry-creds": ["USER", "TOKEN"]})
    env = env_of(spec)
    assert env["IMAGE"] == "ghcr.io/podtato-head/podtatoserver:v0.1.1"
    assert env["LOG_LEVEL"] == "debug"
    assert env["TOKEN"] == {"name": "registry-creds", "key": "TOKEN"}
    assert env["USER"] == {"name": "registry-creds", "key": "USER"}
    assert (env["KEPTN_PROJECT"], env["KEPTN_STAGE"], env["KEPTN_SERVICE"]) == (
        "fulltour",
        "qa",
        "helloservice",
    )
    assert env["LABELS_BUILD_ID"] == "12" and env["LABELS_VERSION"] == "v0.1.1"
    names = [e.name for e in spec.env]
    assert names.index("IMAGE") < names.index("KEPTN_PROJECT")  # user env first, as in JES


def test_secret_with_unlisted_keys_is_referenced_whole() -> None:
    spec = spec_for(
        {"name": "t", "image": "a:1", "cmd": ["x"], "env": [{"name": "creds", "valueFrom": "secret"}]}
    )
    container = job_manifest(spec)["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]
    assert all("valueFrom" not in e for e in container["env"])


def test_env_as_file_puts_the_value_in_a_file_and_its_path_in_the_variable() -> None:
    task = {
        "name": "t",
        "image": "a:1",
        "cmd": ["cat", "$(EVENT)"],
        "env": [
            {"name": "EVENT", "value": "$", "valueFrom": "event", "as": "file"},
            {"name": "NOTE", "value": "hello", "valueFrom": "string", "as": "file"},
            {"name": "creds", "valueFrom": "secret", "as": "file"},
        ],
    }
    spec = spec_for(task, secret_keys={"creds": ["TOKEN"]})
    env = env_of(spec)
    assert env["EVENT"] == "/keptn/env/EVENT"
    assert env["NOTE"] == "/keptn/env/NOTE"
    assert env["TOKEN"] == "/keptn/secrets/creds/TOKEN"
    files = {f.path: f.data for f in spec.files}
    assert json.loads(files["env/EVENT"])["id"] == EVENT_ID
    assert files["env/NOTE"] == b"hello"
    pod = job_manifest(spec)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/keptn/secrets/creds"]["readOnly"] is True
    assert {"name": "secret-0", "secret": {"secretName": "creds"}} in pod["volumes"]
    cm = files_configmap(spec)
    assert cm is not None and "hello" in cm["data"].values()
    assert not any("TOKEN" in str(v) for v in cm.get("data", {}).values())  # secrets never in a ConfigMap


@pytest.mark.parametrize(
    ("value", "as_", "expected"),
    [
        ("text", "", "text"),
        (1, "", "1"),
        (1.5, "", "1.5"),
        (123456, "", "123456"),
        (1000000, "", "1e+06"),
        (1234567.0, "", "1.234567e+06"),
        (0.00001, "", "1e-05"),
        (True, "", "true"),
        (None, "", "<nil>"),
        (["a", 2], "", "[a 2]"),
        ({"b": 1, "a": "<x>"}, "", '{"a":"\\u003cx\\u003e","b":1}'),
        (["a", 2], "json", '["a",2]'),
        ({"a": [1, 2]}, "yaml", "a:\n- 1\n- 2\n"),
        ("s", "json", '"s"'),
    ],
)
def test_event_values_are_formatted_as_job_executor_service_did(value: Any, as_: str, expected: str) -> None:
    assert format_event_value(value, as_) == expected


def test_a_missing_event_value_fails_with_the_variable_and_path() -> None:
    with pytest.raises(JobSpecError) as err:
        spec_for(
            {
                "name": "t",
                "image": "a:1",
                "cmd": ["x"],
                "env": [{"name": "IMAGE", "value": "$.data.nope", "valueFrom": "event"}],
            }
        )
    assert "could not add env with name 'IMAGE', value '$.data.nope', valueFrom 'event'" in str(err.value)


def test_user_defined_keptn_variables_are_overridden() -> None:
    spec = spec_for(
        {
            "name": "t",
            "image": "a:1",
            "cmd": ["x"],
            "env": [{"name": "KEPTN_STAGE", "value": "prod", "valueFrom": "string"}],
        }
    )
    assert [e.value for e in spec.env if e.name == "KEPTN_STAGE"] == ["qa"]


# --- $(VAR) expansion ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x-$(A)-$(B)", "x-1-two"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$(A", "$(A"),
        ("cost: $5", "cost: $5"),
        ("$", "$"),
        ("${A} {{A}}", "${A} {{A}}"),
        ("$$", "$"),
    ],
)
def test_placeholders_expand_as_kubernetes_expands_container_args(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}) == expected


def test_placeholders_in_args_stay_for_the_kubelet_and_render_expanded() -> None:
    task = {
        "name": "helm",
        "image": "alpine/helm:3.9.0",
        "cmd": ["helm"],
        "args": [
            "upgrade",
            "-n",
            "$(KEPTN_PROJECT)-$(KEPTN_STAGE)",
            "$(KEPTN_SERVICE)",
            "/keptn/charts/$(KEPTN_SERVICE).tgz",
            "--set",
            "image=$(IMAGE)",
            "$$(IMAGE)",
        ],
        "env": [{"name": "IMAGE", "value": "$.data.image", "valueFrom": "event"}],
    }
    spec = spec_for(task, event(image="img:1; rm -rf /"))
    container = job_manifest(spec)["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][2] == "$(KEPTN_PROJECT)-$(KEPTN_STAGE)"
    rendered = spec.render()["expanded"]["args"]
    assert rendered == [
        "upgrade",
        "-n",
        "fulltour-qa",
        "helloservice",
        "/keptn/charts/helloservice.tgz",
        "--set",
        "image=img:1; rm -rf /",
        "$(IMAGE)",
    ]


def test_env_values_only_see_variables_defined_before_them() -> None:
    task = {
        "name": "t",
        "image": "a:1",
        "cmd": ["echo", "$(B)"],
        "env": [
            {"name": "A", "value": "a", "valueFrom": "string"},
            {"name": "B", "value": "$(A)-$(KEPTN_PROJECT)", "valueFrom": "string"},
        ],
    }
    assert spec_for(task).render()["expanded"]["cmd"] == ["echo", "a-$(KEPTN_PROJECT)"]


# --- files -------------------------------------------------------------------------------------------


LISTING = [
    "helloservice/charts/helloservice.tgz",
    "helloservice/locust/basic.py",
    "helloservice/locust/locust.conf",
    "helloservice/slo.yaml",
    "otherservice/secret.txt",
]


def test_files_are_taken_from_the_service_directory_only() -> None:
    cfg = config([action("a", [".*"], [{"name": "t", "image": "a:1", "files": ["locust", "/slo.yaml"]}])])
    assert file_sources(cfg.actions[0].tasks[0], "helloservice", LISTING) == [
        ("helloservice/locust/basic.py", "locust/basic.py"),
        ("helloservice/locust/locust.conf", "locust/locust.conf"),
        ("helloservice/slo.yaml", "slo.yaml"),
    ]


@pytest.mark.parametrize("entry", ["../otherservice/secret.txt", "/charts/../../otherservice", "./x", "a\\b"])
def test_files_outside_the_service_directory_are_refused_where_they_are_written(entry: str) -> None:
    text = yaml.safe_dump(
        {
            "apiVersion": "v2",
            "actions": [action("a", [".*"], [{"name": "t", "image": "a:1", "files": [entry]}])],
        }
    )
    with pytest.raises(ConfigError) as err:
        load_jobconfig(text, "helloservice/job/config.yaml")
    problem = err.value.problems[0]
    assert problem.file == "helloservice/job/config.yaml" and problem.line is not None
    assert "files" in (problem.field or "")


def test_a_missing_file_names_the_entry_and_the_task() -> None:
    cfg = config(
        [action("a", [".*"], [{"name": "load test", "image": "a:1", "files": ["locust/missing.py"]}])]
    )
    with pytest.raises(
        JobSpecError, match=r"could not find file or directory locust/missing\.py for task load test"
    ):
        file_sources(cfg.actions[0].tasks[0], "helloservice", LISTING)


def test_staged_files_keep_their_bytes_and_too_many_bytes_are_refused() -> None:
    task = {"name": "t", "image": "a:1", "files": ["charts"]}
    chart = bytes(range(256)) * 4
    spec = spec_for(task, files={"helloservice/charts/helloservice.tgz": chart})
    assert [(f.path, f.data) for f in spec.files] == [("charts/helloservice.tgz", chart)]
    with pytest.raises(JobSpecError, match="ConfigMap"):
        spec_for(task, files={"helloservice/charts/helloservice.tgz": b"x" * (MAX_CONFIGMAP_BYTES + 1)})


# --- images, security, resources, names ------------------------------------------------------------------


def test_images_off_the_allow_list_are_refused_before_any_task_runs() -> None:
    cfg = config(
        [
            action(
                "a",
                [".*"],
                [
                    {"name": "ok", "image": "alpine/helm:3.9.0", "cmd": ["helm"]},
                    {"name": "bad", "image": "evil.example/miner:1", "cmd": ["x"]},
                ],
            )
        ]
    )
    defaults = JobDefaults(allowed_images=("docker.io/alpine/*", "locustio/locust:*"))
    with pytest.raises(JobSpecError) as err:
        build_action_specs(
            event=event(),
            matched=MatchedAction(0, cfg.actions[0]),
            defaults=defaults,
            read=lambda _: None,
            listing=[],
        )
    assert (
        str(err.value) == "Forbidden: Image evil.example/miner:1 does not match configured image allowlist.\n"
    )
    assert image_allowed("alpine/helm:3.9.0", defaults.allowed_images)
    assert image_allowed("locustio/locust:2.8.6", defaults.allowed_images)
    assert image_allowed("anything:1", ())
    assert image_allowed("anything:1", ("*",))


def test_privileged_tasks_need_permission() -> None:
    task = {"name": "t", "image": "a:1", "securityContext": {"privileged": True}}
    with pytest.raises(JobSpecError, match="privileged containers are not allowed"):
        spec_for(task)
    spec = spec_for(task, defaults=JobDefaults(allow_privileged=True))
    assert spec.security_context["privileged"] is True
    assert spec.security_context["capabilities"] == {"drop": ["ALL"]}  # the rest of the default stays


def test_resources_default_unless_the_task_says_otherwise() -> None:
    assert spec_for({"name": "t", "image": "a:1"}).resources == {
        "limits": {"cpu": "1", "memory": "512Mi"},
        "requests": {"cpu": "50m", "memory": "128Mi"},
    }
    own = spec_for({"name": "t", "image": "a:1", "resources": {"limits": {"memory": "1Gi"}}})
    assert own.resources == {"limits": {"memory": "1Gi"}}
    with pytest.raises(JobSpecError, match="not a Kubernetes quantity"):
        spec_for({"name": "t", "image": "a:1", "resources": {"limits": {"memory": "lots"}}})


def test_task_settings_and_defaults_reach_the_job() -> None:
    spec = spec_for(
        {
            "name": "t",
            "image": "a:1",
            "namespace": "fulltour-jobs",
            "serviceAccount": "jes-deploy",
            "ttlSecondsAfterFinished": 10,
            "maxPollDuration": 1200,
            "workingDir": "/keptn",
            "annotations": {"team": "delivery"},
        }
    )
    job = job_manifest(spec)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "fulltour-jobs"
    assert pod["serviceAccountName"] == "jes-deploy"
    assert job["spec"]["ttlSecondsAfterFinished"] == 60  # raised to the minimum
    assert job["spec"]["activeDeadlineSeconds"] == 1200
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["workingDir"] == "/keptn"
    assert job["metadata"]["annotations"] == {"team": "delivery"}
    labels = job["metadata"]["labels"]
    assert labels["keptn.sh/project"] == "fulltour" and labels["keptn.sh/stage"] == "qa"
    assert labels["keptn.sh/service"] == "helloservice"
    assert labels["keptn.sh/context"] == "3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10"
    with pytest.raises(JobSpecError, match="namespace 'Bad_NS'"):
        spec_for({"name": "t", "image": "a:1", "namespace": "Bad_NS"})


LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")  # Kubernetes' rule, <= 63


def test_action_and_task_labels_are_sanitised_as_job_executor_service_does() -> None:
    """The input and expected values of JES's TestCreateK8sJobContainsCorrectLabels: runs of
    bad characters become one `_`, ends trimmed; people select on these with `kubectl -l`."""
    task = {"name": "--NameThat's not Compatible with k8s []{}///// a....", "image": "a:1", "cmd": ["ls"]}
    cfg = config([action("Some fancy action name ...", [".*"], [task])])
    spec = build_task_spec(
        event=event(),
        matched=MatchedAction(0, cfg.actions[0]),
        task_index=0,
        defaults=JobDefaults(),
        file_data={},
    )
    labels = job_manifest(spec)["metadata"]["labels"]
    assert labels["keptn.sh/jes-action"] == "Some_fancy_action_name"
    assert labels["keptn.sh/jes-task"] == "NameThat_s_not_Compatible_with_k8s_a"
    assert label_value("some_action") == "some_action" and label_value("task") == "task"
    long = label_value("deploy " * 20)  # cut at 63, then the cut end trimmed
    assert long == ("deploy_" * 9)[:63].rstrip("_") and len(long) <= 63
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), value


def test_job_names_are_deterministic_valid_and_distinct_per_task() -> None:
    assert job_name(EVENT_ID, 0, 0) == "job-executor-service-job-6de83495-4f83-481c-8dbe--000-001"
    assert job_name(EVENT_ID, 2, 1).endswith("-002-002")
    odd = job_name("Event #7 from CI", 0, 0)
    assert odd == job_name("Event #7 from CI", 0, 0)
    assert len(odd) <= 63 and odd.replace("-", "").isalnum() and odd.islower()
    assert job_name("short", 0, 0) != job_name("shorter", 0, 0)


def test_go_durations_in_timeout_messages() -> None:
    assert [go_duration(s) for s in (300, 3, 3600, 90)] == ["5m0s", "3s", "1h0m0s", "1m30s"]


def test_event_names_are_go_regular_expressions_matched_in_linear_time() -> None:
    """JES used Go's RE2: no backreferences, and a hostile pattern cannot backtrack for minutes."""
    import pytest

    from reconciler.formats import goregex
    from reconciler.formats.jobconfig import load_jobconfig
    from reconciler.formats.problems import ConfigError

    assert goregex.search("sh.keptn.event.*.triggered", "sh.keptn.event.je-test.triggered")
    assert not goregex.search("^sh.keptn.event.test", "x.sh.keptn.event.test.triggered")
    # catastrophic for a backtracking engine, instant for RE2
    assert not goregex.search("(a+)+$", "a" * 5000 + "!")
    with pytest.raises(ConfigError) as err:
        load_jobconfig(
            "apiVersion: v2\nactions:\n  - name: a\n    events: [{name: '(a)\\1'}]\n"
            "    tasks: [{name: t, image: x}]\n"
        )
    assert "Go (RE2) regular expression" in str(err.value)
    assert "line 4" in str(err.value) or ":4:" in str(err.value)
