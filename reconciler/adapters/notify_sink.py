"""A notice as the HTTP request each sink expects, ready for `WebhookSender`.

Slack, Teams and generic targets get the JSON body `reconciler.core.notify` builds; a
CloudEvents target gets the notice as a CloudEvent over HTTP, in binary mode (attributes
as `ce-*` headers, the data as the body) or structured mode (one
`application/cloudevents+json` document), encoded by the `cloudevents` library so the
binding rules (header percent-encoding, `time` format) are the SDK's, not ours.

The target's URL and headers may use the notifications file's secrets; the body is passed
through the process-wide redaction once more before it is sent.

May import: cloudevents, stdlib, `reconciler.core`, `reconciler.formats`, `reconciler.base.redact`.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v1.event import CloudEvent

from reconciler.base.redact import redact
from reconciler.core.notify import Notice, cloudevent_parts, message_for, notification_key
from reconciler.core.webhookrender import (
    IDEMPOTENCY_HEADER,
    USER_AGENT,
    RenderedRequest,
    SecretLookup,
    WebhookRenderError,
    mask_values,
    render_header,
    render_url,
)
from reconciler.formats import gotemplate as wt
from reconciler.formats.gotime import parse_timestamp
from reconciler.formats.notifications import NotificationsConfig, Target
from reconciler.formats.problems import Problem


def notification_request(
    config: NotificationsConfig,
    target: Target,
    notice: Notice,
    secrets: SecretLookup,
    *,
    source: str = "reconciler",
    user_agent: str = USER_AGENT,
) -> RenderedRequest:
    """The POST that delivers `notice` to `target`; raises `WebhookRenderError` (a missing secret, a bad URL)."""
    used = {
        r.path[1] for tf in (target.url, *(h.value for h in target.headers)) for r in tf.template.references()
    }
    env: dict[str, str] = {}
    for entry in config.env_from:
        if entry.name not in used:
            continue
        value = secrets(entry.name, entry.secret_ref)
        if value is None:
            raise WebhookRenderError(
                Problem(
                    file=config.file,
                    field=f"spec.targets[{target.index}]",
                    message=f"secret {entry.secret_ref.name!r} has no key {entry.secret_ref.key!r} "
                    f"(envFrom {entry.name!r}); expected it in the secret store",
                )
            )
        env[entry.name] = value
    data: dict[str, Any] = {"env": wt.SecretMap(env)}
    values = frozenset(v for v in env.values() if v)
    url = render_url(target.url, data, mask=False)
    masked_url = mask_values(render_url(target.url, data, mask=True), values)
    headers: list[tuple[str, str]] = []
    if target.kind == "cloudevents":
        attributes, payload = cloudevent_parts(notice, source=source)
        with contextlib.suppress(ValueError):
            attributes["time"] = parse_timestamp(notice.time)
        event = CloudEvent(attributes=attributes, data=json.loads(redact(json.dumps(payload))))
        message = to_structured_event(event) if target.mode == "structured" else to_binary_event(event)
        headers.extend(message.headers.items())
        body = message.body
    else:
        body = redact(json.dumps(message_for(target.kind, notice), ensure_ascii=False)).encode("utf-8")
        headers.append(("Content-Type", "application/json"))
    masked_headers = list(headers)
    for header in target.headers:
        headers.append((header.key, render_header(header.value, data, mask=False)))
        masked_headers.append((header.key, mask_values(render_header(header.value, data, mask=True), values)))
    key = notification_key(notice, target)
    names = {k.lower() for k, _ in headers}
    for name, value in (
        ("User-Agent", user_agent),
        ("Accept-Encoding", "identity"),
        (IDEMPOTENCY_HEADER, key),
    ):
        if name.lower() not in names:
            headers.append((name, value))
            masked_headers.append((name, value))
    return RenderedRequest(
        webhook_index=target.index,
        index=0,
        method="POST",
        url=url,
        headers=tuple(headers),
        body=body,
        masked_url=masked_url,
        masked_headers=tuple(masked_headers),
        masked_body=body.decode("utf-8", errors="replace"),
        idempotency_key=key,
        secrets=values,
        where=target.url.where,
    )
