"""The webhook task executor: a `webhook/webhook.yaml` entry answers a task, as Keptn's webhook-service did.

For a `<task>.triggered` event the webhook config is read at the three levels Keptn's
resource lookup had (`executors.jobs.resource_levels`: `<service>/webhook/webhook.yaml`
and `webhook/webhook.yaml` on the stage branch at the pinned commit, `webhook/webhook.yaml`
on main); the executor is the webhook whose `type` is exactly that event type, in the most
specific file that has one (`core.webhookrender.select_webhooks`; `subscriptionID` plays
no part in choosing it, there is no Uniform to route by). It sends `.started` unless
`sendStarted: false`, then the requests in order through `adapters.webhook_http` under
the operator's destination policy, secrets read from `<data_dir>/secrets` through
`envFrom`; `.finished` is `pass` when every request answered 2xx, `fail` with the status
code and the receiver's bounded, redacted body otherwise (`WebhookFailed`,
`WebhookRefused`, `WebhookTimeout`, `WebhookInvalid` for a request that cannot be
rendered). With `sendFinished: false` nothing more is sent when the requests succeed: the
receiver answers through `POST /v1/event` with the task's triggeredid, and the engine's
run deadline bounds the wait; a failed request is still answered with `fail`.

Webhooks of other types (or wildcards) are notifications: `notification_webhooks` finds
them for `runtime.notifier`, which sends them off the control loop; they answer nothing.

Crash safety (`formats.webhookrecords`): each attempt is recorded in the ledger before it
is sent and each request's result right after; a re-run never sends a request whose
result is recorded and sends one with an attempt but no result again, with the same
`Idempotency-Key`. Attempts count across restarts against `webhook_max_attempts`.

May import: `reconciler.core`, `reconciler.formats`, `reconciler.adapters`,
`reconciler.executors`, `reconciler.settings`, `reconciler.base`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from reconciler.adapters.secretdir import DirectorySecrets
from reconciler.adapters.webhook_http import DestinationPolicy, RetryPolicy, WebhookResult, WebhookSender
from reconciler.base.crashpoints import crash_point
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.outcomes import (
    STALLED_ANSWERED,
    Failed,
    Outcome,
    PartHealth,
    Stalled,
    Succeeded,
    started_event,
)
from reconciler.core.webhookrender import RenderedRequest, WebhookRenderError, render_webhook, select_webhooks
from reconciler.executors.base import TaskAlreadyFinished, TaskContext, TaskExecutor
from reconciler.executors.jobs import resource_levels
from reconciler.formats.events import KeptnEvent, task_type
from reconciler.formats.problems import ConfigError
from reconciler.formats.webhook import WEBHOOK_FILE, Webhook, WebhookConfig, load_webhook_config
from reconciler.formats.webhookrecords import (
    ANSWER,
    ATTEMPT,
    SOURCE,
    Answer,
    TaskRecords,
    answer_record,
    attempt_record,
    records_of,
)
from reconciler.settings import Settings

FAILED = "WebhookFailed"
REFUSED = "WebhookRefused"
TIMEOUT = "WebhookTimeout"
INVALID = "WebhookInvalid"
NO_WEBHOOK = "NoWebhook"
WAITING = "WaitingForReceiver"
"""`Stalled.reason` with `sendFinished: false`: the receiver answers `.finished` itself."""
SHOWN_URL = 200
BACKOFF_MAX = 8.0

ResultObserver = Callable[[str, float, int], None]
"""(result label, seconds, retried attempts) for each request sent: the metrics' hook."""

_log = get_logger(__name__)


@dataclass(frozen=True)
class WebhookLookup:
    """The webhook configs for an event, most specific first, and where we looked."""

    looked_at: tuple[str, ...]
    configs: tuple[WebhookConfig, ...] = ()
    error: str | None = None
    """The first file that could not be read as a webhook config (its located problems)."""

    def executor(self, event_type: str) -> Webhook | None:
        return select_webhooks(list(self.configs), event_type).executor


@lru_cache(maxsize=64)
def _parse(raw: bytes, where: str) -> WebhookConfig:
    return load_webhook_config(raw, where)


FileReader = Callable[[str, str, str | None], bytes | None]
"""(branch, path, commit or None for the accepted one) -> the file's bytes, None when absent."""


def lookup_webhooks(event: KeptnEvent, ctx: TaskContext) -> WebhookLookup:
    return _lookup(event, ctx.read_file, ctx.settings.main_branch)


def notification_webhooks(
    event: KeptnEvent, read_file: FileReader, main_branch: str, main_commit: str | None
) -> tuple[Webhook, ...]:
    """The webhooks `event` sets off that answer nothing (W1): every matching webhook but a
    task's executor, once per subscriptionID, most specific level first.

    Read where a task's webhook is read (the service and stage files at the event's pinned
    commit), the project file at `main_commit` (the accepted main commit when the event was
    examined), so the same event always finds the same webhooks. A file that cannot be read
    as a webhook config is left out with the levels above it (validation rejected that
    commit; what a valid more specific file says still holds).
    """
    if not event.type.startswith("sh.keptn."):
        return ()  # reconciler.* records (our own webhook attempts and answers) are never news
    found = _lookup(event, read_file, main_branch, main_commit)
    if found.error is not None:
        _log.warning("webhook_notification_config_invalid", event_id=event.id, error=redact(found.error))
    return select_webhooks(list(found.configs), event.type).notifiers


def _lookup(
    event: KeptnEvent, read_file: FileReader, main_branch: str, main_commit: str | None = None
) -> WebhookLookup:
    looked: list[str] = []
    configs: list[WebhookConfig] = []
    for level in resource_levels(event, main_branch, WEBHOOK_FILE):
        looked.append(level.where)
        commit = level.commit
        if commit is None and level.branch == main_branch:
            commit = main_commit
        raw = read_file(level.branch, level.path, commit)
        if raw is None:
            continue
        try:
            configs.append(_parse(raw, f"{level.branch}:{level.path}"))
        except ConfigError as exc:
            return WebhookLookup(tuple(looked), tuple(configs), f"{level.where} is invalid: {exc}")
    return WebhookLookup(tuple(looked), tuple(configs))


def destination_policy(settings: Settings, environ: dict[str, str] | None = None) -> DestinationPolicy:
    """The operator's `webhook_*` settings; the Kubernetes API's own address is denied too."""
    env = os.environ if environ is None else environ
    deny = list(settings.webhook_deny_hosts)
    api_host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    if api_host and api_host not in deny:
        deny.append(api_host)
    return DestinationPolicy(
        allow_hosts=tuple(settings.webhook_allow_hosts),
        allow_private=settings.webhook_allow_private,
        deny_hosts=tuple(deny),
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    timeout = settings.webhook_timeout
    attempts = settings.webhook_max_attempts
    return RetryPolicy(
        max_attempts=attempts,
        backoff_max=BACKOFF_MAX,
        deadline=attempts * (timeout + BACKOFF_MAX),
        connect_timeout=min(5.0, timeout),
        read_timeout=timeout,
        max_time=timeout,
    )


def webhook_sender(settings: Settings) -> WebhookSender:
    """One sender for webhook tasks, notification webhooks and notifications.yaml targets."""
    return WebhookSender(destination_policy(settings), retry_policy(settings))


def metric_label(result: str) -> str:
    """The low-cardinality `result` label of `reconciler_webhook_requests_total`."""
    return {"success": "success", "refused": "refused", "timeout": "timeout"}.get(result, "failure")


CLAIMS_KEPT = 4096
"""Answers of `WebhookExecutor.claims` remembered (one per open task; cleared when full)."""


def _unpinned_reads(event: KeptnEvent, ctx: TaskContext) -> tuple[str, str | None] | None:
    """The accepted commits a lookup for `event` reads where the event pins none: main's (the
    project level) and, without a `gitcommitid`, its stage's. The files at the pinned commit never
    change, so the same event and the same accepted commits give the same answer. None when the
    context does not say (then nothing is remembered)."""
    accepted = getattr(ctx, "accepted", None)
    if not callable(accepted):
        return None
    commits = accepted()
    main = commits.get(ctx.settings.main_branch)
    stage = None if event.gitcommitid else commits.get(event.stage)
    if main is None or (stage is None and not event.gitcommitid):
        return None  # read at a branch tip: it can move without the accepted commits saying so
    return str(main), None if stage is None else str(stage)


class WebhookExecutor(TaskExecutor):
    """Answers task events with the webhooks of webhook/webhook.yaml (source `webhook-service`)."""

    name = SOURCE

    def __init__(
        self,
        sender: WebhookSender | None = None,
        *,
        secrets: DirectorySecrets | None = None,
        observe: ResultObserver | None = None,
    ) -> None:
        """`sender` and `secrets` default to ones built from the context's settings on first use."""
        self._sender = sender
        self._secrets = secrets
        self._observe = observe
        self._lock = threading.Lock()
        self._claims: dict[str, tuple[tuple[str, str | None], bool]] = {}
        """Event id -> (the commits its lookup read unpinned, the answer): see `claims`."""

    def sender(self, settings: Settings) -> WebhookSender:
        with self._lock:
            if self._sender is None:
                self._sender = webhook_sender(settings)
            return self._sender

    def secrets(self, settings: Settings) -> DirectorySecrets:
        with self._lock:
            if self._secrets is None:
                self._secrets = DirectorySecrets(settings.data_dir / "secrets")
            return self._secrets

    # --- claiming --------------------------------------------------------------------------------

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        """Asked at every step for every open task it does not answer: the answer is remembered per
        event and the accepted commits its lookup reads (`_unpinned_reads`), so a step does not read
        and parse up to three webhook files again for each (5 % of the loop's CPU with 50 deliveries
        in flight, scale bench); a new accepted main commit asks again."""
        etype = event.etype
        if etype is None or not etype.is_task or etype.kind != "triggered":
            return False
        where = _unpinned_reads(event, ctx)
        if where is not None:
            with self._lock:
                kept = self._claims.get(event.id)
            if kept is not None and kept[0] == where:
                return kept[1]
        found = lookup_webhooks(event, ctx)
        answer = found.error is None and found.executor(event.type) is not None
        if where is not None:
            with self._lock:
                if len(self._claims) >= CLAIMS_KEPT:
                    self._claims.clear()
                self._claims[event.id] = (where, answer)
        return answer

    def explain_unclaimed(self, event: KeptnEvent, ctx: TaskContext) -> str | None:
        """Why no webhook answers `event`, when a webhook file exists at all (else nothing to add)."""
        found = lookup_webhooks(event, ctx)
        if found.error:
            return f"the webhook config {found.error}"
        if not found.configs:
            return None
        files = ", ".join(c.file for c in found.configs)
        return f"no webhook in {files} has type {event.type}"

    # --- running ---------------------------------------------------------------------------------

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        if _our_finished(ctx, event):
            return Stalled(STALLED_ANSWERED, "the webhook's .finished is recorded")
        found = lookup_webhooks(event, ctx)
        hook = found.executor(event.type) if found.error is None else None
        if hook is None:
            if not started:
                ctx.emit(started_event(event, SOURCE, now=ctx.now()))
            why = found.error or f"no webhook has type {event.type} (looked at {', '.join(found.looked_at)})"
            return Failed(NO_WEBHOOK, redact(f"webhook-service: {why}"))
        if not started and hook.sends_started:
            ctx.emit(started_event(event, SOURCE, now=ctx.now()))
        part = f"webhook {hook.identity}"
        try:
            requests = render_webhook(hook, event, self.secrets(ctx.settings).lookup)
        except WebhookRenderError as exc:
            message = redact(f"webhook request could not be built: {exc}")
            return Failed(INVALID, message, health=(PartHealth(part, message, retrying=False),))
        records = _records(ctx, event)
        responses: list[str] = []
        for request in requests:
            answer = self._request(event, ctx, request, records)
            if not answer.ok:
                message = _failure_message(request, len(requests), answer, ctx.settings)
                health = PartHealth(part, f"task {event.etype.task if event.etype else ''}: {message}", False)
                return Failed(
                    _reason(answer.result),
                    message,
                    log_tail=answer.body,
                    data={"reconciler": {"webhook": _facts(request, answer)}},
                    health=(health,),
                )
            responses.append(answer.body)
        done = PartHealth(part)
        if not hook.sends_finished:
            _log.info("webhook_waiting_for_receiver", task=event.type, context=event.shkeptncontext)
            return Stalled(WAITING, "sendFinished is false: the receiver answers .finished", health=(done,))
        task = event.etype.task if event.etype and event.etype.task else "webhook"
        plural = "s" if len(requests) != 1 else ""
        return Succeeded(
            result="pass",
            message=f"{len(requests)} webhook request{plural} answered 2xx",
            data={task: {"responses": responses}},
            health=(done,),
        )

    def _request(
        self, event: KeptnEvent, ctx: TaskContext, request: RenderedRequest, records: TaskRecords
    ) -> Answer:
        """One request's final answer: the recorded one, or sent now (attempts recorded first)."""
        record = records.request(request.index)
        if record.answer is not None:
            return record.answer  # never sent again, whatever it was
        finished = getattr(ctx, "task_finished", None)
        if finished is not None and finished(event):
            raise TaskAlreadyFinished(f"task {event.type} ({event.id}) ended before its webhook request")
        limit = ctx.settings.webhook_max_attempts
        before = record.attempts
        key = request.idempotency_key
        if before >= limit:
            answer = Answer(
                "interrupted",
                reason=f"{before} attempts were recorded and none was answered (the reconciler stopped "
                "during each); not sent again",
                attempts=before,
            )
        else:
            sender = self.sender(ctx.settings)
            if before:
                _log.info("webhook_resent", task=event.type, request=request.index, key=key, attempts=before)
                sender = _with_attempts(sender, limit - before)

            def record_attempt(n: int) -> None:
                ctx.emit(
                    attempt_record(event, key=key, request=request.index, attempt=before + n, now=ctx.now())
                )
                crash_point("webhook.attempt-recorded")

            result = sender.send(request, before_attempt=record_attempt)
            crash_point("webhook.sent")
            self._observed(result)
            answer = Answer(
                result.result,
                status_code=result.status_code,
                body=result.body,
                reason=result.reason,
                attempts=before + result.attempts,
            )
        ctx.emit(answer_record(event, key=key, request=request.index, answer=answer, now=ctx.now()))
        crash_point("webhook.answered")
        record.answer = answer
        return answer

    def _observed(self, result: WebhookResult) -> None:
        if self._observe is None:
            return
        try:
            self._observe(metric_label(result.result), result.duration, len(result.history))
        except Exception as exc:  # metrics never fail a task
            _log.warning("webhook_metrics_failed", error=redact(str(exc)))


def _with_attempts(sender: WebhookSender, attempts: int) -> WebhookSender:
    return WebhookSender(
        sender.policy,
        replace(sender.retry, max_attempts=max(1, attempts)),
        resolver=sender.resolver,
        sleep=sender.sleep,
        clock=sender.clock,
        verify=sender.verify,
    )


def _records(ctx: TaskContext, event: KeptnEvent) -> TaskRecords:
    events = [*ctx.events(type_=ATTEMPT, context=event.shkeptncontext)]
    events += ctx.events(type_=ANSWER, context=event.shkeptncontext)
    return records_of(event.id, events)


def _our_finished(ctx: TaskContext, event: KeptnEvent) -> bool:
    etype = event.etype
    if etype is None or etype.task is None:
        return False
    answers = ctx.events(type_=task_type(etype.task, "finished"), context=event.shkeptncontext)
    return any(e.triggeredid == event.id and e.source == SOURCE for e in answers)


def _reason(result: str) -> str:
    return {"refused": REFUSED, "timeout": TIMEOUT}.get(result, FAILED)


def _facts(request: RenderedRequest, answer: Answer) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "request": request.index + 1,
        "result": answer.result,
        "attempts": answer.attempts,
    }
    if answer.status_code is not None:
        facts["statusCode"] = answer.status_code
    return facts


def _failure_message(request: RenderedRequest, total: int, answer: Answer, settings: Settings) -> str:
    url = request.masked_url
    if len(url) > SHOWN_URL:
        url = url[:SHOWN_URL] + "..."
    what = f"webhook request {request.index + 1} of {total} ({request.method} {url})"
    tries = f"after {answer.attempts} attempt{'s' if answer.attempts != 1 else ''}"
    if answer.result == "refused":
        text = f"{what} was not sent: {answer.reason}"
    elif answer.result == "timeout":
        text = f"{what} got no answer in time ({answer.reason}; webhook_timeout {settings.webhook_timeout:g}s) {tries}"
    elif answer.result == "interrupted":
        text = f"{what}: {answer.reason}"
    elif answer.status_code is not None:
        text = f"{what} answered HTTP {answer.status_code} {tries}"
    else:
        text = f"{what} failed: {answer.reason} {tries}"
    return redact(request.redact(text))
