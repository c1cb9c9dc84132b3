"""`reconciler validate`: one broken upstream per check, each named by branch, file, line and field.

Every case starts from the valid `BASE` upstream of tests/support/upstreams.py and
breaks one thing, the way a person editing the files would. Each case runs on a
branch directory tree and on a real git repository made from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.core.validation import validate_served, validate_upstream
from reconciler.upstream.files import DirectoryFiles, GitFiles
from tests.support.upstreams import (
    BASE,
    JOB_CONFIG,
    REMEDIATION,
    SHIPYARD,
    SLI,
    SLO,
    apply,
    build_upstream,
    line_of,
)

Changes = Mapping[str, str | bytes | None]


def run_validate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["validate", *args])
    return result.exit_code, result.output


@dataclass(frozen=True)
class Broken:
    id: str
    changes: Changes
    branch: str
    file: str
    field: str | None
    says: str
    """A fragment of the message: what was expected, or the hint."""
    needle: str | None = None
    """Text on the expected line of the broken file (None: the problem has no line)."""
    occurrence: int = 1

    def expected_line(self) -> int | None:
        if self.needle is None:
            return None
        content = apply(self.changes)[self.branch][self.file]
        return line_of(content, self.needle, self.occurrence)


NOTIFICATIONS = """\
apiVersion: reconciler/v1
kind: Notifications
spec:
  envFrom:
    - name: chatToken
      secretRef: {name: chat, key: token}
  targets:
    - name: chat
      kind: slack
      url: https://hooks.example.com/services/{{.env.chatToken}}
      events: [sequence.finished, evaluation.failed]
    - name: audit
      kind: cloudevents
      url: https://events.example.com/in
      events: [upstream.rejected]
"""

SHIPYARD_EXTRA_TASK = SHIPYARD.replace(
    "            - name: test\n", "            - name: test\n            - name: smoke-test\n"
)

CASES = [
    Broken(
        "stage-without-branch",
        {"production:": None},
        "main",
        "shipyard.yaml",
        "spec.stages[1].name",
        "expected one branch per stage",
        "- name: production",
    ),
    Broken(
        "triggeredOn-unknown-stage",
        {
            "main:shipyard.yaml": SHIPYARD.replace(
                "event: qa.delivery.finished", "event: staging.delivery.finished"
            )
        },
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[0].triggeredOn[0].event",
        "names stage 'staging'",
        "staging.delivery.finished",
    ),
    Broken(
        "triggeredOn-unknown-sequence",
        {"main:shipyard.yaml": SHIPYARD.replace("event: qa.delivery.finished", "event: qa.deliver.finished")},
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[0].triggeredOn[0].event",
        "expected one of: delivery",
        "qa.deliver.finished",
    ),
    Broken(
        "triggeredOn-not-a-finished-event",
        {
            "main:shipyard.yaml": SHIPYARD.replace(
                "event: qa.delivery.finished", "event: qa.delivery.triggered"
            )
        },
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[0].triggeredOn[0].event",
        "expected '<stage>.<sequence>.finished'",
        "qa.delivery.triggered",
    ),
    Broken(
        "selector-value-failed",
        {"main:shipyard.yaml": SHIPYARD.replace("evaluation.result: fail", "evaluation.result: failed")},
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[1].triggeredOn[0].selector.match.evaluation.result",
        "not 'failed'",
        "evaluation.result: failed",
    ),
    Broken(
        "selector-unknown-key",
        {"main:shipyard.yaml": SHIPYARD.replace("evaluation.result: fail", "status: errored")},
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[1].triggeredOn[0].selector.match.status",
        "expected 'result' or '<task>.result'",
        "status: errored",
    ),
    Broken(
        "selector-task-not-in-sequence",
        {"main:shipyard.yaml": SHIPYARD.replace("evaluation.result: fail", "release.result: fail")},
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[1].triggeredOn[0].selector.match.release.result",
        "get-action.result",
        "release.result: fail",
    ),
    Broken(
        "selector-empty-match",
        {
            "main:shipyard.yaml": SHIPYARD.replace(
                "                match:\n                  evaluation.result: fail\n",
                "                match: {}\n",
            )
        },
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[1].triggeredOn[0].selector.match",
        "never fires",
        "match: {}",
    ),
    Broken(
        "slo-unknown-sli",
        {"qa:web/slo.yaml": SLO.replace("sli: throughput", "sli: thruput")},
        "qa",
        "web/slo.yaml",
        "objectives[1].sli",
        "SLI 'thruput' is not defined",
        "sli: thruput",
    ),
    Broken(
        "slo-bad-criteria",
        {"qa:web/slo.yaml": SLO.replace('"<0.5"', '"less than 0.5"')},
        "qa",
        "web/slo.yaml",
        "objectives[0].pass[0].criteria[1]",
        "invalid criteria string",
        "less than 0.5",
    ),
    Broken(
        "slo-bad-warning-criteria",
        {"production:web/slo.yaml": SLO.replace('"<=0.8"', '"<=0.8s"')},
        "production",
        "web/slo.yaml",
        "objectives[0].warning[0].criteria[0]",
        "could not parse criteria target value",
        "<=0.8s",
    ),
    Broken(
        "slo-total-score-pass-missing",
        {"qa:web/slo.yaml": SLO.replace('  pass: "90%"\n', "")},
        "qa",
        "web/slo.yaml",
        "total_score.pass",
        "total_score.pass is missing",
        'warning: "75%"',
    ),
    Broken(
        "slo-total-score-block-missing",
        {"qa:web/slo.yaml": SLO.split("total_score:")[0]},
        "qa",
        "web/slo.yaml",
        "total_score",
        "total_score.pass is missing",
        "spec_version",
    ),
    Broken(
        "slo-warning-above-pass",
        {"qa:web/slo.yaml": SLO.replace('warning: "75%"', 'warning: "95%"')},
        "qa",
        "web/slo.yaml",
        "total_score.warning",
        "expected warning <= pass",
        'warning: "95%"',
    ),
    Broken(
        "task-without-job-action",
        {"main:shipyard.yaml": SHIPYARD_EXTRA_TASK},
        "main",
        "shipyard.yaml",
        "spec.stages[0].sequences[0].tasks[2].name",
        "no action in qa:web/job/config.yaml matches sh.keptn.event.smoke-test.triggered",
        "smoke-test",
    ),
    Broken(
        "task-only-silent-action",
        {
            "qa:web/job/config.yaml": JOB_CONFIG.replace(
                "  - name: load test\n", "  - name: load test\n    silent: true\n"
            )
        },
        "main",
        "shipyard.yaml",
        "spec.stages[0].sequences[0].tasks[1].name",
        "silent actions never send .finished",
        "- name: test",
    ),
    Broken(
        "no-job-config-anywhere",
        {"qa:web/job/config.yaml": None},
        "main",
        "shipyard.yaml",
        "spec.stages[0].sequences[0].tasks[0].name",
        "none of qa:web/job/config.yaml, qa:job/config.yaml, main:job/config.yaml exists",
        "- name: deployment",
    ),
    Broken(
        "files-entry-missing",
        {"qa:web/locust/basic.py": None},
        "qa",
        "web/job/config.yaml",
        "actions[1].tasks[0].files[0]",
        "no file or directory web/locust/basic.py",
        "/locust/basic.py",
    ),
    Broken(
        "files-entry-escapes-service-dir",
        {"production:web/job/config.yaml": JOB_CONFIG.replace("- /locust/basic.py", "- ../qa/web/slo.yaml")},
        "production",
        "web/job/config.yaml",
        "actions[1].tasks[0].files[0]",
        "leaves the service directory",
        "../qa/web/slo.yaml",
    ),
    Broken(
        "remediation-action-not-handled",
        {"production:web/remediation.yaml": REMEDIATION.replace("action: scale", "action: restart")},
        "production",
        "web/remediation.yaml",
        "spec.remediations[0].actionsOnOpen[0].action",
        "remediation action 'restart'",
        "action: restart",
    ),
    Broken(
        "remediation-keys-in-other-case",
        {"production:web/remediation.yaml": REMEDIATION.replace("action: scale", "Action: reboot")},
        "production",
        "web/remediation.yaml",
        "spec.remediations[0].actionsOnOpen[0].Action",
        "remediation action 'reboot'",
        "Action: reboot",
    ),
    Broken(
        "remediation-wrong-apiversion",
        {"production:web/remediation.yaml": REMEDIATION.replace("0.1.4", "0.2.0")},
        "production",
        "web/remediation.yaml",
        "apiVersion",
        "expected exactly 'spec.keptn.sh/0.1.4'",
        "apiVersion",
    ),
    Broken(
        "jobconfig-unknown-key",
        {"qa:web/job/config.yaml": JOB_CONFIG.replace("        cmd: [locust]", "        command: [locust]")},
        "qa",
        "web/job/config.yaml",
        "actions[1].tasks[0].command",
        "unknown field",
        "command: [locust]",
    ),
    Broken(
        "jobconfig-wrong-apiversion",
        {"qa:web/job/config.yaml": JOB_CONFIG.replace("apiVersion: v2", "apiVersion: v1")},
        "qa",
        "web/job/config.yaml",
        "apiVersion",
        "apiVersion v1 is not supported, use v2",
        "apiVersion: v1",
    ),
    Broken(
        "shipyard-old-apiversion",
        {"main:shipyard.yaml": SHIPYARD.replace("spec.keptn.sh/0.2.4", "spec.keptn.sh/0.1.7")},
        "main",
        "shipyard.yaml",
        "apiVersion",
        "expected spec.keptn.sh/0.2.0 to spec.keptn.sh/0.2.4",
        "apiVersion",
    ),
    Broken(
        "shipyard-unknown-apiversion",
        {"main:shipyard.yaml": SHIPYARD.replace("spec.keptn.sh/0.2.4", "spec.keptn.sh/9.9.9")},
        "main",
        "shipyard.yaml",
        "apiVersion",
        "unsupported apiVersion 'spec.keptn.sh/9.9.9'; expected spec.keptn.sh/0.2.0 to spec.keptn.sh/0.2.4",
        "apiVersion",
    ),
    Broken(
        "shipyard-missing",
        {"main:shipyard.yaml": None},
        "main",
        "shipyard.yaml",
        None,
        "file is missing",
        None,
    ),
    Broken(
        "shipyard-bad-duration",
        {"main:shipyard.yaml": SHIPYARD.replace("triggeredAfter: 1m", "triggeredAfter: 1 minute")},
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[1].tasks[2].triggeredAfter",
        "expected <number><unit> pairs",
        "triggeredAfter: 1 minute",
    ),
    Broken(
        "shipyard-duplicate-stage",
        {"main:shipyard.yaml": SHIPYARD.replace("    - name: production\n", "    - name: qa\n")},
        "main",
        "shipyard.yaml",
        "spec.stages",
        "stage 'qa' is defined twice",
        "- name: qa",
    ),
    Broken(
        "shipyard-sequence-without-tasks",
        {
            "main:shipyard.yaml": SHIPYARD.replace(
                "          tasks:\n            - name: get-action\n            - name: action\n"
                "            - name: evaluation\n              triggeredAfter: 1m\n",
                "          tasks: []\n",
            )
        },
        "main",
        "shipyard.yaml",
        "spec.stages[1].sequences[1].tasks",
        "has no tasks",
        "tasks: []",
    ),
    Broken(
        "shipyard-stage-name-upper-case",
        {"main:shipyard.yaml": SHIPYARD.replace("- name: qa\n", "- name: QA\n")},
        "main",
        "shipyard.yaml",
        "spec.stages[0].name",
        "expected a lower-case letter",
        "- name: QA",
    ),
    Broken(
        "sli-query-not-a-string",
        {"main:prometheus/sli.yaml": SLI + "  error_count: 5\n"},
        "main",
        "prometheus/sli.yaml",
        "indicators",
        "must be a query string",
        "response_time:",
    ),
    Broken(
        "notifications-undeclared-secret",
        {"main:notifications.yaml": NOTIFICATIONS.replace("{{.env.chatToken}}", "{{.env.chatTokn}}")},
        "main",
        "notifications.yaml",
        "spec.targets[0].url",
        "secret .env.chatTokn is not declared in envFrom",
        "url: https://hooks.example.com",
    ),
    Broken(
        "notifications-unparsable-url",
        {
            "main:notifications.yaml": NOTIFICATIONS.replace(
                "https://events.example.com/in", "https://[::1/in"
            )
        },
        "main",
        "notifications.yaml",
        "spec.targets[1].url",
        "cannot be parsed",
        "url: https://[::1/in",
    ),
    Broken(
        "notifications-unknown-event-kind",
        {
            "main:notifications.yaml": NOTIFICATIONS.replace(
                "events: [upstream.rejected]", "events: [upstream.refused]"
            )
        },
        "main",
        "notifications.yaml",
        "spec.targets[1].events[0]",
        "upstream.rejected",
        "events: [upstream.refused]",
    ),
    Broken(
        "main-branch-missing",
        {"main:": None},
        "main",
        "shipyard.yaml",
        None,
        "branch 'main' does not exist",
        None,
    ),
]


@pytest.fixture(params=["dir", "git"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def broken(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> tuple[Broken, Path]:
    case: Broken = request.param
    return case, build_upstream(tmp_path, case.changes, kind=kind)


def test_cases_are_distinct_checks() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 20
    assert len({(c.file, c.field, c.says) for c in CASES}) == len(CASES)


@pytest.mark.timeout(1, func_only=True)
def test_broken_upstream_is_reported_at_branch_file_line_and_field(broken: tuple[Broken, Path]) -> None:
    case, path = broken
    code, out = run_validate(str(path), "--output", "json")
    assert code == 1, out
    report = json.loads(out)
    assert report["valid"] is False
    hits = [
        p
        for p in report["problems"]
        if p["branch"] == case.branch
        and p["file"] == case.file
        and p["field"] == case.field
        and case.says in p["message"]
    ]
    assert hits, json.dumps(report["problems"], indent=1)
    assert hits[0]["line"] == case.expected_line(), hits[0]
    if case.needle is not None:
        assert hits[0]["column"] >= 1


def test_text_report_names_branch_file_line_column_and_field(tmp_path: Path) -> None:
    slo = SLO.replace("sli: throughput", "sli: thruput")
    path = build_upstream(tmp_path, {"qa:web/slo.yaml": slo})
    code, out = run_validate(str(path))
    assert code == 1
    line = line_of(slo, "sli: thruput")
    assert f"qa:web/slo.yaml:{line}:10: objectives[1].sli: SLI 'thruput' is not defined" in out
    assert "INVALID: 1 error" in out


@pytest.mark.parametrize("kind_", ["dir", "git"])
def test_valid_upstream_exits_zero(tmp_path: Path, kind_: str) -> None:
    path = build_upstream(tmp_path, kind=kind_)
    code, out = run_validate(str(path))
    assert code == 0, out
    assert "valid: 0 errors" in out


def test_json_report_of_valid_upstream_lists_branches_and_project(tmp_path: Path) -> None:
    path = build_upstream(tmp_path, kind="git")
    code, out = run_validate(str(path), "-o", "json")
    assert code == 0
    report = json.loads(out)
    assert report["valid"] is True and report["problems"] == []
    assert report["project"] == "shop"
    assert set(report["branches"]) == {"main", "qa", "production"}
    assert all(len(sha) == 40 for sha in report["branches"].values())


def test_every_mistake_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = build_upstream(
        tmp_path,
        {
            "qa:web/slo.yaml": SLO.replace("sli: throughput", "sli: thruput"),
            "main:shipyard.yaml": SHIPYARD.replace("evaluation.result: fail", "evaluation.result: failed"),
            "production:web/locust/basic.py": None,
        },
    )
    report = json.loads(run_validate(str(path), "-o", "json")[1])
    where = [(p["branch"], p["file"]) for p in report["problems"]]
    assert where == [("main", "shipyard.yaml"), ("qa", "web/slo.yaml"), ("production", "web/job/config.yaml")]
    assert report["errors"] == 3


# --- what counts as handled: lookup order, built-ins, jsonpath ---------------------------------------


def test_stage_level_job_config_serves_a_service_without_its_own(tmp_path: Path) -> None:
    path = build_upstream(tmp_path, {"qa:web/job/config.yaml": None, "qa:job/config.yaml": JOB_CONFIG})
    code, out = run_validate(str(path))
    assert code == 0, out


def test_project_level_job_config_on_main_serves_every_stage(tmp_path: Path) -> None:
    path = build_upstream(
        tmp_path,
        {
            "qa:web/job/config.yaml": None,
            "production:web/job/config.yaml": None,
            "main:job/config.yaml": JOB_CONFIG,
        },
    )
    code, out = run_validate(str(path))
    assert code == 0, out


def test_project_level_job_config_files_are_checked_per_service(tmp_path: Path) -> None:
    path = build_upstream(
        tmp_path,
        {
            "qa:web/job/config.yaml": None,
            "production:web/job/config.yaml": None,
            "main:job/config.yaml": JOB_CONFIG,
            "production:web/charts/web.tgz": None,
        },
    )
    report = json.loads(run_validate(str(path), "-o", "json")[1])
    problems = [(p["branch"], p["file"], p["field"]) for p in report["problems"]]
    assert ("main", "job/config.yaml", "actions[0].tasks[0].files[0]") in problems
    messages = [p["message"] for p in report["problems"]]
    assert all("branch 'production'" in m for m in messages), messages


def test_service_job_config_wins_over_stage_level_one(tmp_path: Path) -> None:
    """Lookup stops at the first file found (spec 6.1): a stage config cannot rescue a service's gap."""
    partial = JOB_CONFIG.replace("sh.keptn.event.test.triggered", "sh.keptn.event.other.triggered")
    path = build_upstream(tmp_path, {"qa:web/job/config.yaml": partial, "qa:job/config.yaml": JOB_CONFIG})
    report = json.loads(run_validate(str(path), "-o", "json")[1])
    assert [p["field"] for p in report["problems"]] == ["spec.stages[0].sequences[0].tasks[1].name"]


def test_builtin_tasks_need_no_job_action(tmp_path: Path) -> None:
    only_custom = JOB_CONFIG  # has no action for approval, evaluation or get-action
    assert "approval" not in only_custom and "get-action" not in only_custom
    code, out = run_validate(str(build_upstream(tmp_path)))
    assert code == 0, out


def test_builtin_slis_count_as_defined(tmp_path: Path) -> None:
    slo = SLO.replace("sli: throughput", "sli: response_time_p95")
    code, out = run_validate(str(build_upstream(tmp_path, {"qa:web/slo.yaml": slo})))
    assert code == 0, out


def test_slis_merge_project_stage_and_service_levels(tmp_path: Path) -> None:
    slo = SLO.replace("sli: throughput", "sli: queue_depth")
    stage_sli = 'indicators:\n  queue_depth: max(queue_depth{stage="$STAGE"})\n'
    bad = build_upstream(tmp_path / "a", {"qa:web/slo.yaml": slo})
    assert run_validate(str(bad))[0] == 1
    on_stage = build_upstream(tmp_path / "b", {"qa:web/slo.yaml": slo, "qa:prometheus/sli.yaml": stage_sli})
    assert run_validate(str(on_stage))[0] == 0
    on_service = build_upstream(
        tmp_path / "c", {"qa:web/slo.yaml": slo, "qa:web/prometheus/sli.yaml": stage_sli}
    )
    assert run_validate(str(on_service))[0] == 0


def test_jsonpath_condition_does_not_hide_a_task_handler(tmp_path: Path) -> None:
    """A task's data is only known at run time: an action whose event name matches counts."""
    conditioned = JOB_CONFIG.replace(
        "      - name: sh.keptn.event.test.triggered\n",
        "      - name: sh.keptn.event.test.triggered\n        jsonpath:\n"
        "          property: $.data.test.teststrategy\n          match: performance\n",
    )
    code, out = run_validate(str(build_upstream(tmp_path, {"qa:web/job/config.yaml": conditioned})))
    assert code == 0, out


def test_regex_event_names_handle_tasks_like_job_executor(tmp_path: Path) -> None:
    wildcard = JOB_CONFIG.replace("sh.keptn.event.release.triggered", "sh.keptn.event.*.triggered")
    extra = SHIPYARD.replace(
        "            - name: release\n", "            - name: release\n            - name: notify\n"
    )
    path = build_upstream(tmp_path, {"main:shipyard.yaml": extra, "production:web/job/config.yaml": wildcard})
    code, out = run_validate(str(path))
    assert code == 0, out


def test_empty_slo_means_no_slo_configured(tmp_path: Path) -> None:
    code, out = run_validate(str(build_upstream(tmp_path, {"qa:web/slo.yaml": "\n"})))
    assert code == 0, out


def test_files_entry_naming_a_directory_counts(tmp_path: Path) -> None:
    with_dir = JOB_CONFIG.replace("- /locust/basic.py", "- locust")
    code, out = run_validate(str(build_upstream(tmp_path, {"qa:web/job/config.yaml": with_dir})))
    assert code == 0, out


def test_files_entry_must_not_match_a_longer_name(tmp_path: Path) -> None:
    prefix = JOB_CONFIG.replace("- /locust/basic.py", "- locust/bas")
    report = json.loads(
        run_validate(str(build_upstream(tmp_path, {"qa:web/job/config.yaml": prefix})), "-o", "json")[1]
    )
    assert [p["field"] for p in report["problems"]] == ["actions[1].tasks[0].files[0]"]


def test_branches_that_are_not_stages_are_ignored(tmp_path: Path) -> None:
    path = build_upstream(
        tmp_path, {"reconciler-ledger:events/x.json": "{}", "feature-x:web/slo.yaml": "[broken"}
    )
    code, out = run_validate(str(path))
    assert code == 0, out


def test_odd_top_level_directory_is_a_warning_not_a_service(tmp_path: Path) -> None:
    code, out = run_validate(str(build_upstream(tmp_path, {"qa:Docs/notes.md": "# notes"})))
    assert code == 0
    assert "qa:Docs/: directory 'Docs' is not a valid service name" in out and "(warning)" in out


def test_main_branch_can_be_named_otherwise(tmp_path: Path) -> None:
    tree = build_upstream(tmp_path, {**{f"master:{p}": v for p, v in BASE["main"].items()}, "main:": None})
    assert run_validate(str(tree))[0] == 1
    code, out = run_validate(str(tree), "--main-branch", "master")
    assert code == 0, out


# --- unusable input: exit 2 ---------------------------------------------------------------------------


def test_missing_path_is_unusable(tmp_path: Path) -> None:
    code, out = run_validate(str(tmp_path / "nope"))
    assert code == 2
    assert "does not exist" in out


def test_a_file_is_unusable(tmp_path: Path) -> None:
    f = tmp_path / "shipyard.yaml"
    f.write_text(SHIPYARD)
    code, out = run_validate(str(f))
    assert code == 2
    assert "is a file" in out


def test_a_single_branch_directory_is_unusable_with_a_hint(tmp_path: Path) -> None:
    main = build_upstream(tmp_path) / "main"
    code, out = run_validate(str(main))
    assert code == 2
    assert "pass its parent" in out


def test_unreachable_url_is_unusable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = run_validate(f"git://127.0.0.1:{port}/project.git")
    assert code == 2
    assert "cannot read" in out


def test_token_in_url_never_reaches_the_output(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = run_validate(f"http://sekret-token-123@127.0.0.1:{port}/project.git", "-o", "json")
    assert code == 2
    assert "sekret-token-123" not in out


def test_remote_upstream_served_by_git_daemon_is_fetched_and_validated(
    tmp_path: Path, git_daemon: object, upstream_repo: object
) -> None:
    from tests.support.gitserver import GitDaemon, UpstreamRepo

    assert isinstance(git_daemon, GitDaemon) and isinstance(upstream_repo, UpstreamRepo)
    for branch, files in apply({}).items():
        upstream_repo.commit(branch, files, "import")
    code, out = run_validate(git_daemon.url("project.git"))
    assert code == 0, out
    assert "branches checked: main, qa, production" in out


def test_private_http_upstream_needs_its_token_and_never_shows_it(
    upstream_repo: object, git_http_factory: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.gitserver import SmartHttp, UpstreamRepo

    assert isinstance(upstream_repo, UpstreamRepo)
    for branch, files in apply({}).items():
        upstream_repo.commit(branch, files, "import")
    server = git_http_factory(token="tok-4f9a2c")
    assert isinstance(server, SmartHttp)
    url = server.url("project.git")
    monkeypatch.setenv("RECONCILER_UPSTREAM_TOKEN", "wrong-7d1e")
    code, out = run_validate(url)
    assert code == 2, out
    assert "wrong-7d1e" not in out
    monkeypatch.setenv("RECONCILER_UPSTREAM_TOKEN", "tok-4f9a2c")
    code, out = run_validate(url, "-o", "json")
    assert code == 0, out
    assert "tok-4f9a2c" not in out
    monkeypatch.delenv("RECONCILER_UPSTREAM_TOKEN")
    code, out = run_validate(url.replace("http://", "http://tok-4f9a2c@"))
    assert code == 0, out
    assert "tok-4f9a2c" not in out


# --- the result as the snapshot loader uses it ----------------------------------------------------------


def test_result_carries_the_parsed_configuration(tmp_path: Path) -> None:
    result = validate_upstream(GitFiles(build_upstream(tmp_path, kind="git")))
    config = result.config
    assert result.ok
    assert config.project == "shop"
    assert config.shipyard is not None and config.shipyard.stage_names == ["qa", "production"]
    ref = config.job_config("production", "web")
    assert ref is not None and ref.where() == "production:web/job/config.yaml"
    assert set(config.indicators("qa", "web")) == {"response_time"}
    web = config.service("production", "web")
    assert web is not None and web.remediation is not None and web.slo is not None
    assert "charts/web.tgz" in web.files
    assert config.revisions["qa"] == GitFiles(build_upstream(tmp_path / "again", kind="git")).branches()["qa"]


def test_unchanged_files_are_not_parsed_again(tmp_path: Path) -> None:
    first_tree = build_upstream(tmp_path / "a")
    first = validate_upstream(DirectoryFiles(first_tree))
    second_tree = build_upstream(tmp_path / "b", {"qa:web/slo.yaml": SLO.replace("90%", "91%")})
    second = validate_upstream(DirectoryFiles(second_tree), previous=first)
    assert second.ok
    assert second.config.shipyard is first.config.shipyard
    assert second.config.service("production", "web").slo is first.config.service("production", "web").slo  # type: ignore[union-attr]
    assert second.config.service("qa", "web").slo is not first.config.service("qa", "web").slo  # type: ignore[union-attr]


def test_problems_from_a_reused_parse_are_reported_again(tmp_path: Path) -> None:
    tree = build_upstream(tmp_path, {"qa:web/slo.yaml": "objectives: [\n"})
    first = validate_upstream(DirectoryFiles(tree))
    again = validate_upstream(DirectoryFiles(tree), previous=first)
    assert [str(p) for p in again.problems] == [str(p) for p in first.problems] != []


def test_a_valid_notifications_file_is_accepted_and_served(tmp_path: Path) -> None:
    path = build_upstream(tmp_path, {"main:notifications.yaml": NOTIFICATIONS})
    code, out = run_validate(str(path))
    assert code == 0, out
    config = validate_upstream(DirectoryFiles(path)).config
    assert config.notifications is not None
    assert [t.name for t in config.notifications.targets] == ["chat", "audit"]


def test_incremental_validation_finds_exactly_what_a_fresh_one_finds(tmp_path: Path) -> None:
    """Each version of an upstream validated with the previous version's result gives the
    same problems and the same config as validating it from scratch, whichever file changed:
    a service's own file, the project's SLIs, the shipyard, a stage-level job config or webhook
    (what unchanged services depend on); and services whose inputs did not change are reused."""
    api_slo = SLO.replace("response_time", "error_rate")
    hook = (
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nmetadata:\n  name: scan\n"
        "spec:\n  webhooks:\n    - type: sh.keptn.event.scan.triggered\n      requests:\n"
        "        - url: https://scanner.example.com/scan\n          method: POST\n"
    )
    with_api = {"qa:api/slo.yaml": api_slo, "qa:job/config.yaml": JOB_CONFIG}
    versions: list[dict[str, str | bytes | None]] = [
        {},
        with_api,
        {**with_api, "qa:web/slo.yaml": SLO.replace("response_time", "no_such_sli")},
        {**with_api, "main:prometheus/sli.yaml": "spec:\n  indicators: {}\n"},
        {
            **with_api,
            "main:shipyard.yaml": SHIPYARD.replace(
                "- name: test\n", "- name: test\n            - name: scan\n", 1
            ),
        },
        {
            **with_api,
            "main:shipyard.yaml": SHIPYARD.replace(
                "- name: test\n", "- name: test\n            - name: scan\n", 1
            ),
            "qa:webhook/webhook.yaml": hook,
        },
        {
            **with_api,
            "qa:job/config.yaml": JOB_CONFIG.replace(
                "sh.keptn.event.test.triggered", "sh.keptn.event.other.triggered"
            ),
        },
        {},
    ]
    previous = None
    seen_problems: set[str] = set()
    for n, changes in enumerate(versions):
        files = GitFiles(build_upstream(tmp_path / str(n), changes, kind="git"))
        fresh = validate_served(files, "main", None)
        incremental = validate_served(files, "main", previous)
        assert [str(p) for p in incremental.problems] == [str(p) for p in fresh.problems], f"version {n}"
        assert incremental.config == fresh.config, f"version {n}"
        if n in (1, 2, 7):  # only qa changed since the previous version: production's web is reused
            assert previous is not None
            reused = previous.config.service("production", "web")
            assert incremental.config.service("production", "web") is reused, f"version {n}"
        seen_problems |= {str(p) for p in fresh.errors}
        previous = incremental
    assert any("no_such_sli" in p for p in seen_problems)  # the versions do break things
    assert any("scan" in p for p in seen_problems)
    assert any("sh.keptn.event.test.triggered" in p for p in seen_problems)


def test_a_change_every_service_depends_on_rechecks_them_without_parsing_their_files_again(
    tmp_path: Path,
) -> None:
    """The project's SLIs changed: every service is checked again against them, but its own
    files did not change, so their parses (carried by the checked service, not kept twice)
    serve again; and the result is what a fresh validation finds, problems included."""
    broken = SLO.replace("response_time", "no_such_sli")
    first = validate_served(
        GitFiles(build_upstream(tmp_path / "a", {"qa:web/slo.yaml": broken}, kind="git")), "main", None
    )
    changed = {"qa:web/slo.yaml": broken, "main:prometheus/sli.yaml": "spec:\n  indicators: {}\n"}
    files = GitFiles(build_upstream(tmp_path / "b", changed, kind="git"))
    again = validate_served(files, "main", first)
    fresh = validate_served(files, "main", None)
    assert [str(p) for p in again.problems] == [str(p) for p in fresh.problems] != []
    assert again.config == fresh.config
    for stage in ("qa", "production"):
        before, after = first.config.service(stage, "web"), again.config.service(stage, "web")
        assert before is not None and after is not None and after is not before  # checked again
        assert after.jobconfig is before.jobconfig is not None  # its file was not parsed again
    assert any(p.file == "web/slo.yaml" and p.line for p in again.errors)  # located, as fresh


def test_services_with_identical_files_each_get_their_own_located_problems(tmp_path: Path) -> None:
    """Identical files are parsed once and share a model; a problem found in one still names
    each service's own file and line."""
    broken = SLO.replace("response_time", "no_such_sli")
    repo = build_upstream(tmp_path, {"qa:web/slo.yaml": broken, "qa:api/slo.yaml": broken}, kind="git")
    result = validate_served(GitFiles(repo), "main", None)
    located = sorted((p.file, p.line) for p in result.errors if "no_such_sli" in p.message)
    line = line_of(broken, "no_such_sli")
    assert located == [("api/slo.yaml", line), ("web/slo.yaml", line)]
    web, api = result.config.service("qa", "web"), result.config.service("qa", "api")
    assert web is not None and api is not None and web.slo is api.slo  # one parse, one model
