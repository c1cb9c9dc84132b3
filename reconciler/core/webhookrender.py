"""Which webhooks answer an event, and the exact HTTP requests they would send.

Pure: (webhook config, event, secrets lookup) -> requests. The same functions serve
`reconciler webhook render` and the sender, so what a person reviews is what goes out.

Where each templated value lands decides how it is written:
- URL: event data is percent-encoded completely (it cannot add '/', '?', '#', '&' or '@'),
  a secret keeps URL punctuation (a Slack token is `T.../B.../...`); the format already
  refused event data before the host's first '/', and the rendered URL's scheme, host and
  port are compared with a render that leaves every event value out.
- Headers: values as printed, refused when they hold CR, LF or another control character
  (no header injection); names are literal in the file.
- JSON payload: a value inside a JSON string is JSON-escaped; a value between JSON tokens
  becomes a JSON value (a string is quoted); the result must parse. Any other payload is
  sent as rendered (Keptn's behaviour).

Secrets are read through a lookup, only for names declared in `envFrom`; the masked view
shows `***` wherever one was used. Errors name file, line, field and template text, never a
value.

May import: stdlib, `reconciler.formats`, `reconciler.formats.gotemplate`.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.formats import gotemplate as wt
from reconciler.formats.events import EventType, KeptnEvent, derived_id
from reconciler.formats.problems import Problem
from reconciler.formats.webhook import RequestSpec, SecretRef, TemplateField, Webhook, WebhookConfig

MASK = "***"
MAX_URL = 8 * 1024
MAX_HEADER_VALUE = 8 * 1024
MAX_BODY = 256 * 1024
USER_AGENT = "reconciler-webhook/1"
IDEMPOTENCY_HEADER = "Idempotency-Key"

SecretLookup = Callable[[str, SecretRef], str | None]
"""(envFrom name, secret reference) -> the secret's value, None when it does not exist."""

_URL_SAFE_FOR_SECRETS = ":/?#[]@!$&'()*+,;=%-._~"


class WebhookRenderError(ValueError):
    """A request could not be rendered for this event; `problem` says where in the file and why."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


# --- selection -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The webhooks one event sets off."""

    executor: Webhook | None
    """Answers a task `.triggered` event (explicit `sh.keptn.event.<task>.triggered` type)."""
    notifiers: tuple[Webhook, ...]
    """Send requests and answer nothing (started/finished subscriptions, wildcards)."""


def select_webhooks(configs: Sequence[WebhookConfig | None], event_type: str) -> Selection:
    """Pick the webhooks for `event_type` from the service, stage and project files (in that order).

    The task executor comes from the most specific file that has one for the task. Every
    other matching webhook runs once per subscription: a subscriptionID seen in a more
    specific file hides the same ID further up, as Keptn looked a subscription up service
    first, then stage, then project. Webhooks without an ID all run.
    """
    present = [c for c in configs if c is not None]
    etype = EventType.parse(event_type)
    executor: Webhook | None = None
    if etype is not None and etype.is_task and etype.kind == "triggered":
        for config in present:
            found = [w for w in config.webhooks if w.task == etype.task]
            if found:
                executor = found[0]
                break
    seen: set[str] = set()
    notifiers: list[Webhook] = []
    for config in present:
        for hook in config.webhooks:
            if hook.task is not None or not hook.matches(event_type):
                continue
            if hook.subscription_id:
                if hook.subscription_id in seen:
                    continue
                seen.add(hook.subscription_id)
            notifiers.append(hook)
    return Selection(executor, tuple(notifiers))


# --- rendering --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedRequest:
    """One request exactly as it goes out. `repr` and `display()` show it masked."""

    webhook_index: int
    index: int
    method: str
    url: str = field(repr=False)
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes | None = field(repr=False)
    masked_url: str = ""
    masked_headers: tuple[tuple[str, str], ...] = ()
    masked_body: str | None = None
    idempotency_key: str = ""
    insecure: bool = False
    follow_redirects: bool = False
    proxy: str | None = None
    max_time: float | None = None
    connect_timeout: float | None = None
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    where: Problem | None = field(default=None, repr=False)

    def display(self) -> dict[str, Any]:
        """The request as a person should see it: secrets masked."""
        out: dict[str, Any] = {
            "request": self.index,
            "method": self.method,
            "url": self.masked_url,
            "headers": [f"{k}: {v}" for k, v in self.masked_headers],
        }
        if self.masked_body is not None:
            out["body"] = self.masked_body
        options: dict[str, Any] = {}
        if self.insecure:
            options["insecure"] = True
        if self.follow_redirects:
            options["followRedirects"] = True
        if self.proxy:
            options["proxy"] = self.proxy
        if self.max_time is not None:
            options["maxTime"] = self.max_time
        if self.connect_timeout is not None:
            options["connectTimeout"] = self.connect_timeout
        if options:
            out["options"] = options
        return out

    def redact(self, text: str) -> str:
        """`text` with every secret this request used replaced by ***."""
        return mask_values(text, self.secrets)


def mask_values(text: str, secrets: frozenset[str] | set[str]) -> str:
    """Replace each secret, and its URL-encoded and base64 forms, by ***."""
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < 3:
            continue
        forms.add(secret)
        forms.add(urllib.parse.quote(secret, safe=""))
        forms.add(urllib.parse.quote(secret, safe=_URL_SAFE_FOR_SECRETS))
        forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
        forms.add(base64.b64encode(secret.encode()).decode().rstrip("="))
    for form in sorted(forms, key=len, reverse=True):
        if form and form in text:
            text = text.replace(form, MASK)
    return text


def template_data(event: KeptnEvent, env: dict[str, str]) -> dict[str, Any]:
    """What a template sees: the event's JSON (Keptn's map of the CloudEvent) and `env`."""
    data: dict[str, Any] = json.loads(event.to_json())
    if "datacontenttype" in data:
        data.setdefault("contenttype", data["datacontenttype"])
    data["env"] = wt.SecretMap(env)
    return data


def idempotency_key(event: KeptnEvent, webhook: Webhook, request_index: int) -> str:
    """Stable across restarts and retries: the triggering event, the webhook, the request's place."""
    return derived_id("webhook", event.id, webhook.identity, str(request_index))


def read_secrets(webhook: Webhook, lookup: SecretLookup) -> dict[str, str]:
    """Every `envFrom` secret of the webhook (Keptn read them all before the first request)."""
    out: dict[str, str] = {}
    for entry in webhook.env_from:
        value = lookup(entry.name, entry.secret_ref)
        if value is None:
            raise WebhookRenderError(
                _where(
                    webhook,
                    None,
                    f"secret {entry.secret_ref.name!r} has no key {entry.secret_ref.key!r} (envFrom "
                    f"{entry.name!r}); expected it in the secret store",
                )
            )
        out[entry.name] = value
    return out


def render_webhook(
    webhook: Webhook,
    event: KeptnEvent,
    secrets: SecretLookup,
    *,
    user_agent: str = USER_AGENT,
) -> list[RenderedRequest]:
    """Every request of `webhook` for `event`, in order; raise `WebhookRenderError` on the first failure."""
    env = read_secrets(webhook, secrets)
    data = template_data(event, env)
    values = frozenset(v for v in env.values() if v)
    return [
        render_request(webhook, spec, event, data, values, user_agent=user_agent) for spec in webhook.requests
    ]


def render_request(
    webhook: Webhook,
    spec: RequestSpec,
    event: KeptnEvent,
    data: dict[str, Any],
    secrets: frozenset[str],
    *,
    user_agent: str = USER_AGENT,
) -> RenderedRequest:
    url = _render_url(webhook, spec, data, mask=False)
    masked_url = _render_url(webhook, spec, data, mask=True)
    headers: list[tuple[str, str]] = []
    masked_headers: list[tuple[str, str]] = []
    for header in spec.headers:
        headers.append((header.key, _render_header(webhook, header.value, data, mask=False)))
        masked_headers.append((header.key, _render_header(webhook, header.value, data, mask=True)))
    names = {k.lower() for k, _ in headers}
    if spec.user is not None and "authorization" not in names:
        credentials = _render_header(webhook, spec.user, data, mask=False)
        token = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        masked = _render_header(webhook, spec.user, data, mask=True)
        headers.append(("Authorization", f"Basic {token}"))
        masked_headers.append(
            ("Authorization", f"Basic {MASK}" if masked != credentials else f"Basic {token}")
        )
        names.add("authorization")
    body: bytes | None = None
    masked_body: str | None = None
    if spec.payload is not None:
        text = _render_payload(webhook, spec, data, mask=False)
        masked_body = _render_payload(webhook, spec, data, mask=True)
        body = text.encode("utf-8")
        if "content-type" not in names:
            content_type = "application/json" if spec.json_payload else "application/x-www-form-urlencoded"
            headers.append(("Content-Type", content_type))
            masked_headers.append(("Content-Type", content_type))
    key = idempotency_key(event, webhook, spec.index)
    defaults = [
        ("Accept", "*/*"),
        ("Accept-Encoding", "identity"),
        ("User-Agent", user_agent),
        (IDEMPOTENCY_HEADER, key),
    ]
    for name, value in defaults:
        if name.lower() not in names:
            headers.append((name, value))
            masked_headers.append((name, value))
    return RenderedRequest(
        webhook_index=webhook.index,
        index=spec.index,
        method=spec.method,
        url=url,
        headers=tuple(headers),
        body=body,
        masked_url=mask_values(masked_url, secrets),
        masked_headers=tuple((k, mask_values(v, secrets)) for k, v in masked_headers),
        masked_body=mask_values(masked_body, secrets) if masked_body is not None else None,
        idempotency_key=key,
        insecure=spec.insecure,
        follow_redirects=spec.follow_redirects,
        proxy=spec.proxy,
        max_time=spec.max_time,
        connect_timeout=spec.connect_timeout,
        secrets=secrets,
        where=spec.url.where,
    )


def _where(webhook: Webhook | None, tf: TemplateField | None, message: str) -> Problem:
    if tf is not None and tf.where is not None:
        return tf.where.model_copy(update={"message": message})
    if webhook is None:
        return Problem(file="(template)", message=message)
    return Problem(file=webhook.file, field=f"spec.webhooks[{webhook.index}]", message=message)


def _run(
    webhook: Webhook | None,
    tf: TemplateField,
    data: dict[str, Any],
    emit: Callable[[Any, bool, wt.Action], str],
    limit: int,
) -> str:
    try:
        return tf.template.render(data, emit, max_output=limit)
    except wt.RenderError as exc:
        prefix = "" if tf.what in ("url", "payload") else f"{tf.what}: "
        raise WebhookRenderError(_where(webhook, tf, f"{prefix}{exc}")) from None


def _render_url(webhook: Webhook, spec: RequestSpec, data: dict[str, Any], *, mask: bool) -> str:
    return render_url(spec.url, data, mask=mask, webhook=webhook)


def render_url(tf: TemplateField, data: dict[str, Any], *, mask: bool, webhook: Webhook | None = None) -> str:
    """A templated URL with each value encoded for the URL; checked unless `mask` (the display copy)."""

    def emit(value: Any, secret: bool, action: wt.Action) -> str:
        text = wt.go_print(value)
        if secret:
            return MASK if mask else urllib.parse.quote(text, safe=_URL_SAFE_FOR_SECRETS)
        return urllib.parse.quote(text, safe="")

    def skeleton(value: Any, secret: bool, action: wt.Action) -> str:
        return emit(value, secret, action) if secret else ""

    url = _run(webhook, tf, data, emit, MAX_URL)
    if mask:
        return url
    problem = url_problem(url)
    if problem is None:
        bare = _run(webhook, tf, data, skeleton, MAX_URL)
        got, want = urllib.parse.urlsplit(url), urllib.parse.urlsplit(bare)
        if (got.scheme.lower(), got.netloc.lower()) != (want.scheme.lower(), want.netloc.lower()):
            problem = "event data changed the URL's scheme, host or port; refused"
    if problem is not None:
        raise WebhookRenderError(_where(webhook, tf, f"URL: {problem}"))
    return url


def render_header(tf: TemplateField, data: dict[str, Any], *, mask: bool) -> str:
    """A templated header value, refused when it renders control characters."""
    return _render_header(None, tf, data, mask=mask)


def url_problem(url: str) -> str | None:
    """Why a rendered URL cannot be requested, or None (names no part of the URL: it may hold a secret)."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return "the rendered URL contains spaces or control characters"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return "the rendered URL cannot be parsed (bad host or port)"
    if parts.scheme.lower() not in ("http", "https"):
        return "the rendered URL is not http:// or https://"
    if not parts.hostname:
        return "the rendered URL has no host"
    if port == 0:
        return "the rendered URL has port 0"
    return None


def _render_header(webhook: Webhook | None, tf: TemplateField, data: dict[str, Any], *, mask: bool) -> str:
    def emit(value: Any, secret: bool, action: wt.Action) -> str:
        return MASK if (secret and mask) else wt.go_print(value)

    value = _run(webhook, tf, data, emit, MAX_HEADER_VALUE).strip(" \t")
    bad = next((c for c in value if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F), None)
    if bad is not None:
        name = {"\r": "CR", "\n": "LF", "\x00": "NUL"}.get(bad, f"U+{ord(bad):04X}")
        raise WebhookRenderError(
            _where(
                webhook,
                tf,
                f"{tf.what}: the rendered value contains a control character ({name}); refused so event "
                "data cannot add headers",
            )
        )
    return value


def _render_payload(webhook: Webhook, spec: RequestSpec, data: dict[str, Any], *, mask: bool) -> str:
    tf = spec.payload
    assert tf is not None
    contexts = spec.json_contexts

    def emit(value: Any, secret: bool, action: wt.Action) -> str:
        if secret and mask:
            value = MASK
        if not spec.json_payload:
            return wt.go_print(value)
        if contexts.get(action.offset) == "string":
            return json.dumps(wt.go_print(value), ensure_ascii=False)[1:-1]
        return json.dumps(value, ensure_ascii=False, sort_keys=True)

    text = _run(webhook, tf, data, emit, MAX_BODY)
    if spec.json_payload and not mask:
        try:
            json.loads(text)
        except ValueError:
            raise WebhookRenderError(
                _where(
                    webhook,
                    tf,
                    f"{tf.what}: not valid JSON after templating (the request says it is JSON); check "
                    "the template's quotes, commas and braces",
                )
            ) from None
    return text
