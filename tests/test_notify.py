"""Delivery news: which events make a notice, what each sink receives, and notifications.yaml."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from reconciler.adapters.notify_sink import notification_request
from reconciler.adapters.webhook_http import DestinationPolicy, RetryPolicy, WebhookSender
from reconciler.core.approval import decision
from reconciler.core.notify import (
    Links,
    Notice,
    cloudevent_parts,
    generic_message,
    notice_for,
    slack_message,
    teams_message,
)
from reconciler.formats.events import KeptnEvent
from reconciler.formats.notifications import NoticeKind, load_notifications
from reconciler.formats.problems import ConfigError
from tests.support.events import new_id, now_text
from tests.support.receivers import receiving

CONTEXT = "5b3c8a1e-0d4f-4c55-9c7e-2f9a3c1d7e11"
LINKS = Links(
    web="https://reconciler.example.com/", commit="https://git.example.com/team/fulltour/commit/{commit}"
)
SECRET = "T0AAA/B0BBB/slack-secret-9f8e7d"


def event(type_: str, **data: Any) -> KeptnEvent:
    base = {"project": "fulltour", "stage": "qa", "service": "helloservice"}
    return KeptnEvent(
        id="9a8b7c6d-0000-4000-8000-000000000001",
        source="shipyard-controller",
        type=type_,
        time="2024-05-01T10:00:00.000Z",
        shkeptncontext=CONTEXT,
        data={**base, **data},
    )


def waits(data: dict[str, Any]) -> bool:
    return decision(data) is None


def notice(ev: KeptnEvent, **kwargs: Any) -> Notice:
    found = notice_for(ev, links=LINKS, approval_waits=waits, **kwargs)
    assert found is not None
    return found


def test_a_finished_sequence_says_its_result_and_links_the_run_and_the_ledger_commit() -> None:
    n = notice(
        event(
            "sh.keptn.event.qa.delivery.finished",
            result="fail",
            status="succeeded",
            message="evaluation failed",
        ),
        ledger_commit="0123456789abcdef0123",
    )
    assert n.kind is NoticeKind.SEQUENCE_FINISHED
    assert n.title == "qa.delivery failed for helloservice"
    assert n.text == "evaluation failed"
    assert n.web_url == f"https://reconciler.example.com/ui/context/{CONTEXT}"
    assert n.commit_url == "https://git.example.com/team/fulltour/commit/0123456789abcdef0123"
    aborted = notice(
        event(
            "sh.keptn.event.production.delivery.finished", stage="production", status="aborted", result="fail"
        )
    )
    assert aborted.title == "production.delivery was aborted for helloservice"


def test_a_failed_evaluation_names_its_failing_objectives() -> None:
    indicators = [
        {
            "status": "fail",
            "displayName": "HTTP Response Time",
            "keySli": False,
            "value": {"metric": "http_response_time_seconds_main_page_sum", "value": 0.81, "success": True},
            "passTargets": [{"criteria": "<=0.4", "violated": True}],
        },
        {"status": "pass", "value": {"metric": "go_routines", "value": 12, "success": True}},
        {
            "status": "fail",
            "keySli": True,
            "value": {"metric": "failing_request", "success": False, "message": "no data"},
        },
    ]
    n = notice(
        event(
            "sh.keptn.event.evaluation.finished",
            result="fail",
            evaluation={"score": 50, "result": "fail", "indicatorResults": indicators},
        )
    )
    assert n.kind is NoticeKind.EVALUATION_FAILED
    assert n.title == "Evaluation failed for helloservice in qa (score 50)"
    assert n.details == (
        "HTTP Response Time: 0.81, violates <=0.4",
        "failing_request (key SLI): no value (no data)",
    )
    assert notice_for(event("sh.keptn.event.evaluation.finished", result="pass")) is None


def test_an_approval_that_waits_for_a_person_says_how_to_answer_it() -> None:
    manual = event(
        "sh.keptn.event.approval.triggered",
        stage="production",
        result="pass",
        approval={"pass": "manual", "warning": "manual"},
    )
    n = notice(manual)
    assert n.kind is NoticeKind.APPROVAL_WAITING
    assert n.hint == f"reconciler approve {CONTEXT} --stage production"
    automatic = event("sh.keptn.event.approval.triggered", result="pass", approval={"pass": "automatic"})
    assert notice_for(automatic, approval_waits=waits) is None


def test_a_started_remediation_quotes_the_problem() -> None:
    trigger = event(
        "sh.keptn.event.production.remediation.triggered",
        stage="production",
        problem={"problemTitle": "Response time degradation", "problemDetails": "p95 above 1s"},
    )
    n = notice(event("sh.keptn.event.production.remediation.started", stage="production"), trigger=trigger)
    assert n.kind is NoticeKind.REMEDIATION_STARTED
    assert n.title == "Remediation started for helloservice in production"
    assert n.text == "Problem: Response time degradation."
    assert n.details == ("p95 above 1s",)


def test_a_rejected_upstream_commit_lists_its_located_problems() -> None:
    problems = [
        {
            "branch": "main",
            "file": "shipyard.yaml",
            "line": 44,
            "column": 38,
            "field": "spec.stages[1].sequences[1].triggeredOn[0].selector.match.evaluation.result",
            "message": "selector value 'failed' never matches",
        }
    ] * 12
    rejected = KeptnEvent(
        source="reconciler-upstream",
        type="reconciler.upstream.rejected",
        shkeptncontext=CONTEXT,
        data={
            "project": "fulltour",
            "stage": "",
            "branch": "main",
            "commit": "feedfacecafe0123456789",
            "serving": "0badc0de11223344",
            "problems": problems[:10],
            "problemCount": 12,
        },
        id=new_id(),
        time=now_text(),
    )
    n = notice(rejected)
    assert n.kind is NoticeKind.UPSTREAM_REJECTED
    assert n.title == "Upstream commit feedfacecafe on main rejected"
    assert n.text == "12 problem(s) found; still serving 0badc0de1122."
    assert n.details[0].startswith("main:shipyard.yaml:44:38: spec.stages[1]")
    assert n.details[-1] == "and 2 more" and len(n.details) == 11


def test_events_that_are_not_news_make_no_notice() -> None:
    for type_ in (
        "sh.keptn.event.deployment.triggered",
        "sh.keptn.event.qa.delivery.triggered",
        "sh.keptn.event.test.finished",
    ):
        assert notice_for(event(type_, result="fail")) is None


HOSTILE = (
    "<!channel> *bold* <https://evil.example.com|click> & [link](https://evil.example.com)\r\nsecond line"
)


def test_slack_messages_escape_event_text() -> None:
    message = slack_message(
        notice(event("sh.keptn.event.qa.delivery.finished", result="fail", message=HOSTILE))
    )
    text = json.dumps(message)
    assert "<!channel>" not in text and "<https://evil" not in text
    assert "&lt;!channel&gt;" in text
    assert "\\r" not in text and "second line" in text
    first = message["blocks"][0]["text"]["text"]
    assert first.startswith(":x: *qa.delivery failed for helloservice*")
    links = message["blocks"][-1]["elements"][0]["text"]
    assert f"<https://reconciler.example.com/ui/context/{CONTEXT}|Open in reconciler>" in links


def test_teams_messages_are_adaptive_cards_with_escaped_markdown() -> None:
    message = teams_message(
        notice(event("sh.keptn.event.qa.delivery.finished", result="fail", message=HOSTILE))
    )
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["color"] == "Attention"
    assert "\\[link\\]\\(https://evil.example.com\\)" in card["body"][1]["text"]
    assert card["actions"][0] == {
        "type": "Action.OpenUrl",
        "title": "Open in reconciler",
        "url": f"https://reconciler.example.com/ui/context/{CONTEXT}",
    }


def test_generic_and_cloudevent_bodies_carry_the_same_facts() -> None:
    n = notice(event("sh.keptn.event.qa.delivery.finished", result="pass"))
    generic = generic_message(n)
    assert generic["kind"] == "sequence.finished" and generic["result"] == "pass"
    assert generic["links"]["web"] == n.web_url
    attributes, data = cloudevent_parts(n)
    assert attributes["type"] == "reconciler.notification.sequence.finished"
    assert attributes["subject"] == "fulltour/qa/helloservice"
    assert data == generic
    again, _ = cloudevent_parts(notice(event("sh.keptn.event.qa.delivery.finished", result="pass")))
    assert again["id"] == attributes["id"], "a notice resent after a restart keeps its CloudEvent id"


NOTIFICATIONS = """\
apiVersion: reconciler/v1
kind: Notifications
spec:
  links:
    web: https://reconciler.example.com
  envFrom:
    - name: slackToken
      secretRef: {name: slack-webhook, key: token}
  targets:
    - name: chat
      kind: slack
      url: URL/services/{{.env.slackToken}}
      events: [sequence.finished, upstream.rejected]
      stages: [qa]
      results: [fail]
    - name: audit-binary
      kind: cloudevents
      url: URL/binary
      events: [sequence.finished]
    - name: audit-structured
      kind: cloudevents
      mode: structured
      url: URL/structured
      events: [sequence.finished]
      headers: [{key: Authorization, value: "Bearer {{.env.slackToken}}"}]
"""


def test_notices_reach_each_kind_of_sink_over_http() -> None:
    with receiving() as receiver:
        config = load_notifications(NOTIFICATIONS.replace("URL", receiver.url))
        n = notice(event("sh.keptn.event.qa.delivery.finished", result="fail", message="gate failed"))
        sender = WebhookSender(
            DestinationPolicy(allow_hosts=("127.0.0.1",)), RetryPolicy(backoff_initial=0.01)
        )
        for target in config.targets:
            assert target.wants(n.kind, stage=n.stage, service=n.service, result=n.result)
            request = notification_request(config, target, n, lambda name, ref: SECRET)
            assert SECRET not in json.dumps(request.display())
            assert sender.send(request).ok
    slack, binary, structured = receiver.seen
    assert slack.path == f"/services/{SECRET}"
    assert json.loads(slack.body)["text"] == "qa.delivery failed for helloservice: gate failed"
    for seen in (binary, structured):
        ce = from_http_event(HTTPMessage(headers=seen.headers, body=seen.body))
        assert ce.get_type() == "reconciler.notification.sequence.finished"
        data = ce.get_data()
        assert isinstance(data, dict) and data["title"] == "qa.delivery failed for helloservice"
    assert binary.header("ce-type") == "reconciler.notification.sequence.finished"
    assert (structured.header("Content-Type") or "").startswith("application/cloudevents+json")
    assert structured.header("Authorization") == f"Bearer {SECRET}"


def test_targets_filter_by_kind_stage_and_result() -> None:
    config = load_notifications(NOTIFICATIONS.replace("URL", "https://hooks.example.com"))
    chat = config.targets[0]
    assert chat.wants(NoticeKind.SEQUENCE_FINISHED, stage="qa", service="s", result="fail")
    assert not chat.wants(NoticeKind.SEQUENCE_FINISHED, stage="qa", service="s", result="pass")
    assert not chat.wants(NoticeKind.SEQUENCE_FINISHED, stage="production", service="s", result="fail")
    assert chat.wants(NoticeKind.UPSTREAM_REJECTED, stage="qa", service="", result=None)
    assert not chat.wants(NoticeKind.APPROVAL_WAITING, stage="qa", service="s", result=None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("url: URL/binary", "url: URL/{{.data.project}}"), "only secrets ({{.env.NAME}}) can be used here"),
        (("kind: slack", "kind: discord"), "kind"),
        (
            (
                "events: [sequence.finished]\n    - name: audit-s",
                "events: [sequence.done]\n    - name: audit-s",
            ),
            "events",
        ),
        (("Bearer {{.env.slackToken}}", "Bearer {{.env.other}}"), "secret .env.other is not declared"),
        (("name: audit-binary", "name: chat"), "target name 'chat' is used by targets 0 and 1"),
        (
            ("web: https://reconciler.example.com", "web: reconciler.example.com"),
            "expected an http:// or https:// URL",
        ),
        (("url: URL/binary", "url: https://x.example.com/{{.id}}"), "only secrets"),
        (
            ("      events: [sequence.finished, upstream.rejected]", "      events: [upstream.rejected]"),
            "results filters",
        ),
    ],
)
def test_notifications_mistakes_are_located(change: tuple[str, str], message: str) -> None:
    text = NOTIFICATIONS.replace(*change, 1).replace("URL", "https://hooks.example.com")
    with pytest.raises(ConfigError) as caught:
        load_notifications(text)
    found = [str(p) for p in caught.value.problems]
    assert any(message in p for p in found), found
    assert all(p.startswith("notifications.yaml:") for p in found)
