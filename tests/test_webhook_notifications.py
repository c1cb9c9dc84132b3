"""webhook.yaml notifications: a webhook whose `type` is not a task's `.triggered` sends its requests
when a matching event is recorded (W1, W19), off the control loop and crash-safe like notifications.yaml.

Real parts: Keptn's Slack sample (tests/data/webhooks/slack-notifications.yaml, its Slack
host pointed at a receiver on 127.0.0.1), a real upstream, ledger and app; the notifier's
own rig (a real ledger, a real HTTP sender) for the crash, failure and hostile-data cases.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.webhook_http import DestinationPolicy, RetryPolicy, WebhookSender
from reconciler.app import App
from reconciler.base.clock import utcnow
from reconciler.core.webhookrender import select_webhooks
from reconciler.executors.webhook import notification_webhooks
from reconciler.formats.events import KeptnEvent
from reconciler.formats.webhook import Webhook, load_webhook_config
from reconciler.formats.webhookrecords import ATTEMPT
from reconciler.runtime import health
from reconciler.runtime.notifier import STATE_FILE, Notifier
from tests.support.gitserver import UpstreamRepo
from tests.support.notifying import NotifierRig, rig_factory, shop_event
from tests.support.receivers import Answer, Receiver, receiving, silent
from tests.support.running import running_apps
from tests.support.shop import deploy, recording_job, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

DATA = Path(__file__).parent / "data" / "webhooks"
SLACK_TOKEN = "T0SLACK/B0SLACK/tok3n5ecret"
BRIDGE = "https://keptn.example.com"


def slack_sample(receiver: Receiver) -> str:
    """Keptn's Slack sample as Bridge saved it, its Slack host swapped for the local receiver."""
    text = (DATA / "slack-notifications.yaml").read_text()
    return text.replace("https://hooks.slack.com/services/", f"{receiver.url}/services/")


def form_payload(body: bytes) -> dict[str, Any]:
    """The Slack sample posts `payload=<json>` as curl's --data sent it (form-encoded, not escaped)."""
    text = body.decode()
    assert text.startswith("payload=")
    return dict(json.loads(text[len("payload=") :]))


def write_slack_secrets(data_dir: Path) -> None:
    secret = data_dir / "secrets" / "slack-webhook"
    secret.mkdir(parents=True, exist_ok=True)
    (secret / "token").write_text(SLACK_TOKEN)
    (secret / "bridgeUrl").write_text(BRIDGE)


# --- the whole reconciler -----------------------------------------------------------------------------

NOTIFY_TASK = (
    "    - type: sh.keptn.event.notify.triggered\n"
    "      sendFinished: true\n"
    "      requests:\n"
    "        - url: {url}/task/{{{{.data.service}}}}\n"
    "          method: POST\n"
    '          payload: \'{{"triggeredid": "{{{{.id}}}}"}}\'\n'
)
REFUSED = (
    "    - type: sh.keptn.event.get-sli.finished\n"
    "      subscriptionID: metadata-probe\n"
    "      requests: [{url: http://169.254.169.254/latest/meta-data/, method: GET}]\n"
)
SHIPYARD = shipyard(
    stage("qa", sequence("delivery", task("deploy"), task("evaluation", timeframe="5m"), task("notify")))
)


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[[UpstreamRepo], App]]:
    yield from running_apps(
        tmp_path / "data",
        prepare=write_slack_secrets,
        local_commands=["*"],
        webhook_allow_hosts=["127.0.0.1"],
        webhook_timeout=3.0,
        webhook_max_attempts=2,
    )


def of_type(app: App, type_: str) -> list[KeptnEvent]:
    app.ledger.refresh()
    return [e for e in app.ledger.events() if e.type == type_]


def test_keptns_slack_sample_is_sent_once_when_an_evaluation_finishes_and_not_after_a_restart(
    app_factory: Callable[[UpstreamRepo], App], upstream_repo: UpstreamRepo, tmp_path: Path
) -> None:
    with receiving() as receiver:
        hooks = slack_sample(receiver) + NOTIFY_TASK.format(url=receiver.url) + REFUSED
        job = recording_job(tmp_path / "runs")
        seed_shop(
            upstream_repo, SHIPYARD, files={"web/job/config.yaml": job, "web/webhook/webhook.yaml": hooks}
        )
        app = app_factory(upstream_repo)
        deploy(upstream_repo, "2.0")
        wait_for(lambda: of_type(app, "sh.keptn.event.qa.delivery.finished"), what="the delivery to finish")
        wait_for(lambda: any(s.path.startswith("/services/") for s in receiver.seen), what="the Slack post")
        wait_for(app.notifier.idle, what="the notifier to be idle")
        [evaluated] = of_type(app, "sh.keptn.event.evaluation.finished")
        slack = [s for s in receiver.seen if s.path.startswith("/services/")]
        tasks = [s for s in receiver.seen if s.path.startswith("/task/")]
        assert len(slack) == 1 and len(tasks) == 1  # the task's webhook answers it, and is not news too
        [post] = slack
        assert post.path == f"/services/{SLACK_TOKEN}"
        payload = form_payload(post.body)
        assert payload["channel"] == "shop--web"
        text = json.dumps(payload["blocks"])
        assert (evaluated.data["result"], evaluated.data["evaluation"]["score"]) == ("pass", 0)
        assert "finished:* pass (0 / 100)" in text  # Go's template prints the float 0.0 as 0
        assert f"{BRIDGE}/bridge/evaluation/{evaluated.shkeptncontext}" in text
        assert post.header("Idempotency-Key")
        # sendStarted/sendFinished on a notification answer nothing (as Keptn): no webhook-service
        # event for the evaluation, no attempt records for notifications
        assert not [
            e for e in app.ledger.events() if e.source == "webhook-service" and "evaluation" in e.type
        ]
        assert all(e.triggeredid != evaluated.id for e in of_type(app, ATTEMPT))
        sample = app.metrics.registry.get_sample_value(
            "reconciler_webhook_requests_total", {"result": "success"}
        )
        assert sample is not None and sample >= 2  # the task's request and the notification
        refused = app.metrics.registry.get_sample_value(
            "reconciler_webhook_requests_total", {"result": "refused"}
        )
        assert refused == 1
        problem = app.status()["problems"]["webhook metadata-probe"]["message"]
        assert "sh.keptn.event.get-sli.finished" in problem and "169.254.169.254" in problem
        app.stop(grace=5)
        state = (tmp_path / "data" / STATE_FILE).read_text()
        assert SLACK_TOKEN not in state and BRIDGE not in state  # ids and names, no secrets, no bodies
        assert not [e for e in app.ledger.events() if SLACK_TOKEN in e.to_json()]

        again = app_factory(upstream_repo)
        cycles = again.controller.cycles
        wait_for(lambda: again.controller.cycles >= cycles + 3, what="three control-loop cycles")
        again.notifier.kick()
        wait_for(again.notifier.idle, what="the notifier to be idle")
        assert len([s for s in receiver.seen if s.path.startswith("/services/")]) == 1
        assert len(receiver.seen) == 2


# --- the notifier on its own --------------------------------------------------------------------------


def event(
    type_: str, *, context: str | None = None, triggeredid: str | None = None, **data: Any
) -> KeptnEvent:
    return shop_event(type_, source="lighthouse-service", context=context, triggeredid=triggeredid, **data)


class Rig(NotifierRig):
    """A real ledger and a notifier following it; its webhook files are what `files` holds."""

    def __init__(self, root: Path, files: dict[str, str], *, attempts: int = 2) -> None:
        super().__init__(root)
        self.files = files
        self.attempts = attempts
        self.results: list[str] = []
        self.secrets = {"token": SLACK_TOKEN, "bridgeUrl": BRIDGE}
        self.stage_pin = "a" * 40
        self.looked: list[tuple[str, str | None]] = []
        self.notifier = self.make()

    def hooks(self, ev: KeptnEvent, main_commit: str | None) -> Sequence[Webhook]:
        self.looked.append((ev.id, ev.gitcommitid))
        configs = [load_webhook_config(text, where) for where, text in self.files.items()]
        return select_webhooks(configs, ev.type).notifiers

    def make(self) -> Notifier:
        return Notifier(
            self.ledger.events,
            lambda: None,  # no notifications.yaml: webhook.yaml notifications need none
            self.root / STATE_FILE,
            sender=WebhookSender(
                DestinationPolicy(allow_hosts=("127.0.0.1",)),
                RetryPolicy(max_attempts=self.attempts, backoff_initial=0.01, read_timeout=30.0),
            ),
            secrets=lambda name, ref: self.secrets.get(ref.key),
            clock=utcnow,
            webhooks=self.hooks,
            main_commit=lambda: "0" * 40,
            stage_commit=lambda stage: self.stage_pin,
            observe=lambda result, seconds, retried: self.results.append(result),
        )


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    yield from rig_factory(tmp_path, Rig)


def hook_yaml(type_: str, url: str, *, sid: str = "", payload: str = '{"kind": "{{.type}}"}') -> str:
    sub = f"      subscriptionID: {sid}\n" if sid else ""
    return (
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nspec:\n  webhooks:\n"
        f"    - type: {type_}\n{sub}"
        "      requests:\n"
        f"        - url: {url}/first/{{{{.data.service}}}}\n          method: POST\n"
        '          headers: [{key: X-Stage, value: "{{.data.stage}}"}]\n'
        f"          payload: '{payload}'\n"
        f"        - url: {url}/second\n          method: POST\n"
    )


def test_a_wildcard_notifies_each_matching_event_in_order_and_never_our_own_records(
    rigs: Callable[..., Rig],
) -> None:
    with receiving() as receiver:
        rig = rigs({"qa:webhook/webhook.yaml": hook_yaml("sh.keptn.event.*.finished", receiver.url)})
        rig.notifier.start()
        trigger = event("sh.keptn.event.deploy.triggered")
        own = event(ATTEMPT, triggeredid=trigger.id)
        finished = event("sh.keptn.event.deploy.finished", triggeredid=trigger.id, result="pass")
        rig.record(trigger, own, finished, event("sh.keptn.event.deploy.started"))
        wait_for(lambda: len(receiver.seen) >= 2, what="both requests", timeout=20)
        wait_for(rig.notifier.idle, what="the notifier to be idle")
    assert [s.path for s in receiver.seen] == ["/first/web", "/second"]
    assert json.loads(receiver.seen[0].body) == {"kind": "sh.keptn.event.deploy.finished"}
    keys = [s.header("Idempotency-Key") for s in receiver.seen]
    assert keys[0] and keys[1] and keys[0] != keys[1]
    assert rig.results == ["success", "success"]


def test_a_notification_queued_before_a_crash_is_sent_once_after_it(rigs: Callable[..., Rig]) -> None:
    with silent() as hung, receiving() as receiver:
        files = {
            "qa:webhook/webhook.yaml": hook_yaml("sh.keptn.event.evaluation.finished", hung.url, sid="s1")
        }
        rig = rigs(files)
        rig.notifier.start()
        evaluated = event("sh.keptn.event.evaluation.finished", result="fail")
        rig.record(evaluated)
        wait_for(lambda: hung.connections >= 1, what="the send to be in flight")
        assert [p["event"] for p in rig.state()["pending"]] == [evaluated.id, evaluated.id]
        # the process dies mid-send; a new one starts on the same files, the receiver now answers
        rig.notifier._stopping.set()
        rig.stage_pin = "b" * 40  # the stage moved on meanwhile: the queued event keeps its commit
        rig.files = {
            "qa:webhook/webhook.yaml": hook_yaml("sh.keptn.event.evaluation.finished", receiver.url, sid="s1")
        }
        rig.notifier = rig.make()
        rig.notifier.start()
        wait_for(lambda: len(receiver.seen) == 2, what="the queued requests", timeout=20)
        wait_for(rig.notifier.idle, what="the notifier to be idle")
        rig.notifier.stop()
        rig.notifier = rig.make()  # a second restart: everything ended is recorded as ended
        rig.notifier.start()
        rig.record(event("sh.keptn.event.deploy.finished", result="pass"))
        wait_for(rig.notifier.idle, what="the notifier to be idle")
    assert [s.path for s in receiver.seen] == ["/first/web", "/second"]
    assert [d["outcome"] for d in rig.state()["delivered"]] == ["sent", "sent"]
    # no gitcommitid on the event: its files are read at the stage commit accepted when it was
    # examined, when deciding and when sending
    assert {pin for ev, pin in rig.looked if ev == evaluated.id} == {"a" * 40}


def test_a_failing_webhook_is_a_problem_and_its_later_requests_are_not_sent(rigs: Callable[..., Rig]) -> None:
    health.reset()
    with receiving(Answer(500, b"down")) as receiver:
        url = receiver.url
        rig = rigs(
            {"main:webhook/webhook.yaml": hook_yaml("sh.keptn.event.evaluation.finished", url, sid="chat")}
        )
        rig.notifier.start()
        rig.record(event("sh.keptn.event.evaluation.finished", result="fail"))
        wait_for(lambda: len(rig.state()["delivered"]) == 2, what="both requests to end", timeout=20)
        seen = [s.path for s in receiver.seen]
    assert seen == ["/first/web", "/first/web"]  # retried up to webhook_max_attempts, then given up
    assert [d["outcome"] for d in rig.state()["delivered"]] == ["failed", "dropped"]
    problem = health.snapshot()["webhook chat"]["message"]
    assert "sh.keptn.event.evaluation.finished" in problem and "HTTP 500" in problem
    assert "request 1 of 2" in problem
    assert rig.results == ["failure"]


def test_hostile_event_data_cannot_move_a_notification(rigs: Callable[..., Rig]) -> None:
    health.reset()
    hostile = "web/../../x?y=1#z"
    with receiving() as receiver:
        rig = rigs({"qa:webhook/webhook.yaml": hook_yaml("sh.keptn.event.evaluation.finished", receiver.url)})
        rig.notifier.start()
        rig.record(
            event("sh.keptn.event.evaluation.finished", service=hostile, stage="qa", result='pass", "x": "1'),
            event("sh.keptn.event.evaluation.finished", stage="qa\r\nX-Injected: 1"),
        )
        wait_for(lambda: len(rig.state()["delivered"]) == 4, what="every request to end", timeout=20)
    first = receiver.seen[0]
    assert urllib.parse.unquote(first.path) == f"/first/{hostile}"
    assert first.path.startswith("/first/") and "/" not in first.path[len("/first/") :]
    assert first.header("Host") == f"127.0.0.1:{receiver.port}"
    assert all(s.header("X-Injected") is None for s in receiver.seen)
    # the CR/LF header could not be rendered: that event's webhook sends nothing and says why
    assert len(receiver.seen) == 2
    assert [d["outcome"] for d in rig.state()["delivered"]][2:] == ["failed", "dropped"]
    assert "X-Stage" in health.snapshot()["webhook qa:webhook/webhook.yaml#0"]["message"]


# --- which webhooks an event sets off -----------------------------------------------------------------


def test_the_files_are_read_at_the_pinned_commits_and_the_most_specific_subscription_wins() -> None:
    reads: list[tuple[str, str, str | None]] = []
    files = {
        ("qa", "web/webhook/webhook.yaml"): hook_yaml(
            "sh.keptn.event.*.finished", "https://a.example", sid="s"
        ),
        ("qa", "webhook/webhook.yaml"): hook_yaml(
            "sh.keptn.event.evaluation.finished", "https://b.example", sid="s"
        )
        + "    - type: sh.keptn.event.evaluation.triggered\n      sendFinished: true\n      requests: [{url: https://t.example/x, method: POST}]\n",
        ("main", "webhook/webhook.yaml"): hook_yaml("sh.keptn.>", "https://c.example"),
    }

    def read(branch: str, path: str, commit: str | None) -> bytes | None:
        reads.append((branch, path, commit))
        text = files.get((branch, path))
        return None if text is None else text.encode()

    finished = event("sh.keptn.event.evaluation.finished").model_copy(update={"gitcommitid": "a" * 40})
    hooks = notification_webhooks(finished, read, "main", "m" * 40)
    assert [h.requests[0].url.text.split("/first")[0] for h in hooks] == [
        "https://a.example",
        "https://c.example",
    ]
    assert reads == [
        ("qa", "web/webhook/webhook.yaml", "a" * 40),
        ("qa", "webhook/webhook.yaml", "a" * 40),
        ("main", "webhook/webhook.yaml", "m" * 40),
    ]
    # the task's executor answers its .triggered and is no notification; the wildcard is
    triggered = event("sh.keptn.event.evaluation.triggered")
    assert [h.type for h in notification_webhooks(triggered, read, "main", None)] == ["sh.keptn.>"]
    reads.clear()
    assert notification_webhooks(event(ATTEMPT), read, "main", None) == ()
    assert reads == []  # our own records are not even looked up
