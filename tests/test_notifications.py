"""Delivery news sent by the running reconciler: real ledgers, real HTTP receivers on 127.0.0.1.

The notifier follows the ledger (`reconciler.runtime.notifier`); these tests record
events in a real ledger (or let the whole app record them), and check what the receivers
got, that a restart resends nothing and drops nothing, and that a dead sink holds up only
itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.webhook_http import DestinationPolicy, RetryPolicy, WebhookSender
from reconciler.app import App
from reconciler.base.clock import utcnow
from reconciler.formats.events import format_time
from reconciler.formats.notifications import NotificationsConfig, load_notifications
from reconciler.runtime import health
from reconciler.runtime.notifier import STATE_FILE, Notifier
from reconciler.ui.commits import CommitIndex
from tests.support.gitserver import UpstreamRepo
from tests.support.notifying import NotifierRig, rig_factory, shop_event
from tests.support.receivers import Answer, Receiver, receiving, silent
from tests.support.running import running_apps
from tests.support.shop import deploy, recording_job, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

WEB = "https://reconciler.example.com"


def notifications(*targets: tuple[str, str, str]) -> str:
    """A notifications.yaml with one target per (name, kind, url) taking every kind of news."""
    lines = ["apiVersion: reconciler/v1", "kind: Notifications", "spec:", "  targets:"]
    for name, kind, url in targets:
        lines += [
            f"    - name: {name}",
            f"      kind: {kind}",
            f"      url: {url}",
            "      events: [sequence.finished, evaluation.failed, approval.waiting, remediation.started,"
            " upstream.rejected]",
        ]
    return "\n".join(lines) + "\n"


event = shop_event


class Rig(NotifierRig):
    """A real ledger and a notifier following it, with its config swappable."""

    def __init__(self, root: Path, config: NotificationsConfig | None, **retry: Any) -> None:
        super().__init__(root)
        self.config = config
        self.retry = {"max_attempts": 2, "backoff_initial": 0.01, "read_timeout": 5.0, **retry}
        self.notifier = self.make()

    def make(self, policy: DestinationPolicy | None = None) -> Notifier:
        return Notifier(
            self.ledger.events,
            lambda: self.config,
            self.root / STATE_FILE,
            sender=WebhookSender(
                policy or DestinationPolicy(allow_hosts=("127.0.0.1",)), RetryPolicy(**self.retry)
            ),
            secrets=lambda name, ref: None,
            web_url=WEB,
            clock=utcnow,
            event_by_id=self.ledger.get,
        )


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    yield from rig_factory(tmp_path, Rig)


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(seen.body) for seen in receiver.seen]


def test_a_failing_evaluation_names_the_failing_slis(rigs: Callable[..., Rig]) -> None:
    with receiving() as receiver:
        rig = rigs(load_notifications(notifications(("chat", "generic", receiver.url + "/hook"))))
        rig.notifier.start()
        results = [
            {
                "displayName": "response_time_p95",
                "status": "fail",
                "value": {"value": 812.5, "success": True},
            },
            {"displayName": "error_rate", "status": "pass", "value": {"value": 0, "success": True}},
            {"displayName": "throughput", "status": "fail", "value": {"value": 3, "success": True}},
        ]
        rig.record(
            event(
                "sh.keptn.event.evaluation.finished",
                result="fail",
                status="succeeded",
                evaluation={"score": 33.3, "result": "fail", "indicatorResults": results},
            ),
            event("sh.keptn.event.deploy.finished", result="pass", status="succeeded"),  # not news
        )
        wait_for(lambda: receiver.seen, what="the evaluation notice", timeout=20)
        rig.notifier.stop()
    [body] = bodies(receiver)
    assert body["kind"] == "evaluation.failed"
    assert body["title"] == "Evaluation failed for web in qa (score 33.3)"
    assert [d.split(":")[0] for d in body["details"]] == ["response_time_p95", "throughput"]
    assert body["links"]["web"].startswith(f"{WEB}/ui/context/")


def test_a_500_is_retried_and_the_notice_arrives_once(rigs: Callable[..., Rig]) -> None:
    with receiving(Answer(500), Answer(200)) as receiver:
        rig = rigs(load_notifications(notifications(("chat", "slack", receiver.url + "/services/x"))))
        rig.notifier.start()
        rig.record(event("sh.keptn.event.qa.delivery.finished", result="pass", status="succeeded"))
        wait_for(lambda: rig.state()["delivered"], what="the delivery's record", timeout=20)
    first, second = receiver.seen
    assert first.header("Idempotency-Key") == second.header("Idempotency-Key")
    assert json.loads(second.body)["text"].startswith("qa.delivery passed for web")
    [record] = rig.state()["delivered"]
    assert (record["outcome"], record["status"], record["attempts"]) == ("sent", 200, 2)
    assert rig.state()["pending"] == []


def test_a_dead_sink_holds_up_only_its_own_news(rigs: Callable[..., Rig]) -> None:
    health.reset()
    with silent() as dead, receiving() as alive:
        rig = rigs(
            load_notifications(
                notifications(("dead", "generic", dead.url + "/x"), ("alive", "generic", alive.url + "/y"))
            ),
            max_attempts=1,
            read_timeout=1.5,
            max_time=1.5,
        )
        rig.notifier.start()
        for n in range(3):
            rig.record(event("sh.keptn.event.qa.delivery.finished", result="pass", status="succeeded", n=n))
        wait_for(lambda: len(alive.seen) == 3, what="the live sink's three notices", timeout=10)
        finished_dead = [d for d in rig.state()["delivered"] if d["target"] == "dead"]
        assert len(finished_dead) < 3  # the live sink did not wait for the dead one
        wait_for(
            lambda: len([d for d in rig.state()["delivered"] if d["target"] == "dead"]) == 3,
            what="the dead sink's deliveries to give up",
            timeout=20,
        )
    assert {d["outcome"] for d in rig.state()["delivered"] if d["target"] == "dead"} == {"failed"}
    problem = health.snapshot()["notifications: dead"]["message"]
    assert "notifications: alive" not in health.snapshot()
    assert "'dead'" in problem and "not sent again" in problem


def test_news_decided_but_not_sent_survives_a_crash_and_is_sent_once(rigs: Callable[..., Rig]) -> None:
    with silent() as hung, receiving() as receiver:
        rig = rigs(load_notifications(notifications(("chat", "generic", hung.url + "/x"))), read_timeout=30)
        rig.notifier.start()
        finished = event("sh.keptn.event.qa.delivery.finished", result="fail", status="succeeded")
        rig.record(finished)
        wait_for(lambda: hung.connections >= 1, what="the send to be in flight")
        assert [p["event"] for p in rig.state()["pending"]] == [finished.id]
        # the process dies here (its thread is abandoned mid-send); a new one starts on the same files
        rig.notifier._stopping.set()
        rig.config = load_notifications(notifications(("chat", "generic", receiver.url + "/x")))
        rig.notifier = rig.make()
        rig.notifier.start()
        wait_for(lambda: receiver.seen, what="the pending notice", timeout=20)
        rig.record(event("sh.keptn.event.deploy.finished", result="pass"))
        wait_for(rig.notifier.idle, what="the notifier to be idle")
    assert [b["eventId"] for b in bodies(receiver)] == [finished.id]


def test_old_news_after_a_long_outage_is_not_sent(rigs: Callable[..., Rig]) -> None:
    with receiving() as receiver:
        rig = rigs(load_notifications(notifications(("chat", "generic", receiver.url + "/x"))))
        rig.notifier.start()
        stale = format_time(utcnow() - timedelta(hours=3))
        rig.record(
            event("sh.keptn.event.qa.delivery.finished", result="fail", time=stale, status="succeeded"),
            event("sh.keptn.event.production.delivery.finished", stage="production", result="pass"),
        )
        wait_for(lambda: receiver.seen, what="the fresh notice", timeout=20)
        wait_for(rig.notifier.idle, what="the notifier to be idle")
    assert [b["stage"] for b in bodies(receiver)] == ["production"]


def test_hostile_event_data_cannot_move_the_request(rigs: Callable[..., Rig]) -> None:
    hostile = "web\r\nX-Injected: 1\r\n<script>alert(1)</script> http://evil.example.com/steal?<!channel>"
    with receiving() as receiver:
        rig = rigs(
            load_notifications(
                notifications(
                    ("slack", "slack", receiver.url + "/services/T0"),
                    ("json", "generic", receiver.url + "/j"),
                )
            )
        )
        rig.notifier.start()
        rig.record(
            event(
                "sh.keptn.event.qa.delivery.finished",
                context="../../evil.example.com/x?y#z",
                service=hostile,
                stage="qa\r\nHost: evil.example.com",
                result="fail",
                message=hostile,
            )
        )
        wait_for(lambda: len(receiver.seen) == 2, what="both notices", timeout=20)
    for seen in receiver.seen:
        assert seen.path in ("/services/T0", "/j")
        assert seen.header("Host") == f"127.0.0.1:{receiver.port}"
        assert seen.header("X-Injected") is None
        assert b"\r" not in seen.body and b"\\r" not in seen.body  # control characters are gone
    slack = next(s for s in receiver.seen if s.path == "/services/T0")
    text = json.dumps(json.loads(slack.body))
    assert "<script>" not in text and "<!channel>" not in text
    assert "&lt;script&gt;" in text and "&lt;!channel&gt;" in text
    generic = next(json.loads(s.body) for s in receiver.seen if s.path == "/j")
    assert generic["links"]["web"] == f"{WEB}/ui/context/..%2F..%2Fevil.example.com%2Fx%3Fy%23z"


def test_a_refused_destination_is_logged_and_shown_as_a_problem(rigs: Callable[..., Rig]) -> None:
    health.reset()
    with receiving() as receiver:
        rig = rigs(load_notifications(notifications(("chat", "generic", receiver.url + "/x"))))
        rig.notifier = rig.make(DestinationPolicy())  # the default: loopback is refused
        rig.notifier.start()
        rig.record(event("sh.keptn.event.qa.delivery.finished", result="pass"))
        wait_for(lambda: rig.state()["delivered"], what="the refusal's record", timeout=20)
    assert receiver.seen == []
    [record] = rig.state()["delivered"]
    assert record["outcome"] == "refused"
    problem = health.snapshot()["notifications: chat"]["message"]
    assert "127.0.0.1" in problem and "loopback" in problem and "webhook_allow_hosts" in problem


# --- the whole reconciler -----------------------------------------------------------------------------

SHIPYARD = shipyard(stage("qa", sequence("delivery", task("deploy"))))


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[[UpstreamRepo], App]]:
    yield from running_apps(
        tmp_path / "data", local_commands=["*"], webhook_allow_hosts=["127.0.0.1"], web_url=WEB
    )


def test_a_finished_sequence_is_notified_once_with_its_result_and_link_and_not_after_a_restart(
    app_factory: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo, tmp_path: Path
) -> None:
    with receiving() as receiver:
        seed_shop(upstream_repo, SHIPYARD, files={"web/job/config.yaml": recording_job(tmp_path / "runs")})
        upstream_repo.commit(
            "main",
            {"notifications.yaml": notifications(("chat", "slack", receiver.url + "/services/T0"))},
            "news",
        )
        app = app_factory(upstream_repo)
        deploy(upstream_repo, "2.0")
        wait_for(lambda: receiver.seen, what="the sequence's notice")
        done = [e for e in app.ledger.events() if e.type == "sh.keptn.event.qa.delivery.finished"]
        wait_for(app.notifier.idle, what="the notifier to be idle")
        [seen] = receiver.seen
        body = json.loads(seen.body)
        assert body["text"].startswith("qa.delivery passed for web")
        blocks = json.dumps(body["blocks"])
        assert f"{WEB}/ui/context/{done[0].shkeptncontext}" in blocks
        position = app.ledger.events().position(done[0].id)
        assert position is not None
        commit = CommitIndex(app.ledger.path, app.ledger.ref_name).commit_of(position, done[0].id)
        assert commit is not None and f"ledger commit `{commit[:12]}`" in blocks
        app.stop(grace=5)

        # while it is down, a broken shipyard is pushed: the restart records the rejection in its
        # first poll, before anything else runs; it is news, the finished sequence is not news again
        upstream_repo.commit("main", {"shipyard.yaml": "apiVersion: [\n"}, "oops")
        again = app_factory(upstream_repo)
        wait_for(lambda: len(receiver.seen) == 2, what="the rejection's notice")
        cycles = again.controller.cycles
        wait_for(lambda: again.controller.cycles >= cycles + 3, what="three control-loop cycles")
        wait_for(again.notifier.idle, what="the notifier to be idle")
        assert len(receiver.seen) == 2
        rejected = json.loads(receiver.seen[1].body)
        assert rejected["text"].startswith("Upstream commit ") and "shipyard.yaml" in json.dumps(rejected)


def test_an_approval_for_a_person_and_a_started_remediation_are_news(rigs: Callable[..., Rig]) -> None:
    with receiving() as receiver:
        rig = rigs(load_notifications(notifications(("chat", "generic", receiver.url + "/x"))))
        rig.notifier.start()
        automatic = event(
            "sh.keptn.event.approval.triggered",
            result="pass",
            approval={"pass": "automatic"},
            stage="production",
        )
        manual = event(
            "sh.keptn.event.approval.triggered",
            result="warning",
            approval={"warning": "manual"},
            stage="production",
        )
        problem = {"problemTitle": "Response time degradation", "problemDetails": "p95 above 600 ms"}
        triggered = event(
            "sh.keptn.event.production.remediation.triggered", stage="production", problem=problem
        )
        started = event(
            "sh.keptn.event.production.remediation.started",
            stage="production",
            context=triggered.shkeptncontext,
        ).model_copy(update={"triggeredid": triggered.id})
        rig.record(automatic, manual, triggered, started)
        wait_for(lambda: len(receiver.seen) == 2, what="two notices", timeout=20)
        wait_for(rig.notifier.idle, what="the notifier to be idle")
    waiting, healing = bodies(receiver)
    assert (waiting["kind"], waiting["eventId"]) == ("approval.waiting", manual.id)
    assert waiting["hint"] == f"reconciler approve {manual.shkeptncontext} --stage production"
    assert healing["kind"] == "remediation.started"
    assert healing["text"] == "Problem: Response time degradation."
    assert healing["details"] == ["p95 above 600 ms"]


def test_a_broken_notifications_file_is_rejected_and_the_last_good_one_reports_it(
    app_factory: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo, tmp_path: Path
) -> None:
    with receiving() as receiver:
        seed_shop(upstream_repo, SHIPYARD, files={"web/job/config.yaml": recording_job(tmp_path / "runs")})
        good = notifications(("chat", "generic", receiver.url + "/x"))
        upstream_repo.commit("main", {"notifications.yaml": good}, "news")
        app = app_factory(upstream_repo)
        served = upstream_repo.tip("main")
        broken = good.replace("url: " + receiver.url + "/x", "url: " + receiver.url + "/{{.env.token}}")
        upstream_repo.commit("main", {"notifications.yaml": broken}, "a secret nobody declared")
        wait_for(lambda: receiver.seen, what="the rejection's notice")
        wait_for(app.notifier.idle, what="the notifier to be idle")
    [body] = bodies(receiver)
    assert receiver.seen[0].path == "/x"  # sent by the last good file
    assert body["kind"] == "upstream.rejected" and body["upstreamCommit"] == upstream_repo.tip("main")
    assert any(
        d.startswith("main:notifications.yaml:") and "secret .env.token is not declared" in d
        for d in body["details"]
    ), body["details"]
    assert app.store.current().commit("main") == served
