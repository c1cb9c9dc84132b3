"""Webhook tasks in the whole reconciler: a delivery whose task a webhook.yaml answers passes or fails as
the receiver decides, a receiver answers `.finished` later through the HTTP API (`sendFinished: false`)
or not at all (the run deadline ends the task), and a failing webhook shows in status and metrics."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from reconciler.app import App
from reconciler.formats.events import KeptnEvent
from tests.support.gitserver import UpstreamRepo
from tests.support.receivers import Answer, receiving
from tests.support.running import running_apps
from tests.support.shop import deploy, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

API_TOKEN = "api-tok-webhook-tasks"
SECRET = "ci-secret-3f7a90d1"
FINISHED = "sh.keptn.event.qa.delivery.finished"


def webhook_yaml(url: str, *, send_finished: bool = True) -> str:
    return (
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nspec:\n  webhooks:\n"
        "    - type: sh.keptn.event.e2e-test.triggered\n"
        f"      sendFinished: {'true' if send_finished else 'false'}\n"
        "      envFrom:\n        - name: token\n          secretRef: {name: ci, key: token}\n"
        "      requests:\n"
        f"        - url: {url}/e2e/{{{{.data.service}}}}\n          method: POST\n"
        '          headers:\n            - {key: Authorization, value: "Bearer {{.env.token}}"}\n'
        '          payload: \'{"triggeredid": "{{.id}}", "context": "{{.shkeptncontext}}", '
        '"image": "{{.data.configurationChange.values.image}}"}\'\n'
    )


def seed(
    repo: UpstreamRepo, url: str, *, send_finished: bool = True, run_deadline: str | None = None
) -> None:
    e2e = task("e2e-test") + (f"              runDeadline: {run_deadline}\n" if run_deadline else "")
    yard = shipyard(stage("qa", sequence("delivery", e2e)))
    seed_shop(repo, yard, files={"web/webhook/webhook.yaml": webhook_yaml(url, send_finished=send_finished)})


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[[UpstreamRepo], App]]:
    def secrets(data: Path) -> None:
        (data / "secrets" / "ci").mkdir(parents=True, exist_ok=True)
        (data / "secrets" / "ci" / "token").write_text(SECRET)

    yield from running_apps(
        tmp_path / "data",
        serve_api=True,
        prepare=secrets,
        api_listen="127.0.0.1:0",
        api_token=SecretStr(API_TOKEN),
        webhook_allow_hosts=["127.0.0.1"],
        webhook_timeout=2.0,
        webhook_max_attempts=2,
    )


def events(app: App, type_: str) -> list[KeptnEvent]:
    app.ledger.refresh()
    return [e for e in app.ledger.events() if e.type == type_]


def delivered(app: App) -> KeptnEvent:
    found = wait_for(lambda: events(app, FINISHED), what="the qa delivery to finish")
    return found[0]


def test_a_webhook_task_passes_when_the_receiver_answers_2xx(
    start_app: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo
) -> None:
    with receiving(Answer(200, b"queued")) as receiver:
        seed(upstream_repo, receiver.url)
        app = start_app(upstream_repo)
        deploy(upstream_repo, "2.0")
        done = delivered(app)
        [seen] = receiver.seen
    assert done.result == "pass", done.data
    assert seen.path == "/e2e/web" and seen.header("Authorization") == f"Bearer {SECRET}"
    body = json.loads(seen.body)
    [trigger] = events(app, "sh.keptn.event.e2e-test.triggered")
    assert body == {"triggeredid": trigger.id, "context": trigger.shkeptncontext, "image": "web:2.0"}
    assert seen.header("Idempotency-Key")
    [answer] = events(app, "sh.keptn.event.e2e-test.finished")
    assert answer.source == "webhook-service" and answer.result == "pass"
    assert [e.type for e in app.ledger.events() if e.triggeredid == trigger.id] == [
        "sh.keptn.event.e2e-test.started",
        "reconciler.webhook.attempt",
        "reconciler.webhook.answer",
        "sh.keptn.event.e2e-test.finished",
    ]
    metrics = app.metrics.render()[0].decode()
    assert 'reconciler_webhook_requests_total{result="success"} 1.0' in metrics


def test_a_webhook_task_fails_when_the_receiver_fails_and_status_shows_it(
    start_app: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo
) -> None:
    with receiving(Answer(502, b"upstream CI is down")) as receiver:
        seed(upstream_repo, receiver.url)
        app = start_app(upstream_repo)
        deploy(upstream_repo, "2.0")
        done = delivered(app)
        assert len(receiver.seen) == 2  # retried once (webhook_max_attempts: 2), then given up
    assert done.result == "fail"
    [answer] = events(app, "sh.keptn.event.e2e-test.finished")
    assert answer.data["reconciler"]["reason"] == "WebhookFailed"
    assert "HTTP 502 after 2 attempts" in answer.data["message"]
    assert "upstream CI is down" in answer.data["message"]
    problems = app.status()["problems"]
    [part] = [name for name in problems if name.startswith("webhook ")]
    assert "HTTP 502" in problems[part]["message"] and "e2e-test" in problems[part]["message"]
    metrics = app.metrics.render()[0].decode()
    assert 'reconciler_webhook_requests_total{result="failure"} 1.0' in metrics
    assert 'reconciler_webhook_requests_total{result="retried"} 1.0' in metrics
    assert "127.0.0.1" not in "\n".join(line for line in metrics.splitlines() if "webhook" in line)


def test_the_receiver_answers_finished_later_through_the_api(
    start_app: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo
) -> None:
    with receiving(Answer(202, b"")) as receiver:
        seed(upstream_repo, receiver.url, send_finished=False)
        app = start_app(upstream_repo)
        deploy(upstream_repo, "2.0")
        wait_for(lambda: receiver.seen, what="the webhook request")
        started = wait_for(lambda: events(app, "sh.keptn.event.e2e-test.started"), what=".started")
        assert events(app, FINISHED) == []
        body = json.loads(receiver.seen[0].body)
    assert started[0].source == "webhook-service"
    # later, the remote tool reports its verdict to the reconciler's API
    assert app.api is not None
    answer = {
        "type": "sh.keptn.event.e2e-test.finished",
        "source": "e2e-runner",
        "shkeptncontext": body["context"],
        "triggeredid": body["triggeredid"],
        "data": {
            "project": "shop",
            "stage": "qa",
            "service": "web",
            "status": "succeeded",
            "result": "warning",
        },
    }
    posted = httpx.post(f"{app.api.url}/v1/event", json=answer, headers={"x-token": API_TOKEN}, timeout=10)
    assert posted.status_code < 300, posted.text
    done = delivered(app)
    assert done.result == "warning"
    assert [e.source for e in events(app, "sh.keptn.event.e2e-test.finished")] == ["e2e-runner"]


def test_a_receiver_that_never_answers_is_ended_by_the_run_deadline(
    start_app: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo
) -> None:
    with receiving(Answer(202, b"")) as receiver:
        seed(upstream_repo, receiver.url, send_finished=False, run_deadline="3s")
        app = start_app(upstream_repo)
        deploy(upstream_repo, "2.0")
        done = delivered(app)
        assert len(receiver.seen) == 1
    assert done.result == "fail"
    [verdict] = events(app, "sh.keptn.event.e2e-test.finished")
    assert verdict.data["reconciler"]["reason"] == "RunDeadlineExceeded"
    assert "still running: webhook-service" in verdict.data["message"]


def test_a_refused_destination_fails_the_task_saying_why(
    start_app: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo
) -> None:
    seed(upstream_repo, "http://169.254.169.254")
    app = start_app(upstream_repo)
    deploy(upstream_repo, "2.0")
    assert delivered(app).result == "fail"
    [answer] = events(app, "sh.keptn.event.e2e-test.finished")
    assert answer.data["reconciler"]["reason"] == "WebhookRefused"
    assert "169.254.169.254 is a cloud metadata endpoint" in answer.data["message"]
    assert events(app, "reconciler.webhook.attempt") == []  # nothing was sent


def test_an_upstream_whose_task_no_webhook_answers_is_rejected_naming_the_webhook_files(
    start_app: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo
) -> None:
    hook = webhook_yaml("https://ci.example.com").replace("e2e-test.triggered", "smoke-test.triggered")
    yard = shipyard(stage("qa", sequence("delivery", task("e2e-test"))))
    seed_shop(upstream_repo, yard, files={"web/webhook/webhook.yaml": hook})
    app = start_app(upstream_repo)
    rejected = wait_for(lambda: app.status()["upstream"]["rejected"].get("main"), what="main rejected")
    [problem] = rejected["problems"]
    assert "task 'e2e-test' of sequence qa.delivery for service 'web' has no executor" in problem
    assert "no webhook in qa:web/webhook/webhook.yaml" in problem
    assert events(app, "sh.keptn.event.qa.delivery.triggered") == []
