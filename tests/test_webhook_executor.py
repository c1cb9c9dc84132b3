"""The webhook task executor against real HTTP receivers on 127.0.0.1: what it sends, how it answers,
what it records before and after sending, and what a re-run (after a crash) does with the records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.core.outcomes import Failed, Stalled, Succeeded
from reconciler.executors.webhook import SOURCE, WebhookExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.webhookrecords import ANSWER, ATTEMPT
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.context import MemoryContext
from tests.support.receivers import Answer, closed_port, receiving, silent

TOKEN = "wh-tok-7c1d55e0a9b2"
CONTEXT = "6a7b1c2d-0000-4000-8000-00000000c0de"


def webhook_yaml(
    url: str, *, send_finished: str = "true", send_started: str | None = None, extra: str = ""
) -> str:
    started = f"      sendStarted: {send_started}\n" if send_started is not None else ""
    return (
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nspec:\n  webhooks:\n"
        "    - type: sh.keptn.event.e2e-test.triggered\n"
        f"      sendFinished: {send_finished}\n{started}"
        "      envFrom:\n        - name: token\n          secretRef: {name: e2e, key: token}\n"
        "      requests:\n"
        f"        - url: {url}/run/{{{{.data.service}}}}?label={{{{.data.labels.note}}}}\n"
        "          method: POST\n"
        "          headers:\n"
        '            - {key: Authorization, value: "Bearer {{.env.token}}"}\n'
        '            - {key: X-Note, value: "{{.data.labels.note}}"}\n'
        '          payload: \'{"service": "{{.data.service}}", "note": "{{.data.labels.note}}"}\'\n' + extra
    )


def second_request(url: str) -> str:
    return f"        - url: {url}/second\n          method: PUT\n"


def triggered(
    note: str = "hello", task: str = "e2e-test", id_: str = "7d2f0a4e-1111-4000-8000-000000000001"
) -> KeptnEvent:
    return KeptnEvent(
        id=id_,
        source="shipyard-controller",
        type=f"sh.keptn.event.{task}.triggered",
        time="2026-01-01T00:00:00.000Z",
        shkeptncontext=CONTEXT,
        gitcommitid="0" * 40,
        data={"project": "shop", "stage": "qa", "service": "web", "labels": {"note": note}},
    )


def make_context(
    tmp_path: Path, webhook: str, *, level: str = "web/webhook/webhook.yaml", **settings: object
) -> MemoryContext:
    root = tmp_path / "upstream"
    for branch in ("main", "qa"):
        (root / branch).mkdir(parents=True, exist_ok=True)
    target = (
        root
        / ("main" if level == "main" else "qa")
        / ("webhook/webhook.yaml" if level in ("main", "stage") else level)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(webhook)
    data = tmp_path / "data"
    (data / "secrets" / "e2e").mkdir(parents=True, exist_ok=True)
    (data / "secrets" / "e2e" / "token").write_text(TOKEN + "\n")
    values: dict[str, object] = {
        "data_dir": data,
        "webhook_allow_hosts": ["127.0.0.1"],
        "webhook_timeout": 1.0,
        "webhook_max_attempts": 2,
        **settings,
    }
    return MemoryContext(files=DirectoryFiles(root), settings=Settings.model_validate(values))


def run(executor: WebhookExecutor, event: KeptnEvent, ctx: MemoryContext, *, started: bool = False) -> object:
    """What the controller does: claim, run, record the answer."""
    assert executor.claims(event, ctx)
    return executor.run(event, ctx, started=started)


def finished(ctx: MemoryContext) -> list[KeptnEvent]:
    return [e for e in ctx.recorded if e.type.endswith(".finished")]


def test_a_2xx_passes_the_task_with_the_secret_in_the_header_and_event_values_encoded(tmp_path: Path) -> None:
    with receiving(Answer(200, b'{"run": 42}')) as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url))
        outcome = run(WebhookExecutor(), triggered("a b&c"), ctx)
        assert isinstance(outcome, Succeeded)
        [seen] = receiver.seen
    assert seen.header("Authorization") == f"Bearer {TOKEN}"
    assert seen.path == "/run/web?label=a%20b%26c"
    assert json.loads(seen.body) == {"service": "web", "note": "a b&c"}
    assert seen.header("Idempotency-Key")
    assert [e.type for e in ctx.recorded] == [
        "sh.keptn.event.e2e-test.started",
        ATTEMPT,
        ANSWER,
        "sh.keptn.event.e2e-test.finished",
    ]
    [done] = finished(ctx)
    assert done.source == SOURCE and done.result == "pass" and done.status == "succeeded"
    assert done.data["e2e-test"]["responses"] == ['{"run": 42}']
    assert TOKEN not in "".join(e.to_json() for e in ctx.recorded)


def test_500_then_200_is_retried_and_passes_with_one_key(tmp_path: Path) -> None:
    with receiving(Answer(500, b"busy"), Answer(200)) as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url))
        outcome = run(WebhookExecutor(), triggered(), ctx)
        keys = [s.header("Idempotency-Key") for s in receiver.seen]
    assert isinstance(outcome, Succeeded)
    assert len(keys) == 2 and keys[0] == keys[1]
    attempts = [e.data["webhook"]["attempt"] for e in ctx.recorded if e.type == ATTEMPT]
    assert attempts == [1, 2]  # each attempt recorded before it was sent


def test_a_failing_receiver_fails_the_task_with_status_and_a_redacted_bounded_body(tmp_path: Path) -> None:
    body = (f"token {TOKEN} rejected; " + "x" * 10_000).encode()
    with receiving(Answer(503, body)) as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url))
        outcome = run(WebhookExecutor(), triggered(), ctx)
        assert len(receiver.seen) == 2  # webhook_max_attempts
    assert isinstance(outcome, Failed) and outcome.reason == "WebhookFailed"
    [done] = finished(ctx)
    assert done.result == "fail" and done.status == "errored"
    message = done.data["message"]
    assert "HTTP 503" in message and "after 2 attempts" in message
    assert "token *** rejected" in message and TOKEN not in done.to_json()
    assert len(message) < 4000  # bounded body
    assert done.data["reconciler"] == {
        "reason": "WebhookFailed",
        "webhook": {"request": 1, "result": "http-error", "attempts": 2, "statusCode": 503},
    }
    assert outcome.health and outcome.health[0].problem and "HTTP 503" in outcome.health[0].problem


def test_a_4xx_is_not_retried(tmp_path: Path) -> None:
    with receiving(Answer(404, b"no such job")) as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url))
        outcome = run(WebhookExecutor(), triggered(), ctx)
        assert len(receiver.seen) == 1
    assert isinstance(outcome, Failed) and "HTTP 404" in outcome.message and outcome.log_tail == "no such job"


def test_a_receiver_that_never_answers_times_out_within_the_bound(tmp_path: Path) -> None:
    import time

    with silent() as hanging:
        ctx = make_context(tmp_path, webhook_yaml(hanging.url), webhook_timeout=0.5)
        began = time.monotonic()
        outcome = run(WebhookExecutor(), triggered(), ctx)
        took = time.monotonic() - began
    assert isinstance(outcome, Failed) and outcome.reason == "WebhookTimeout"
    assert "no answer in time" in outcome.message or "did not finish" in outcome.message
    assert took < 10, took


def test_a_refused_destination_is_not_contacted_and_says_which_setting_allows_it(tmp_path: Path) -> None:
    with receiving() as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url), webhook_allow_hosts=[])
        outcome = run(WebhookExecutor(), triggered(), ctx)
        assert receiver.seen == []
    assert isinstance(outcome, Failed) and outcome.reason == "WebhookRefused"
    assert "127.0.0.1 is a loopback address" in outcome.message and "webhook_allow_hosts" in outcome.message
    assert [e.type for e in ctx.recorded if e.type.startswith("reconciler.")] == [ANSWER]  # nothing attempted


def test_hostile_event_data_cannot_inject_headers_or_move_the_host(tmp_path: Path) -> None:
    with receiving() as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url))
        outcome = run(WebhookExecutor(), triggered("x\r\nX-Injected: yes"), ctx)
        assert receiver.seen == []  # refused before anything was sent
        assert isinstance(outcome, Failed) and outcome.reason == "WebhookInvalid"
        assert "control character" in outcome.message and "X-Note" in outcome.message

        ctx = make_context(tmp_path / "2", webhook_yaml(receiver.url))
        outcome = run(WebhookExecutor(), triggered("@evil.example.com/#"), ctx)
        assert isinstance(outcome, Succeeded)
        [seen] = receiver.seen
    assert seen.path == "/run/web?label=%40evil.example.com%2F%23"
    assert seen.header("Host") == f"127.0.0.1:{receiver.port}"


def test_a_recorded_answer_is_never_sent_again(tmp_path: Path) -> None:
    """A crash after the 2xx was recorded, before `.finished`: the re-run answers from the record."""
    with receiving() as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url, extra=second_request(receiver.url)))
        executor = WebhookExecutor()
        first = executor.attempt(triggered(), ctx, started=False)  # the .finished is never recorded
        assert isinstance(first, Succeeded) and len(receiver.seen) == 2
        again = run(executor, triggered(), ctx, started=True)
        assert isinstance(again, Succeeded) and len(receiver.seen) == 2
        assert len(finished(ctx)) == 1
        assert isinstance(
            executor.attempt(triggered(), ctx, started=True), Stalled
        )  # answered: nothing to do


def test_an_attempt_without_an_answer_is_resent_with_the_same_key(tmp_path: Path) -> None:
    """A crash after the attempt was recorded (the receiver may have it), before its answer."""
    with receiving() as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url))
        executor = WebhookExecutor()
        run(executor, triggered(), ctx)
        key = receiver.seen[0].header("Idempotency-Key")
        # what the ledger holds after the crash: .started and the attempt, no answer, no .finished
        ctx.recorded = [e for e in ctx.recorded if e.type in ("sh.keptn.event.e2e-test.started", ATTEMPT)]
        ctx._ids = {e.id for e in ctx.recorded}
        outcome = run(executor, triggered(), ctx, started=True)
        assert isinstance(outcome, Succeeded)
        assert [s.header("Idempotency-Key") for s in receiver.seen] == [key, key]
        assert (
            len({s.header("Idempotency-Key") for s in receiver.seen}) == 1
        )  # one effect for a deduping receiver
        assert [e.data["webhook"]["attempt"] for e in ctx.recorded if e.type == ATTEMPT] == [1, 2]


def test_attempts_are_bounded_across_restarts(tmp_path: Path) -> None:
    with receiving() as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url))
        executor = WebhookExecutor()
        run(executor, triggered(), ctx)
        # two attempts recorded, each cut short by a crash
        kept = [e for e in ctx.recorded if e.type in ("sh.keptn.event.e2e-test.started", ATTEMPT)]
        second = kept[-1].model_copy(
            update={
                "id": "attempt-2",
                "data": {**kept[-1].data, "webhook": {**kept[-1].data["webhook"], "attempt": 2}},
            }
        )
        ctx.recorded = [*kept, second]
        ctx._ids = {e.id for e in ctx.recorded}
        outcome = run(executor, triggered(), ctx, started=True)
        assert len(receiver.seen) == 1  # not sent a third time
    assert isinstance(outcome, Failed) and "2 attempts were recorded and none was answered" in outcome.message


def test_send_finished_false_sends_started_and_leaves_the_answer_to_the_receiver(tmp_path: Path) -> None:
    with receiving() as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url, send_finished="false"))
        outcome = run(WebhookExecutor(), triggered(), ctx)
        assert len(receiver.seen) == 1
    assert isinstance(outcome, Stalled) and outcome.reason == "WaitingForReceiver"
    assert [h.problem for h in outcome.health] == [None]  # the webhook works: clears an earlier problem
    assert [e.type for e in ctx.recorded if e.type.startswith("sh.")] == ["sh.keptn.event.e2e-test.started"]


def test_send_finished_false_still_answers_a_failed_request(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, webhook_yaml(f"http://127.0.0.1:{closed_port()}", send_finished="false"))
    outcome = run(WebhookExecutor(), triggered(), ctx)
    assert isinstance(outcome, Failed) and outcome.reason == "WebhookFailed"
    assert [e.result for e in finished(ctx)] == ["fail"]


def test_send_started_false_sends_no_started(tmp_path: Path) -> None:
    with receiving() as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url, send_started="false"))
        run(WebhookExecutor(), triggered(), ctx)
        assert len(receiver.seen) == 1
    assert [e.type for e in ctx.recorded if e.type.startswith("sh.")] == ["sh.keptn.event.e2e-test.finished"]


@pytest.mark.parametrize("level", ["web/webhook/webhook.yaml", "stage", "main"])
def test_the_config_is_found_at_each_level(tmp_path: Path, level: str) -> None:
    with receiving() as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url), level=level)
        assert isinstance(run(WebhookExecutor(), triggered(), ctx), Succeeded)


def test_the_service_level_wins_over_the_project_level(tmp_path: Path) -> None:
    with receiving() as service, receiving() as project:
        ctx = make_context(tmp_path, webhook_yaml(project.url), level="main")
        target = tmp_path / "upstream" / "qa" / "web" / "webhook" / "webhook.yaml"
        target.parent.mkdir(parents=True)
        target.write_text(webhook_yaml(service.url))
        run(WebhookExecutor(), triggered(), ctx)
        assert len(service.seen) == 1 and project.seen == []


def test_other_tasks_and_notification_types_are_not_claimed(tmp_path: Path) -> None:
    notify_only = webhook_yaml("https://example.com").replace(
        "sh.keptn.event.e2e-test.triggered", "sh.keptn.event.e2e-test.>"
    )
    ctx = make_context(tmp_path, notify_only)
    executor = WebhookExecutor()
    assert not executor.claims(triggered(), ctx)
    assert executor.explain_unclaimed(triggered(), ctx) == (
        "no webhook in qa:web/webhook/webhook.yaml has type sh.keptn.event.e2e-test.triggered"
    )
    assert not executor.claims(triggered(task="deploy"), ctx)
    empty = MemoryContext(
        files=DirectoryFiles(tmp_path / "nothing"), settings=Settings(data_dir=tmp_path / "d")
    )
    assert executor.explain_unclaimed(triggered(), empty) is None  # no webhook file: nothing to add


def test_metrics_observer_sees_low_cardinality_results(tmp_path: Path) -> None:
    seen: list[tuple[str, float, int]] = []
    with receiving(Answer(500), Answer(200)) as receiver:
        ctx = make_context(tmp_path, webhook_yaml(receiver.url))
        run(WebhookExecutor(observe=lambda r, s, n: seen.append((r, s, n))), triggered(), ctx)
    assert [(r, n) for r, _, n in seen] == [("success", 1)]


class AcceptedContext(MemoryContext):
    """Reads at whichever commit the test says main is accepted at (as `AppContext.accepted`)."""

    def __init__(self, files: DirectoryFiles, settings: Settings) -> None:
        super().__init__(files=files, settings=settings)
        self.main = "a" * 40

    def accepted(self) -> dict[str, str]:
        return {"main": self.main, "qa": "b" * 40}


def test_a_project_webhook_accepted_on_main_later_is_claimed_by_the_next_ask(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    (root / "main").mkdir(parents=True)
    (root / "qa").mkdir(parents=True)
    ctx = AcceptedContext(DirectoryFiles(root), Settings(data_dir=tmp_path / "d"))
    executor = WebhookExecutor()
    assert not executor.claims(triggered(), ctx)  # no webhook file anywhere
    (root / "main" / "webhook").mkdir()
    (root / "main" / "webhook" / "webhook.yaml").write_text(webhook_yaml("https://example.com"))
    # the file is on main's tip, not at the accepted commit: the answer stands (asked again,
    # remembered for the same accepted commit: a step asks for every open task)
    assert not executor.claims(triggered(), ctx)
    ctx.main = "c" * 40  # main's new commit accepted: the project level is read there
    assert executor.claims(triggered(), ctx)
    assert executor.claims(triggered(id_="7d2f0a4e-1111-4000-8000-000000000002"), ctx)
