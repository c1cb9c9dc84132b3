"""Rendering webhook requests: what is sent is exactly what the file says, and event data cannot bend it."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.cli import cli
from reconciler.core.webhookrender import (
    RenderedRequest,
    WebhookRenderError,
    render_webhook,
    select_webhooks,
)
from reconciler.formats.events import KeptnEvent
from reconciler.formats.webhook import SecretRef, WebhookConfig, load_webhook_config
from tests.support.events import now_text

DATA = Path(__file__).parent / "data" / "webhooks"
SECRET = "xoxb-S3CRET-41f0c2b9e7"


def event(type_: str = "sh.keptn.event.mytask.triggered", **data: Any) -> KeptnEvent:
    base = {"project": "fulltour", "stage": "qa", "service": "helloservice"}
    return KeptnEvent(
        id="7e1c9a02-5d4b-4c3a-8f7e-6d5c4b3a2910",
        source="shipyard-controller",
        type=type_,
        shkeptncontext="5b3c8a1e-0d4f-4c55-9c7e-2f9a3c1d7e11",
        data={**base, **data},
        time=now_text(),
    )


def secrets(env_name: str, ref: SecretRef) -> str | None:
    return {"token": SECRET}.get(env_name)


def config(requests: str, *, type_: str = "sh.keptn.event.mytask.triggered") -> WebhookConfig:
    return load_webhook_config(
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nspec:\n  webhooks:\n"
        f"    - type: {type_}\n      sendFinished: true\n"
        "      envFrom:\n        - name: token\n          secretRef: {name: my-secret, key: token}\n"
        f"      requests:\n{requests}",
        "webhook/webhook.yaml",
    )


def one(requests: str, ev: KeptnEvent | None = None) -> RenderedRequest:
    hook = config(requests).webhooks[0]
    return render_webhook(hook, ev or event(), secrets)[0]


def header(request: RenderedRequest, name: str) -> str | None:
    return next((v for k, v in request.headers if k.lower() == name.lower()), None)


def test_the_spec_example_renders_to_the_slack_request_keptn_sent() -> None:
    loaded = load_webhook_config((DATA / "spec-slack.yaml").read_bytes())
    ev = KeptnEvent.from_json((DATA / "evaluation-finished.json").read_text())
    selection = select_webhooks([loaded], ev.type)
    assert selection.executor is None
    (request,) = render_webhook(selection.notifiers[0], ev, lambda name, ref: "T000/B000/XXXX")
    assert request.method == "POST"
    assert request.url == "https://hooks.slack.com/services/T000/B000/XXXX"
    assert request.body == b'{"text": "Evaluation pass with a score of 87.5 "}'
    assert header(request, "Content-type") == "application/json"
    assert request.masked_url == "https://hooks.slack.com/services/***"


def test_the_bridge_made_slack_notification_is_form_encoded_like_curl_sent_it() -> None:
    loaded = load_webhook_config((DATA / "slack-notifications.yaml").read_bytes())
    ev = KeptnEvent.from_json((DATA / "deployment-finished.json").read_text())
    (hook,) = select_webhooks([loaded], ev.type).notifiers
    values = {
        "secret_slackwebhook_token": "T0/B0/TOKEN",
        "secret_slackwebhook_bridgeUrl": "https://keptn.example.com",
    }
    (request,) = render_webhook(hook, ev, lambda name, ref: values.get(name))
    assert header(request, "Content-Type") == "application/x-www-form-urlencoded"
    assert request.body is not None
    body = request.body.decode()
    assert body.startswith('payload={"channel": "fulltour--helloservice"')
    assert "*URL:* http://helloservice.fulltour-qa" in body
    assert "https://keptn.example.com/trace/5b3c8a1e-0d4f-4c55-9c7e-2f9a3c1d7e11" in body
    assert request.masked_body is not None and "keptn.example.com" not in request.masked_body


def test_the_tutorial_projects_slack_notification_renders() -> None:
    loaded = load_webhook_config((DATA / "fulltour-slack.yaml").read_bytes())
    ev = KeptnEvent.from_json((DATA / "evaluation-finished.json").read_text())
    (hook,) = select_webhooks([None, None, loaded], ev.type).notifiers
    (request,) = render_webhook(
        hook, ev, lambda name, ref: "T000/B000/XXXX" if ref.name == "slack-webhook" else None
    )
    assert request.url == "https://hooks.slack.com/services/T000/B000/XXXX"
    assert request.body is not None
    assert json.loads(request.body) == {
        "text": "Evaluation of helloservice in qa: pass (score 87.5/100), run 5b3c8a1e-0d4f-4c55-9c7e-2f9a3c1d7e11"
    }


def test_every_request_carries_an_idempotency_key_stable_across_renders() -> None:
    loaded = config(
        "        - url: https://x.example.com/a\n          method: POST\n"
        "        - url: https://x.example.com/b\n          method: POST\n"
    )
    first = render_webhook(loaded.webhooks[0], event(), secrets)
    again = render_webhook(loaded.webhooks[0], event(), secrets)
    keys = [r.idempotency_key for r in first]
    assert keys == [r.idempotency_key for r in again]
    assert len(set(keys)) == 2
    assert [header(r, "Idempotency-Key") for r in first] == keys
    other = render_webhook(loaded.webhooks[0], event().model_copy(update={"id": "another"}), secrets)
    assert other[0].idempotency_key != keys[0]


def test_a_secret_reaches_the_url_and_header_and_nothing_displayed() -> None:
    request = one(
        "        - url: https://hooks.example.com/services/{{.env.token}}\n          method: POST\n"
        "          headers: [{key: Authorization, value: 'Bearer {{.env.token}}'}]\n"
        '          payload: \'{"note": "{{.data.project}}"}\'\n'
    )
    assert request.url.endswith("/services/" + SECRET)
    assert header(request, "Authorization") == "Bearer " + SECRET
    shown = json.dumps(request.display()) + repr(request)
    assert SECRET not in shown
    assert urllib.parse.quote(SECRET, safe="") not in shown
    assert "Bearer ***" in shown


def test_basic_auth_from_curl_user_is_masked() -> None:
    loaded = load_webhook_config(
        "apiVersion: webhookconfig.keptn.sh/v1alpha1\nspec:\n  webhooks:\n"
        "    - type: sh.keptn.event.mytask.triggered\n      sendFinished: true\n"
        "      envFrom: [{name: token, secretRef: {name: jenkins, key: token}}]\n"
        "      requests:\n        - \"curl -u 'bot:{{.env.token}}' -X POST https://jenkins.example.com/job/x/build\"\n"
    )
    (request,) = render_webhook(loaded.webhooks[0], event(), secrets)
    assert header(request, "Authorization") is not None
    assert dict(request.masked_headers)["Authorization"] == "Basic ***"


@pytest.mark.parametrize(
    "hostile",
    [
        "evil.example.com",
        "@evil.example.com",
        "x/../../admin",
        "a?b=c&d=e#frag",
        "%2e%2e/%2F",
        "//evil.example.com/",
        "\\\\evil.example.com",
        "http://evil.example.com",
        "x y\tz",
        "é/ü",
    ],
)
def test_event_data_in_the_url_is_one_encoded_segment_and_never_moves_the_host(hostile: str) -> None:
    request = one(
        "        - url: https://hooks.example.com/p/{{.data.project}}?s={{.data.stage}}\n          method: GET\n",
        event(project=hostile, stage=hostile),
    )
    parts = urllib.parse.urlsplit(request.url)
    assert parts.hostname == "hooks.example.com" and parts.port is None
    assert parts.path == "/p/" + urllib.parse.quote(hostile, safe="")
    assert urllib.parse.parse_qs(parts.query) == {"s": [hostile]}
    assert not parts.fragment


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=40))
def test_no_event_text_changes_the_host_or_adds_a_header(text: str) -> None:
    hook = config(
        "        - url: https://hooks.example.com/{{.data.project}}\n          method: POST\n"
        "          headers: [{key: X-Stage, value: '{{.data.stage}}'}]\n"
        '          payload: \'{"m": "{{.data.message}}", "v": {{.data.value}}}\'\n'
    ).webhooks[0]
    ev = event(project=text, stage=text, message=text, value=text)
    try:
        (request,) = render_webhook(hook, ev, secrets)
    except WebhookRenderError as exc:
        assert "control character" in str(exc)
        assert any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text)
        return
    assert urllib.parse.urlsplit(request.url).hostname == "hooks.example.com"
    assert [k for k, _ in request.headers].count("X-Stage") == 1
    assert all("\r" not in v and "\n" not in v for _, v in request.headers)
    assert request.body is not None
    assert json.loads(request.body) == {"m": text, "v": text}


@pytest.mark.parametrize(
    "injection", ["x\r\nX-Admin: 1", "x\nSet-Cookie: a=b", "x\rY", "nul\x00byte", "bell\x07"]
)
def test_header_values_with_control_characters_are_refused_without_showing_them(injection: str) -> None:
    hook = config(
        "        - url: https://hooks.example.com/\n          method: GET\n"
        "          headers: [{key: X-Stage, value: 'stage {{.data.stage}}'}]\n"
    ).webhooks[0]
    with pytest.raises(WebhookRenderError) as caught:
        render_webhook(hook, event(stage=injection), secrets)
    message = str(caught.value)
    assert message.startswith("webhook/webhook.yaml:")
    assert "spec.webhooks[0].requests[0].headers[0]" in message
    assert "control character" in message
    assert injection not in message


def test_json_payload_values_are_escaped_where_they_land() -> None:
    request = one(
        "        - url: https://hooks.example.com/\n          method: POST\n"
        "          headers: [{key: Content-Type, value: application/json}]\n"
        "          payload: >-\n"
        '            {"text": "{{.data.message}}", "score": {{.data.score}}, "labels": {{.data.labels}},\n'
        '             "name": {{.data.project}}}\n',
        event(message='done "now"\n\\ </script>', score=87.5, labels={"a": "b"}, project='p"q'),
    )
    assert request.body is not None
    assert json.loads(request.body) == {
        "text": 'done "now"\n\\ </script>',
        "score": 87.5,
        "labels": {"a": "b"},
        "name": 'p"q',
    }


def test_text_payloads_are_sent_as_rendered_like_keptn() -> None:
    request = one(
        "        - url: https://hooks.example.com/\n          method: POST\n"
        "          payload: 'stage={{.data.stage}}&note={{.data.message}}'\n",
        event(message='a "b"'),
    )
    assert request.body == b'stage=qa&note=a "b"'
    assert header(request, "Content-Type") == "application/x-www-form-urlencoded"


def test_a_json_payload_that_is_not_json_after_templating_is_refused() -> None:
    hook = config(
        "        - url: https://hooks.example.com/\n          method: POST\n"
        "          payload: '{\"a\": {{.data.project}}'\n"
    ).webhooks[0]
    with pytest.raises(WebhookRenderError, match="not valid JSON after templating"):
        render_webhook(hook, event(), secrets)


def test_missing_event_fields_and_secrets_are_located_errors() -> None:
    hook = config(
        "        - url: https://hooks.example.com/{{.data.ticket}}\n          method: GET\n"
    ).webhooks[0]
    with pytest.raises(WebhookRenderError) as caught:
        render_webhook(hook, event(), secrets)
    assert str(caught.value).startswith(
        "webhook/webhook.yaml:11:16: spec.webhooks[0].requests[0].url: map has"
    )
    assert 'map has no entry for key "ticket"' in str(caught.value)
    with pytest.raises(WebhookRenderError, match="secret 'my-secret' has no key 'token'"):
        render_webhook(hook, event(ticket="1"), lambda name, ref: None)


def test_a_url_from_a_secret_must_still_be_http() -> None:
    hook = config("        - url: '{{.env.token}}'\n          method: GET\n").webhooks[0]
    with pytest.raises(WebhookRenderError, match="not http:// or https://") as caught:
        render_webhook(hook, event(), secrets)
    assert SECRET not in str(caught.value)
    (request,) = render_webhook(hook, event(), lambda name, ref: "https://hooks.slack.com/services/T/B/X")
    assert request.url == "https://hooks.slack.com/services/T/B/X"
    assert request.masked_url == "***"


def test_the_most_specific_file_answers_a_task_and_subscriptions_are_not_sent_twice() -> None:
    def level(name: str, ids: tuple[str, str]) -> WebhookConfig:
        return load_webhook_config(
            "apiVersion: webhookconfig.keptn.sh/v1beta1\nspec:\n  webhooks:\n"
            f"    - type: sh.keptn.event.mytask.triggered\n      subscriptionID: {ids[0]}\n      sendFinished: true\n"
            f"      requests: [{{url: 'https://{name}.example.com/task', method: POST}}]\n"
            f"    - type: sh.keptn.event.mytask.triggered.>\n      subscriptionID: {ids[1]}\n"
            f"      requests: [{{url: 'https://{name}.example.com/note', method: POST}}]\n"
            f"    - type: sh.keptn.event.*.finished\n      subscriptionID: {ids[1]}-f\n"
            f"      requests: [{{url: 'https://{name}.example.com/finished', method: POST}}]\n",
            f"{name}/webhook/webhook.yaml",
        )

    service, stage, project = (
        level("service", ("a", "n")),
        level("stage", ("b", "n")),
        level("project", ("c", "m")),
    )
    chosen = select_webhooks([service, None, project], "sh.keptn.event.mytask.triggered")
    assert chosen.executor is not None and chosen.executor.file == "service/webhook/webhook.yaml"
    assert chosen.notifiers == ()
    finished = select_webhooks([service, stage, project], "sh.keptn.event.deployment.finished")
    assert [(h.file.split("/")[0], h.subscription_id) for h in finished.notifiers] == [
        ("service", "n-f"),
        ("project", "m-f"),
    ]
    wildcard = load_webhook_config(
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nspec:\n  webhooks:\n    - type: sh.keptn.>\n"
        "      requests: [{url: 'https://all.example.com/', method: POST}]\n"
    )
    every = select_webhooks([wildcard], "sh.keptn.event.mytask.triggered")
    assert every.executor is None and len(every.notifiers) == 1


# --- reconciler webhook render -----------------------------------------------------------------------------


def test_cli_renders_the_requests_with_secrets_masked(tmp_path: Path) -> None:
    store = tmp_path / "secrets" / "my-webhook-secret"
    store.mkdir(parents=True)
    (store / "my-key").write_text("T000/B000/" + SECRET + "\n")
    result = CliRunner().invoke(
        cli,
        [
            "webhook",
            "render",
            "--config",
            str(DATA / "spec-slack.yaml"),
            "--event",
            str(DATA / "evaluation-finished.json"),
            "--secrets-dir",
            str(tmp_path / "secrets"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    doc = json.loads(result.stdout)
    (hook,) = doc["webhooks"]
    assert hook["subscriptionID"] == "0123456987"
    assert hook["does"].startswith("notification")
    (request,) = hook["requests"]
    assert request["url"] == "https://hooks.slack.com/services/***"
    assert request["body"] == '{"text": "Evaluation pass with a score of 87.5 "}'


def test_cli_describes_a_task_executor_and_takes_secrets_by_env_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "webhook",
            "render",
            "--config",
            str(DATA / "github-dispatch.yaml"),
            "--event",
            str(DATA / "mytask-active-triggered.json"),
            "--secret",
            f"secret_githubsecret_GITHUBTOKEN={SECRET}",
            "-o",
            "yaml",
        ],
    )
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    (hook,) = yaml.safe_load(result.stdout)["webhooks"]
    assert hook["does"].startswith("task executor for mytask-active: sends .started")
    (request,) = hook["requests"]
    assert "Authorization: token ***" in request["headers"]
    assert json.loads(request["body"])["client_payload"]["data"] == "ticket-42"


def test_cli_reports_a_located_error_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "webhook.yaml"
    bad.write_text(
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nspec:\n  webhooks:\n    - type: sh.keptn.event.x.triggered\n"
        "      sendFinished: true\n      requests: [{url: 'http://{{.data.host}}/', method: GET}]\n"
    )
    result = CliRunner().invoke(
        cli, ["webhook", "render", "--config", str(bad), "--event", str(DATA / "evaluation-finished.json")]
    )
    assert result.exit_code == 1
    assert f"{bad}:6:" in result.stderr
    assert "would let event data choose the scheme, host or port" in result.stderr
