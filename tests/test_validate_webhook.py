"""`reconciler validate` and webhook files: webhooks count as task executors at the three levels,
and a broken webhook.yaml is a located error (branch, file, line) like any other file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from reconciler.cli import cli
from tests.support.upstreams import JOB_CONFIG, build_upstream, line_of

NO_RELEASE = JOB_CONFIG.replace("sh.keptn.event.release.triggered", "sh.keptn.event.other.triggered")
RELEASE_FIELD = "spec.stages[1].sequences[0].tasks[2].name"


def hook(
    type_: str = "sh.keptn.event.release.triggered",
    url: str = "https://ci.example.com/release/{{.data.service}}",
    header: str = "Bearer {{.env.token}}",
) -> str:
    return (
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nspec:\n  webhooks:\n"
        f"    - type: {type_}\n      sendFinished: true\n"
        "      envFrom:\n        - name: token\n          secretRef: {name: ci, key: token}\n"
        f"      requests:\n        - url: {url}\n          method: POST\n"
        f'          headers:\n            - {{key: Authorization, value: "{header}"}}\n'
    )


def report(path: Path) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["validate", str(path), "-o", "json"])
    return result.exit_code, json.loads(result.output)


def errors(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["problems"] if p.get("severity", "error") == "error"]


def test_a_task_without_a_job_action_is_answered_by_a_webhook_at_each_level(tmp_path: Path) -> None:
    for i, key in enumerate(
        (
            "production:web/webhook/webhook.yaml",
            "production:webhook/webhook.yaml",
            "main:webhook/webhook.yaml",
        )
    ):
        changes = {
            "qa:web/job/config.yaml": NO_RELEASE,
            "production:web/job/config.yaml": NO_RELEASE,
            key: hook(),
        }
        code, doc = report(build_upstream(tmp_path / str(i), changes))
        assert code == 0, (key, doc["problems"])


def test_without_the_webhook_the_task_is_not_handled(tmp_path: Path) -> None:
    changes = {"production:web/job/config.yaml": NO_RELEASE}
    code, doc = report(build_upstream(tmp_path, changes))
    assert code == 1
    assert [p["field"] for p in errors(doc)] == [RELEASE_FIELD]


def test_a_task_with_no_job_config_and_no_webhook_names_both_places(tmp_path: Path) -> None:
    changes = {
        "production:web/job/config.yaml": None,
        "production:web/webhook/webhook.yaml": hook("sh.keptn.event.deployment.triggered"),
    }
    code, doc = report(build_upstream(tmp_path, changes))
    assert code == 1
    [release] = [p for p in errors(doc) if p["field"] == RELEASE_FIELD]
    assert "has no executor" in release["message"]
    assert "production:web/webhook/webhook.yaml" in release["message"]
    assert "sh.keptn.event.release.triggered" in release["message"]


def test_a_notification_webhook_is_not_an_executor(tmp_path: Path) -> None:
    changes = {
        "production:web/job/config.yaml": NO_RELEASE,
        "production:web/webhook/webhook.yaml": hook("sh.keptn.event.release.>"),
    }
    code, doc = report(build_upstream(tmp_path, changes))
    assert code == 1 and [p["field"] for p in errors(doc)] == [RELEASE_FIELD]


def test_broken_webhook_files_are_located_errors(tmp_path: Path) -> None:
    cases = {
        "unknown field": (hook(url="https://ci.example.com/{{.Data.service}}"), "{{.Data.service}}"),
        "undeclared secret": (hook(header="Bearer {{.env.nope}}"), "{{.env.nope}}"),
        "unparsable URL": (hook(url="https://ci.example.com:99999/x"), "99999"),
        "host from event data": (
            hook(url="https://{{.data.service}}.example.com/x"),
            "{{.data.service}}.example",
        ),
    }
    for i, (name, (text, needle)) in enumerate(cases.items()):
        changes = {"production:web/job/config.yaml": NO_RELEASE, "production:web/webhook/webhook.yaml": text}
        code, doc = report(build_upstream(tmp_path / str(i), changes))
        assert code == 1, name
        found = [p for p in errors(doc) if p["file"] == "web/webhook/webhook.yaml"]
        assert found, (name, doc["problems"])
        assert found[0]["branch"] == "production", name
        assert found[0]["line"] == line_of(text, needle), (name, found[0])
        # the broken file's own error is enough: no second "no executor" error for its task
        assert all(p["field"] != RELEASE_FIELD for p in errors(doc)), (name, doc["problems"])


def test_validate_reads_webhook_files_from_git(tmp_path: Path) -> None:
    changes = {"production:web/job/config.yaml": NO_RELEASE, "production:web/webhook/webhook.yaml": hook()}
    code, doc = report(build_upstream(tmp_path, changes, kind="git"))
    assert code == 0, doc["problems"]
