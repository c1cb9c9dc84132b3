"""Delivery news after the ledger: notices from recorded events, sent off the control loop, crash-safe.

The notifier follows the ledger, never the control loop: a scanning thread reads the
events recorded since its cursor (whoever recorded them: the engine, an executor, the
poller's `upstream.rejected`, the CLI), makes notices of the ones that are news
(`core.notify.notice_for`) for the targets of the accepted `notifications.yaml`, and hands
them to one sender thread per target. The control loop only kicks it; a slow or dead sink
holds up nothing but its own target's queue.

It also sends Keptn's webhook.yaml notifications (W1/W19 of docs/keptn-differences.md): for
every recorded `sh.keptn.*` event, the `webhooks` finder the app wires (the webhooks the
event sets off that are no task's executor, read at the event's pinned commit) gives the
webhooks to send, and each of their requests becomes one delivery of the target
`webhook <subscriptionID or file#index>` (one queue per webhook, so its requests go out in
order; a failed one drops the rest for that event, as Keptn stopped at the first). The
request is rendered when it is sent (`core.webhookrender`: the event as Keptn passed it,
secrets through `envFrom`), never stored. `sendStarted`/`sendFinished` mean nothing here,
as in Keptn: there is no task to answer. Our own records (`reconciler.*`) never match.

What was notified lives in `<data_dir>/notifications.json`, a file derived from the ledger
(no secrets, no message bodies: event ids, positions and target names; bodies are rebuilt
from the ledger when sent):

- `cursor`: how many ledger events were examined, with the id of the last one (so a
  rewritten ledger is noticed, and a position that no longer holds that event is not trusted);
- `pending`: deliveries decided but not yet finished;
- `delivered`: the latest finished deliveries (sent, failed, refused, expired or dropped).

The cursor moves past an event only in the same write that adds its deliveries to
`pending`, and a delivery leaves `pending` only in the write that records how it ended.
So a restart resends nothing whose end was recorded and drops nothing that was decided:
what is pending is sent, and the events after the cursor are examined again. The one
window left is between a receiver's 2xx and that write (a crash there sends once more,
with the same `Idempotency-Key`, and for CloudEvents the same `id`; a webhook request's key
comes from the event id, the webhook and the request's place). The first start (no
file) begins at the ledger's end: history recorded before notifications is not news.

Bounded: each send makes at most `webhook_max_attempts` attempts (capped backoff, the
`webhook_timeout` per attempt); after that the delivery is recorded as failed and the
board shows it. After a long outage, news older than `MAX_AGE` (an hour, by the event's
time) is not sent but recorded as expired, and each target keeps at most
`MAX_PENDING_PER_TARGET` deliveries waiting (the oldest are dropped, and counted).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from reconciler.adapters.notify_sink import notification_request
from reconciler.adapters.secretdir import DirectorySecrets
from reconciler.adapters.webhook_http import WebhookResult, WebhookSender
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.approval import decision
from reconciler.core.notify import Links, Notice, addressees, may_be_news, notice_for, notification_key
from reconciler.core.webhookrender import (
    RenderedRequest,
    SecretLookup,
    WebhookRenderError,
    idempotency_key,
    render_webhook,
)
from reconciler.formats.events import KeptnEvent
from reconciler.formats.gotime import TimestampError, parse_timestamp
from reconciler.formats.notifications import NotificationsConfig, Target
from reconciler.formats.webhook import Webhook
from reconciler.runtime import health
from reconciler.settings import Settings

log = get_logger("reconciler.notifier")

STATE_FILE = "notifications.json"
PART = "notifications"
"""The health board's part for the notifier itself; each target reports as `notifications: <name>`."""
MAX_AGE = timedelta(hours=1)
MAX_PENDING_PER_TARGET = 50
KEEP_DELIVERED = 200
SCAN_EVERY = 1.0
"""Seconds between looks at the ledger when nobody kicks."""
SAVE_IDLE_EVERY = 5.0
WEBHOOK = "webhook"
"""`Delivery.kind` of a request of a webhook.yaml notification; its target (queue, thread and
health part) is `webhook <subscriptionID or file#index>`, the part a webhook task reports as."""

WebhookFinder = Callable[[KeptnEvent, str | None], Sequence[Webhook]]
"""(event, main commit) -> the webhook.yaml notifications the event sets off (task executors
excluded); the app wires `executors.webhook.notification_webhooks`."""
ResultObserver = Callable[[str, float, int], None]
"""(result, seconds, retried attempts) per webhook request sent: `reconciler_webhook_requests_total`."""
"""Seconds a cursor that moved past no news may wait to be written (examining those events
again after a crash decides nothing again; news is always written at once)."""


class EntryMeta(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...


class LedgerEvents(Protocol):
    """What the notifier reads of the ledger (`Ledger.events()`, a snapshot decoded on access)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> KeptnEvent: ...

    def meta(self, index: int) -> EntryMeta: ...

    def position(self, event_id: str) -> int | None: ...


@dataclass
class Delivery:
    """One notice for one target, as the state file keeps it."""

    key: str
    target: str
    event: str
    position: int
    kind: str
    time: str
    hook: str = ""
    """webhook.yaml notifications: the webhook's identity (subscriptionID or file#index)."""
    request: int = -1
    """... the request's place in the webhook."""
    commit: str = ""
    """... the main commit whose project-level file was read (the same one is read to send)."""
    stage_commit: str = ""
    """... the stage commit read for an event without a `gitcommitid` (the accepted one then)."""


@dataclass
class NotifyState:
    cursor: int = 0
    cursor_event: str | None = None
    pending: list[Delivery] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def load(path: Path) -> NotifyState | None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("notifications_state_unreadable", path=str(path), error=redact(str(exc)))
            return None
        state = NotifyState(cursor=int(raw.get("cursor") or 0), cursor_event=raw.get("cursor_event"))
        for item in raw.get("pending") or []:
            with contextlib.suppress(TypeError, ValueError):
                state.pending.append(Delivery(**item))
        state.delivered = [d for d in raw.get("delivered") or [] if isinstance(d, dict)]
        return state

    def save(self, path: Path) -> None:
        data = {
            "version": 1,
            "cursor": self.cursor,
            "cursor_event": self.cursor_event,
            "pending": [asdict(d) for d in self.pending],
            "delivered": self.delivered[-KEEP_DELIVERED:],
        }
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class Notifier:
    """Follows one ledger and sends its news; `start()` it after the ledger is replayed."""

    def __init__(
        self,
        events: Callable[[], LedgerEvents],
        config: Callable[[], NotificationsConfig | None],
        state_path: Path,
        *,
        sender: WebhookSender,
        secrets: SecretLookup,
        web_url: str | None = None,
        commit_of: Callable[[int, str], str | None] = lambda position, event_id: None,
        clock: Callable[[], datetime],
        event_by_id: Callable[[str], KeptnEvent | None] = lambda event_id: None,
        webhooks: WebhookFinder | None = None,
        main_commit: Callable[[], str | None] = lambda: None,
        stage_commit: Callable[[str], str | None] = lambda stage: None,
        observe: ResultObserver | None = None,
    ) -> None:
        self.events = events
        self.config = config
        self.state_path = state_path
        self.sender = sender
        self.secrets = secrets
        self.web_url = web_url
        self.commit_of = commit_of
        self.clock = clock
        self.event_by_id = event_by_id
        self.webhooks = webhooks
        self.main_commit = main_commit
        self.stage_commit = stage_commit
        self.observe = observe
        self.state = NotifyState()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._kicked = threading.Event()
        self._stopping = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._busy: set[str] = set()
        self._scanner: threading.Thread | None = None
        self._saved_at = 0.0
        self.sent = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        events: Callable[[], LedgerEvents],
        config: Callable[[], NotificationsConfig | None],
        *,
        sender: WebhookSender,
        **kwargs: Any,
    ) -> Notifier:
        """`sender` is the webhook tasks' own (one destination and retry policy from the
        `webhook_*` settings, built by the wiring, as this layer may not import executors)."""
        return cls(
            events,
            config,
            settings.data_dir / STATE_FILE,
            sender=sender,
            secrets=DirectorySecrets(settings.data_dir / "secrets").lookup,
            web_url=settings.web_url,
            **kwargs,
        )

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Notifier:
        self.resume()
        self._scanner = threading.Thread(target=self._scan_loop, name="notify-scan", daemon=True)
        self._scanner.start()
        return self

    def kick(self, *_: object) -> None:
        """Something was recorded: look at the ledger soon (cheap; callable from any loop)."""
        self._kicked.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop scanning and sending; a send in flight is left to finish or time out (its delivery
        stays pending, so the next start sends it)."""
        self._stopping.set()
        self._kicked.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [self._scanner, *self._threads.values()]
        for thread in threads:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._save()  # the cursor as far as it got

    def resume(self) -> None:
        """Load the state file and line its cursor up with the ledger as it is now."""
        events = self.events()
        saved = NotifyState.load(self.state_path)
        with self._lock:
            if saved is None:
                self.state = NotifyState(cursor=len(events), cursor_event=_id_at(events, len(events) - 1))
                self._save()
                return
            self.state = saved
            position = self._position(events, saved.cursor, saved.cursor_event)
            if position is None:
                log.error(
                    "notifications_cursor_lost",
                    reason="the ledger no longer holds the last event examined; starting at its end",
                )
                position = len(events)
            self.state.cursor = position
            self.state.cursor_event = _id_at(events, position - 1)
            kept = []
            for item in saved.pending:
                found = self._position(events, item.position + 1, item.event)
                if found is not None:
                    item.position = found - 1
                    kept.append(item)
            self.state.pending = kept
            self._save()
            if kept:
                log.info("notifications_resumed", pending=len(kept), cursor=position)
            self._wake.notify_all()
        for target in {d.target for d in kept}:
            self._ensure_worker(target)

    # -- scanning ------------------------------------------------------------------------------------

    def _scan_loop(self) -> None:
        while not self._stopping.is_set():
            self._kicked.wait(SCAN_EVERY)
            self._kicked.clear()
            if self._stopping.is_set():
                return
            try:
                self.scan()
            except Exception as exc:  # the ledger unreadable for a moment: logged, tried again
                log.warning("notifications_scan_failed", error=redact(f"{type(exc).__name__}: {exc}"))

    def scan(self) -> int:
        """Examine the events after the cursor; returns how many deliveries were decided."""
        events = self.events()
        config = self.config()
        end = len(events)
        with self._lock:
            start = self.state.cursor
        if start >= end:
            return 0
        decided: list[Delivery] = []
        expired = 0
        now = self.clock()
        targets = config is not None and bool(config.targets)
        main = self.main_commit() if self.webhooks is not None else None
        for position in range(start, end):
            event_type = events.meta(position).type
            news = targets and may_be_news(event_type)
            hooked = self.webhooks is not None and event_type.startswith("sh.keptn.")
            if not news and not hooked:
                continue
            try:
                event = events[position]
                hooks = self._webhook_deliveries(event, position, main) if hooked else []
                notice = self._notice(event, position, config) if news and config is not None else None
            except Exception as exc:  # an event that cannot be read is skipped, not retried forever
                log.warning(
                    "notification_skipped", position=position, error=redact(f"{type(exc).__name__}: {exc}")
                )
                continue
            if hooks and _too_old(event.time, now):
                expired += len(hooks)
            else:
                decided.extend(hooks)
            if notice is None or config is None:
                continue
            for target in addressees(notice, config):
                if _too_old(event.time, now):
                    expired += 1
                    continue
                decided.append(
                    Delivery(
                        notification_key(notice, target),
                        target.name,
                        event.id,
                        position,
                        str(notice.kind),
                        event.time,
                    )
                )
        with self._lock:
            known = {d.key for d in self.state.pending} | {str(d.get("key")) for d in self.state.delivered}
            fresh = [d for d in decided if d.key not in known]
            self.state.pending.extend(fresh)
            self._bound_pending()
            self.state.cursor = end
            self.state.cursor_event = _id_at(events, end - 1)
            if fresh or time.monotonic() - self._saved_at >= SAVE_IDLE_EVERY:
                self._save()
            self._wake.notify_all()
        if expired:
            log.warning("notifications_expired", count=expired, older_than=str(MAX_AGE))
        for name in {d.target for d in fresh}:
            self._ensure_worker(name)
        return len(fresh)

    def _webhook_deliveries(self, event: KeptnEvent, position: int, main: str | None) -> list[Delivery]:
        """One delivery per request of each webhook.yaml notification `event` sets off, in order
        (one target per webhook, so its requests go out one after the other)."""
        if self.webhooks is None:
            return []
        out: list[Delivery] = []
        pin = "" if event.gitcommitid or not event.stage else self.stage_commit(event.stage) or ""
        for hook in self.webhooks(_pinned(event, pin), main):
            for spec in hook.requests:
                out.append(
                    Delivery(
                        idempotency_key(event, hook, spec.index),
                        _webhook_target(hook.identity),
                        event.id,
                        position,
                        WEBHOOK,
                        event.time,
                        hook=hook.identity,
                        request=spec.index,
                        commit=main or "",
                        stage_commit=pin,
                    )
                )
        return out

    def _notice(self, event: KeptnEvent, position: int, config: NotificationsConfig) -> Notice | None:
        links = Links(web=self.web_url or config.web, commit=config.commit)
        trigger = None
        if event.triggeredid and event.type.endswith("remediation.started"):
            trigger = self.event_by_id(event.triggeredid)
        return notice_for(
            event,
            links=links,
            ledger_commit=self.commit_of(position, event.id),
            approval_waits=lambda data: decision(data) is None,
            trigger=trigger,
        )

    def _bound_pending(self) -> None:
        by_target: dict[str, list[Delivery]] = {}
        for item in self.state.pending:
            by_target.setdefault(item.target, []).append(item)
        dropped: list[Delivery] = []
        for items in by_target.values():
            if len(items) > MAX_PENDING_PER_TARGET:
                dropped.extend(items[: len(items) - MAX_PENDING_PER_TARGET])
        if not dropped:
            return
        gone = {d.key for d in dropped}
        self.state.pending = [d for d in self.state.pending if d.key not in gone]
        for item in dropped:
            self._record(
                item, "dropped", reason=f"more than {MAX_PENDING_PER_TARGET} waiting for this target"
            )
        log.warning("notifications_dropped", count=len(dropped), keep=MAX_PENDING_PER_TARGET)

    # -- sending -------------------------------------------------------------------------------------

    def _ensure_worker(self, target: str) -> None:
        with self._lock:
            thread = self._threads.get(target)
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(
                target=self._work, args=(target,), name=f"notify-{target[:32]}", daemon=True
            )
            self._threads[target] = thread
        thread.start()

    def _work(self, target: str) -> None:
        while not self._stopping.is_set():
            with self._wake:
                item = next((d for d in self.state.pending if d.target == target), None)
                if item is None:
                    self._wake.wait(2.0)
                    continue
                self._busy.add(item.key)
            try:
                self._deliver(item)
            except Exception as exc:  # never let one delivery end the target's thread
                log.warning(
                    "notification_failed", target=target, error=redact(f"{type(exc).__name__}: {exc}")
                )
                with self._lock:
                    still = any(d.key == item.key for d in self.state.pending)
                if still:
                    self._finish(item, "failed", reason=redact(f"{type(exc).__name__}: {exc}"))
            finally:
                with self._lock:
                    self._busy.discard(item.key)

    def _deliver(self, item: Delivery) -> None:
        if item.kind == WEBHOOK:
            self._deliver_webhook(item)
            return
        config = self.config()
        target = _target(config, item.target)
        if config is None or target is None:
            self._finish(item, "dropped", reason="the target is no longer in notifications.yaml")
            return
        if _too_old(item.time, self.clock()):
            self._finish(item, "expired", reason=f"older than {MAX_AGE}")
            return
        events = self.events()
        event = events[item.position] if item.position < len(events) else None
        if event is None or event.id != item.event:
            self._finish(item, "dropped", reason="the event is no longer in the ledger")
            return
        notice = self._notice(event, item.position, config)
        if notice is None:
            self._finish(item, "dropped", reason="the event is no longer news")
            return
        try:
            request = notification_request(config, target, notice, self.secrets)
        except WebhookRenderError as exc:
            message = f"target {target.name!r}: {redact(str(exc))}"
            health.report(_part(target.name), message, retrying=False)
            log.error("notification_not_rendered", target=target.name, error=message)
            self._finish(item, "failed", reason=message)
            return
        if self._stopping.is_set():
            return
        result = self.sender.send(request)
        self._finish(item, _outcome(result), result=result)
        if result.ok:
            self.sent += 1
            health.clear(_part(target.name))
            log.info(
                "notification_sent",
                target=target.name,
                kind=item.kind,
                event_id=item.event,
                status=result.status_code,
            )
            return
        message = f"target {target.name!r} ({target.kind}): {_describe(result)}"
        health.report(_part(target.name), message, retrying=False)
        if result.result == "refused":
            log.error("notification_refused", target=target.name, error=message)
        else:
            log.warning("notification_failed", target=target.name, error=message, attempts=result.attempts)

    def _deliver_webhook(self, item: Delivery) -> None:
        """One request of a webhook.yaml notification: rendered from the event as Keptn passed it
        (secrets through envFrom), sent under the destination policy; a failure ends the
        webhook's later requests for this event too (Keptn stopped at the first failed one)."""
        if _too_old(item.time, self.clock()):
            self._finish(item, "expired", reason=f"older than {MAX_AGE}")
            return
        events = self.events()
        event = events[item.position] if item.position < len(events) else None
        if event is None or event.id != item.event:
            self._finish(item, "dropped", reason="the event is no longer in the ledger")
            return
        finder = self.webhooks
        hooks = finder(_pinned(event, item.stage_commit), item.commit or None) if finder is not None else ()
        hook = next((h for h in hooks if h.identity == item.hook), None)
        if hook is None:
            self._finish(item, "dropped", reason="the webhook is no longer in webhook.yaml")
            return
        try:
            requests = render_webhook(hook, event, self.secrets)
        except WebhookRenderError as exc:
            message = redact(f"notification for {event.type}: request could not be built: {exc}")
            health.report(item.target, message, retrying=False)
            log.error("webhook_notification_not_rendered", webhook=item.hook, error=message)
            self._finish(item, "failed", reason=message, later="an earlier request could not be built")
            return
        request = next((r for r in requests if r.index == item.request), None)
        if request is None:
            self._finish(item, "dropped", reason="the webhook no longer has this request")
            return
        if self._stopping.is_set():
            return
        result = self.sender.send(request)
        self._observed(result)
        if result.ok:
            self._finish(item, "sent", result=result)
            self.sent += 1
            health.clear(item.target)
            log.info(
                "webhook_notification_sent",
                webhook=item.hook,
                event_type=event.type,
                event_id=item.event,
                request=item.request,
                status=result.status_code,
            )
            return
        message = _webhook_failure(event, request, len(requests), result)
        health.report(item.target, message, retrying=False)
        self._finish(item, _outcome(result), result=result, later="an earlier request failed")
        log.warning("webhook_notification_failed", webhook=item.hook, error=message, attempts=result.attempts)

    def _observed(self, result: WebhookResult) -> None:
        if self.observe is None:
            return
        try:
            label = result.result if result.result in ("success", "refused", "timeout") else "failure"
            self.observe(label, result.duration, len(result.history))
        except Exception as exc:  # metrics never stop a notification
            log.warning("webhook_metrics_failed", error=redact(str(exc)))

    def _finish(
        self,
        item: Delivery,
        outcome: str,
        *,
        result: WebhookResult | None = None,
        reason: str = "",
        later: str = "",
    ) -> None:
        """Record how `item` ended; with `later`, the same webhook's later requests for the same
        event are dropped in the same write, for that reason."""
        with self._lock:
            self.state.pending = [d for d in self.state.pending if d.key != item.key]
            self._record(item, outcome, result=result, reason=reason)
            if later:
                rest = [
                    d
                    for d in self.state.pending
                    if d.kind == WEBHOOK and d.target == item.target and d.event == item.event
                ]
                gone = {d.key for d in rest}
                self.state.pending = [d for d in self.state.pending if d.key not in gone]
                for d in rest:
                    self._record(d, "dropped", reason=later)
            self._save()

    def _record(
        self, item: Delivery, outcome: str, *, result: WebhookResult | None = None, reason: str = ""
    ) -> None:
        entry: dict[str, Any] = {
            "key": item.key,
            "target": item.target,
            "event": item.event,
            "kind": item.kind,
            "outcome": outcome,
            "at": self.clock().isoformat(),
        }
        if result is not None:
            entry.update(status=result.status_code, attempts=result.attempts)
            reason = reason or result.reason
        if reason:
            entry["reason"] = reason
        self.state.delivered.append(entry)
        del self.state.delivered[:-KEEP_DELIVERED]

    def _save(self) -> None:
        try:
            self.state.save(self.state_path)
            self._saved_at = time.monotonic()
        except OSError as exc:
            health.report(PART, f"cannot write {self.state_path.name}: {redact(str(exc))}")
            log.error("notifications_state_not_written", error=redact(str(exc)))

    @staticmethod
    def _position(events: LedgerEvents, count: int, event_id: str | None) -> int | None:
        """`count` when the event at `count - 1` is `event_id` (None: an empty cursor), else where
        that event is now (+1), else None."""
        if event_id is None:
            return 0 if count == 0 else None
        if 0 < count <= len(events) and _id_at(events, count - 1) == event_id:
            return count
        found = events.position(event_id)
        return None if found is None else found + 1

    def idle(self) -> bool:
        """Nothing waits to be examined or sent (tests and the demo wait for this)."""
        with self._lock:
            return not self.state.pending and not self._busy and self.state.cursor >= len(self.events())


def _part(target: str) -> str:
    return f"{PART}: {target[:64]}"


def _pinned(event: KeptnEvent, stage_commit: str) -> KeptnEvent:
    """The event to look webhook files up for: an event without a `gitcommitid` (one posted by
    a tool, say) is read at the stage commit accepted when it was examined, every time."""
    if not stage_commit or event.gitcommitid:
        return event
    return event.model_copy(update={"gitcommitid": stage_commit})


def _webhook_target(identity: str) -> str:
    return f"{WEBHOOK} {identity}"


def _webhook_failure(event: KeptnEvent, request: RenderedRequest, total: int, result: WebhookResult) -> str:
    url = request.masked_url if len(request.masked_url) <= 200 else request.masked_url[:200] + "..."
    what = f"notification for {event.type}: request {request.index + 1} of {total} ({request.method} {url})"
    return redact(request.redact(f"{what}: {_describe(result)}"))


def _id_at(events: LedgerEvents, position: int) -> str | None:
    if position < 0 or position >= len(events):
        return None
    return events.meta(position).id


def _target(config: NotificationsConfig | None, name: str) -> Target | None:
    if config is None:
        return None
    return next((t for t in config.targets if t.name == name), None)


def _too_old(time: str, now: datetime) -> bool:
    try:
        return now - parse_timestamp(time) > MAX_AGE
    except TimestampError:
        return False


def _outcome(result: WebhookResult) -> str:
    if result.ok:
        return "sent"
    return "refused" if result.result == "refused" else "failed"


def _describe(result: WebhookResult) -> str:
    if result.result == "refused":
        return result.reason
    what = f"HTTP {result.status_code}" if result.status_code is not None else result.reason
    return f"{what} after {result.attempts} attempt(s); this notice is not sent again"
