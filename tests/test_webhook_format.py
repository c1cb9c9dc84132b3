"""webhook.yaml: Keptn's files load unchanged; every mistake is located in the file when it loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from reconciler.formats.problems import ConfigError
from reconciler.formats.webhook import (
    WebhookConfig,
    executor_task,
    load_webhook_config,
    type_matches,
)

DATA = Path(__file__).parent / "data" / "webhooks"


def load(text: str, file: str = "webhook/webhook.yaml") -> WebhookConfig:
    return load_webhook_config(text, file)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return [str(p) for p in caught.value.problems]


def beta(requests: str, env: str = "", type_: str = "sh.keptn.event.mytask.triggered") -> str:
    return (
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nspec:\n  webhooks:\n"
        f"    - type: {type_}\n      sendFinished: true\n{env}      requests:\n{requests}"
    )


def alpha(*lines: str, env: str = "") -> str:
    dumped = yaml.safe_dump(list(lines), width=10_000, default_style="'")
    body = "".join("        " + line + "\n" for line in dumped.splitlines())
    return (
        "apiVersion: webhookconfig.keptn.sh/v1alpha1\nkind: WebhookConfig\nspec:\n  webhooks:\n"
        f"    - type: sh.keptn.event.mytask.triggered\n      sendFinished: true\n{env}      requests:\n{body}"
    )


TOKEN_ENV = "      envFrom:\n        - name: token\n          secretRef: {name: my-secret, key: token}\n"


@pytest.mark.parametrize(
    "name", ["slack-notifications", "spec-slack", "github-dispatch", "curl-v1alpha1", "fulltour-slack"]
)
def test_keptn_samples_load(name: str) -> None:
    path = DATA / f"{name}.yaml"
    config = load_webhook_config(path.read_bytes(), str(path))
    assert config.webhooks
    assert all(hook.requests for hook in config.webhooks)


def test_v1alpha1_curl_lines_become_the_same_requests_as_v1beta1() -> None:
    config = load_webhook_config((DATA / "curl-v1alpha1.yaml").read_bytes())
    first, second = config.webhooks[0].requests
    assert first.method == "GET"
    assert first.url.text == "http://shipyard-controller:8080/v1/project/{{.data.project}}"
    assert [(h.key, h.value.text) for h in first.headers] == [("x-token", "{{.env.secretKey}}")]
    assert second.url.text.endswith("/stage/{{.data.stage}}")


def test_curl_quotes_and_spaces_inside_template_actions_stay_in_the_action() -> None:
    config = load(
        alpha(
            "curl -X POST -H 'Content-Type: application/json' --data "
            """'{"tool": "{{index .data "incident tool"}}"}' https://hooks.example.com/x -sS --fail-with-body"""
        )
    )
    request = config.webhooks[0].requests[0]
    assert request.method == "POST"
    assert request.payload is not None
    assert request.payload.text == '{"tool": "{{index .data "incident tool"}}"}'
    assert request.json_payload


def test_curl_defaults_follow_curl() -> None:
    config = load(
        alpha(
            "curl -d 'a=1' -d 'b=2' https://x.example.com/form",
            "curl -I https://x.example.com/",
            "curl --json '{\"a\": 1}' -u 'bot:{{.env.token}}' -kL -m 5 https://x.example.com/j",
            env=TOKEN_ENV,
        )
    )
    form, head, js = config.webhooks[0].requests
    assert form.method == "POST" and form.payload is not None and form.payload.text == "a=1&b=2"
    assert not form.json_payload
    assert head.method == "HEAD"
    assert js.method == "POST" and js.json_payload and js.insecure and js.follow_redirects
    assert js.max_time == 5.0 and js.user is not None
    assert {h.key for h in js.headers} >= {"Content-Type", "Accept"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("curl -o /tmp/out https://x.example.com/", "reads or writes files"),
        ("curl -F 'f=@/etc/passwd' https://x.example.com/", "reads or writes files"),
        ("curl --data @/etc/hosts https://x.example.com/", "@file reads a file"),
        ("curl --retry 3 https://x.example.com/", "curl option --retry is not supported"),
        ("wget https://x.example.com/", "only curl commands"),
        ("curl https://a.example.com/ https://b.example.com/", "more than one URL"),
        ("curl 'https://x.example.com/", "cannot be split into words"),
        ("curl -X {{.data.method}} https://x.example.com/", "cannot use templates"),
        ("curl --{{.data.opt}} https://x.example.com/", "option names cannot use templates"),
        ("curl -H 'X-{{.data.h}}: 1' https://x.example.com/", "cannot use templates"),
        ("curl 'https://x.example.com/{{if .data.a}}' 'b{{end}}'", "inside one curl word"),
        ("curl -x https://proxy.example.com:3128 https://x.example.com/", "only http:// proxies"),
        ("curl -X TRACE https://x.example.com/", "not supported"),
        ("curl", "has no URL"),
    ],
)
def test_curl_lines_that_cannot_be_sent_as_written_are_refused_with_the_request_located(
    line: str, message: str
) -> None:
    found = problems(alpha(line))
    assert len(found) == 1
    assert message in found[0]
    assert found[0].startswith("webhook/webhook.yaml:8:11: spec.webhooks[0].requests[0]:")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://{{.data.host}}/x", "would let event data choose the scheme, host or port"),
        ("https://{{.data.project}}.example.com/x", "would let event data choose"),
        ("https://example.com:{{.data.port}}/x", "would let event data choose"),
        ("{{.data.url}}", "would let event data choose"),
        ("https://hooks.example.com{{.data.path}}", "would let event data choose"),
        ("{{.env.token}}{{.data.path}}", "would let event data choose"),
        ("file:///etc/passwd", "scheme 'file' is not supported"),
        ("hooks.example.com/x", "must start with http:// or https://"),
        ("https://hooks.example.com:99999/x", "cannot be parsed"),
        ("https:///x", "has no host"),
        ("https://hooks.example.com/{{if .data.a}}a{{end}}", "cannot use {{if}}"),
    ],
)
def test_urls_whose_host_event_data_could_pick_are_refused(url: str, message: str) -> None:
    found = problems(beta(f"        - url: '{url}'\n          method: GET\n", env=TOKEN_ENV))
    assert any(message in p for p in found), found
    assert all(
        re.match(r"webhook/webhook.yaml:\d+:\d+: spec.webhooks\[0\].requests\[0\].url: ", p) for p in found
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/{{.data.project}}?stage={{.data.stage}}#{{.id}}",
        "{{.env.token}}",
        "{{.env.token}}/{{.data.project}}",
        "https://{{.env.token}}.example.com/{{.data.project}}",
        "https://hooks.slack.com/services/{{.env.token}}",
    ],
)
def test_event_data_may_fill_the_path_query_and_fragment_and_secrets_the_host(url: str) -> None:
    config = load(beta(f"        - url: '{url}'\n          method: GET\n", env=TOKEN_ENV))
    assert config.webhooks[0].requests[0].url.text == url


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{{.Data.project}}", "unknown field .Data"),
        ("{{.secret.token}}", "unknown field .secret"),
        ("{{.env.other}}", "secret .env.other is not declared in envFrom (declared: token)"),
        ("{{.env}}", "names all secrets"),
        ("{{index .env .data.name}}", "must be named literally"),
        ("{{.}}", "would print the whole event and its secrets"),
        ("{{.id.x}}", ".id is a string"),
        ("{{toJson .data}}", 'function "toJson" not defined'),
    ],
)
def test_template_mistakes_are_located_validation_errors(payload: str, message: str) -> None:
    found = problems(
        beta(
            f"        - url: https://x.example.com/\n          method: POST\n          payload: '{payload}'\n",
            TOKEN_ENV,
        )
    )
    assert any(message in p for p in found), found
    assert any(
        p.startswith("webhook/webhook.yaml:13:20: spec.webhooks[0].requests[0].payload:") for p in found
    )


def test_unknown_keys_are_refused_where_keptn_ignored_them() -> None:
    text = beta("        - url: https://x.example.com/\n          method: GET\n").replace(
        "sendFinished: true", "sendFinshed: true"
    )
    found = problems(text)
    assert found == [
        "webhook/webhook.yaml:6:20: spec.webhooks[0].sendFinshed: unknown field; check the spelling against "
        "the documented format"
    ]


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        (
            "        - url: https://x.example.com/\n          method: DELETEX\n",
            "method 'DELETEX' is not supported",
        ),
        (
            "        - url: https://x.example.com/\n          method: GET\n          headers: [{key: 'X Y', value: v}]\n",
            "not a valid HTTP header name",
        ),
        (
            "        - url: https://x.example.com/\n          method: GET\n          headers: [{key: Host, value: v}]\n",
            "set by the HTTP client",
        ),
        (
            "        - url: https://x.example.com/\n          method: GET\n          headers: [{key: X-A, value: ''}]\n",
            "empty value",
        ),
        ("        - curl https://x.example.com/\n", "found a curl command line"),
        (
            "        - url: https://x.example.com/\n          method: GET\n          options: --data x\n"
            "          payload: y\n",
            "payload is set too",
        ),
        (
            "        - url: https://x.example.com/\n          method: GET\n          options: -o /tmp/x\n",
            "-o reads",
        ),
    ],
)
def test_beta_request_mistakes_are_located(fragment: str, message: str) -> None:
    found = problems(beta(fragment))
    assert any(message in p for p in found), found


def test_duplicate_subscriptions_and_two_executors_for_one_task_are_refused() -> None:
    text = "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nspec:\n  webhooks:\n" + "".join(
        f"    - type: sh.keptn.event.mytask.triggered\n      subscriptionID: same\n"
        f"      sendFinished: true\n      requests:\n        - url: https://x.example.com/{i}\n"
        "          method: GET\n"
        for i in range(2)
    )
    found = problems(text)
    assert any("subscriptionID 'same' is used by webhooks 0 and 1" in p for p in found)
    assert any("both answer sh.keptn.event.mytask.triggered" in p for p in found)


def test_an_executor_without_send_finished_loads_with_a_warning() -> None:
    text = beta("        - url: https://x.example.com/\n          method: GET\n").replace(
        "      sendFinished: true\n", ""
    )
    config = load(text)
    assert [w.severity for w in config.warnings] == ["warning"]
    assert "sendFinished is not set" in config.warnings[0].message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: webhookconfig.keptn.sh/v2\nspec: {webhooks: []}\n",
            "unsupported webhook configuration version",
        ),
        (
            "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: Webhook\nspec: {webhooks: []}\n",
            "expected WebhookConfig",
        ),
        ("apiVersion: webhookconfig.keptn.sh/v1beta1\nspec:\n  webhooks: []\n", "webhooks is empty"),
        (
            "apiVersion: webhookconfig.keptn.sh/v1beta1\nspec:\n  webhooks:\n    - type: deploy\n      requests: []\n",
            "is not a Keptn event type",
        ),
        ("a: &a [*a]\n", "recursive alias"),
    ],
)
def test_file_level_mistakes(text: str, message: str) -> None:
    found = problems(text)
    assert any(message in p for p in found), found


def test_type_patterns_match_like_nats_subjects() -> None:
    assert type_matches("sh.keptn.event.evaluation.finished", "sh.keptn.event.evaluation.finished")
    assert type_matches("sh.keptn.event.*.finished", "sh.keptn.event.deployment.finished")
    assert not type_matches("sh.keptn.event.*.finished", "sh.keptn.event.qa.delivery.finished")
    assert type_matches("sh.keptn.>", "sh.keptn.event.qa.delivery.finished")
    assert type_matches("sh.keptn.event.deployment.>", "sh.keptn.event.deployment.started")
    assert not type_matches("sh.keptn.event.deployment.>", "sh.keptn.event.deployment")
    assert executor_task("sh.keptn.event.mytask.triggered") == "mytask"
    assert executor_task("sh.keptn.event.*.triggered") is None
    assert executor_task("sh.keptn.>") is None
