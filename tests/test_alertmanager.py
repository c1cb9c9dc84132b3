"""Alerts become remediations: the webhook mapping, and a real Prometheus -> Alertmanager -> API chain."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.api import ApiServer, create_app, serve
from reconciler.core.engine_state import CONTROLLER, EngineState, apply
from reconciler.formats.alert import AlertError, parse_webhook
from reconciler.formats.events import KeptnEvent, derived_id
from reconciler.ingress.alertmanager import AlertMapping, incident_context, plan_alerts
from reconciler.ingress.submit import Ingress
from reconciler.ledger.gitledger import Ledger
from reconciler.upstream.files import GitFiles
from reconciler.upstream.snapshot import snapshot_of
from tests.support.alertmanager import AlertmanagerFactory, webhook_config
from tests.support.events import now_text
from tests.support.prometheus import MetricsEndpoint, PrometheusFactory

TOKEN = "alert-token-1234"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAPPING = AlertMapping(project="fulltour")


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    base = {"alertname": "HighResponseTime", "stage": "production", "service": "helloservice"}
    base.update(labels)
    return {
        "status": status,
        "labels": {k: v for k, v in base.items() if v},
        "annotations": {
            "summary": "http_response_time_seconds_main_page_sum",
            "description": "p95 above 400ms",
        },
        "startsAt": "2026-03-01T11:58:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x",
        "fingerprint": "a1b2c3d4e5f60718",
    }


def webhook(*alerts: dict[str, Any], status: str = "firing") -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="HighResponseTime"}',
            "status": status,
            "receiver": "reconciler",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": list(alerts),
        }
    ).encode()


def test_firing_alert_becomes_a_production_remediation_trigger() -> None:
    plan = plan_alerts(parse_webhook(webhook(alert())), MAPPING, EngineState(), NOW)
    [event] = plan.events
    assert event.type == "sh.keptn.event.production.remediation.triggered"
    assert event.source == "prometheus"
    assert (event.project, event.stage, event.service) == ("fulltour", "production", "helloservice")
    problem = event.data["problem"]
    assert problem["problemTitle"] == "http_response_time_seconds_main_page_sum"
    assert problem["state"] == "OPEN" and problem["problemID"] == "a1b2c3d4e5f60718"
    assert problem["problemURL"] == "http://127.0.0.1:9090/graph?g0.expr=x"
    again = plan_alerts(parse_webhook(webhook(alert())), MAPPING, EngineState(), NOW)
    assert again.events[0].id == event.id and again.events[0].shkeptncontext == event.shkeptncontext
    later = alert()
    later["startsAt"] = "2026-03-01T13:00:00.000Z"  # a new incident of the same alert
    assert plan_alerts(parse_webhook(webhook(later)), MAPPING, EngineState(), NOW).events[
        0
    ].shkeptncontext != (event.shkeptncontext)


def test_title_source_is_configurable_and_falls_back_to_the_alert_name() -> None:
    by_name = AlertMapping(title_source="labels.alertname", project="fulltour")
    [event] = plan_alerts(parse_webhook(webhook(alert())), by_name, EngineState(), NOW).events
    assert event.data["problem"]["problemTitle"] == "HighResponseTime"
    bare = alert()
    bare["annotations"] = {}
    [event] = plan_alerts(parse_webhook(webhook(bare)), MAPPING, EngineState(), NOW).events
    assert event.data["problem"]["problemTitle"] == "HighResponseTime"
    labels = AlertMapping(stage_label="env", service_label="app", project="fulltour")
    [event] = plan_alerts(
        parse_webhook(webhook(alert(stage="", service="", env="production", app="helloservice"))),
        labels,
        EngineState(),
        NOW,
    ).events
    assert (event.stage, event.service) == ("production", "helloservice")


def test_resolved_unlabelled_and_still_running_alerts_start_nothing_and_say_why() -> None:
    plan = plan_alerts(
        parse_webhook(webhook(alert("resolved"), alert(stage=""), status="resolved")),
        MAPPING,
        EngineState(),
        NOW,
    )
    assert plan.events == []
    assert [why for _, why in plan.skipped] == [
        "alert is resolved: nothing to remediate",
        "alert 'HighResponseTime' has no label 'stage'; expected labels 'stage' and 'service' naming the stage and service",
    ]
    state = EngineState()
    [first] = plan_alerts(parse_webhook(webhook(alert())), MAPPING, state, NOW).events
    apply(state, first)
    repeat = plan_alerts(parse_webhook(webhook(alert())), MAPPING, state, NOW)
    assert repeat.events == [] and "still running" in repeat.skipped[0][1]
    apply(
        state,
        KeptnEvent(
            id=derived_id(first.id, "finished"),
            source=CONTROLLER,
            type="sh.keptn.event.production.remediation.finished",
            shkeptncontext=first.shkeptncontext,
            triggeredid=first.id,
            data={"project": "fulltour", "stage": "production", "service": "helloservice", "result": "pass"},
            time=now_text(),
        ),
    )
    [second] = plan_alerts(parse_webhook(webhook(alert())), MAPPING, state, NOW).events
    assert second.shkeptncontext == first.shkeptncontext and second.id != first.id


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", "expected a JSON object"),
        (b"{", "not valid JSON"),
        (json.dumps({"status": "firing"}).encode(), "alerts: required field is missing"),
        (webhook({**alert(), "startsAt": "yesterday"}), "alerts.0.startsAt"),
        (webhook({**alert(), "labels": {"stage": 3}}), "alerts.0.labels.stage"),
    ],
)
def test_bad_payloads_name_the_field(body: bytes, expected: str) -> None:
    with pytest.raises(AlertError, match=r"^Alertmanager webhook: ") as exc:
        parse_webhook(body)
    assert expected in str(exc.value)


@pytest.fixture
def ingress(tutorial_data_dir: Path) -> Ingress:
    ledger = Ledger(tutorial_data_dir / "ledger.git", "reconciler-ledger")
    view = snapshot_of(GitFiles(tutorial_data_dir / "upstream.git"))
    return Ingress(ledger=ledger, view=view, project="fulltour")


def test_receiver_records_once_per_incident_and_refuses_unusable_payloads(ingress: Ingress) -> None:
    server = serve(create_app(ingress, token=TOKEN, alert_mapping=MAPPING), "127.0.0.1:0")
    try:
        post = lambda body: httpx.post(  # noqa: E731
            f"{server.url}/v1/alertmanager", content=body, headers={"authorization": f"Bearer {TOKEN}"}
        )
        assert post(b"{").status_code == 400
        unusable = post(webhook(alert(service="")))
        assert unusable.status_code == 422 and "no label 'service'" in unusable.json()["message"]
        unknown = post(webhook(alert(service="carts")))
        assert unknown.status_code == 422 and "no service 'carts'" in unknown.json()["message"]
        assert list(ingress.ledger.events()) == []
        first = post(webhook(alert()))
        assert first.status_code == 200 and len(first.json()["started"]) == 1
        repeat = post(webhook(alert()))
        assert repeat.status_code == 200 and repeat.json()["started"] == []
        assert "still running" in repeat.json()["skipped"][0]["reason"]
        assert httpx.post(f"{server.url}/v1/alertmanager", content=webhook(alert())).status_code == 401
    finally:
        server.stop()
    [event] = ingress.ledger.events()
    assert event.shkeptncontext == incident_context(parse_webhook(webhook(alert())).alerts[0])


# -- the real chain ------------------------------------------------------------------------------


class Tee:
    """ASGI wrapper remembering each Alertmanager notification and the status we answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[tuple[dict[str, Any], int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/alertmanager":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        status: list[int] = []

        async def tee_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def tee_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, tee_receive, tee_send)
        self.seen.append((json.loads(b"".join(chunks)), status[0] if status else 0))

    def wait_for(self, status: str, deadline: float) -> dict[str, Any]:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            for body, _ in self.seen:
                if body["status"] == status:
                    return body
            time.sleep(0.1)
        raise AssertionError(f"no {status} notification within {deadline}s; seen {self.seen}")


@pytest.fixture
def receiver(ingress: Ingress) -> Iterator[tuple[ApiServer, Tee]]:
    tee = Tee(create_app(ingress, token=TOKEN, alert_mapping=MAPPING))
    server = serve(tee, "127.0.0.1:0")
    try:
        yield server, tee
    finally:
        server.stop()


def test_real_alertmanager_fed_by_a_prometheus_rule_starts_a_remediation_and_resolution_starts_nothing(
    ingress: Ingress,
    receiver: tuple[ApiServer, Tee],
    prometheus_factory: PrometheusFactory,
    alertmanager_factory: AlertmanagerFactory,
    metrics_endpoint_factory: Callable[..., MetricsEndpoint],
    tmp_path: Path,
) -> None:
    server, tee = receiver
    am = alertmanager_factory.start(webhook_config(f"{server.url}/v1/alertmanager", TOKEN))
    endpoint = metrics_endpoint_factory()
    slow = Gauge("helloservice_slow", "1 while the service is too slow", registry=endpoint.registry)
    slow.set(1)
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n"
        "  - name: helloservice\n"
        "    interval: 1s\n"
        "    rules:\n"
        "      - alert: HighResponseTime\n"
        "        expr: helloservice_slow > 0\n"
        "        labels: {project: fulltour, stage: production, service: helloservice}\n"
        "        annotations:\n"
        "          summary: http_response_time_seconds_main_page_sum\n"
        "          description: mean response time of GET / above 400 ms\n"
    )
    config = (
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{json.dumps(str(rules))}]\n"
        "alerting:\n"
        "  alertmanagers:\n"
        f"    - static_configs: [{{targets: [{json.dumps(am.target)}]}}]\n"
        "scrape_configs:\n"
        f"  - job_name: app\n    static_configs: [{{targets: [{json.dumps(endpoint.target)}]}}]\n"
    )
    prometheus_factory.start(config, extra_args=["--rules.alert.resend-delay=1s"])

    firing = tee.wait_for("firing", deadline=40)
    ingress.ledger.refresh()
    [event] = ingress.ledger.events()
    assert event.type == "sh.keptn.event.production.remediation.triggered"
    assert event.data["problem"]["problemTitle"] == "http_response_time_seconds_main_page_sum"
    assert event.shkeptncontext == incident_context(parse_webhook(json.dumps(firing)).alerts[0])

    slow.set(0)  # the problem goes away: Prometheus resolves the alert, Alertmanager says so
    resolved = tee.wait_for("resolved", deadline=40)
    assert [a["status"] for a in resolved["alerts"]] == ["resolved"]
    assert all(code == 200 for _, code in tee.seen), tee.seen
    ingress.ledger.refresh()
    assert len(ingress.ledger.events()) == 1
