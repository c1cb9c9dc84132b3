"""`reconciler webhook render`: the exact requests a webhook.yaml would send for an event, sending nothing.

Loads the file with the same checks `reconciler validate` will apply, picks the webhooks
the event sets off (the task executor for a `.triggered` task event, every other matching
subscription), and renders their requests with the functions the sender uses, secrets
masked. Secrets come from `--secret NAME=VALUE` (NAME as in `{{.env.NAME}}`) or
`--secrets-dir` (`<dir>/<secret>/<key>`, the data directory's `secrets/` layout); one that
is not given is rendered with a placeholder and noted on stderr, since the output masks it
anyway.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from reconciler.cli.common import whole_event
from reconciler.core.webhookrender import WebhookRenderError, render_webhook, select_webhooks
from reconciler.formats.events import EventError, KeptnEvent, parse_event
from reconciler.formats.problems import ConfigError
from reconciler.formats.webhook import SecretRef, Webhook, load_webhook_config

PLACEHOLDER = "secret-not-given"


def describe(hook: Webhook, executor: bool) -> str:
    """What the webhook does besides its requests, in Keptn's terms."""
    if not executor:
        return "notification: sends its requests and answers nothing"
    started = hook.sends_started
    if hook.sends_finished:
        first = "sends .started, then " if started else ""
        return (
            f"task executor for {hook.task}: {first}runs the requests in order, then sends .finished "
            "(pass when every request answers 2xx, fail otherwise)"
        )
    first = "sends .started, then " if started else ""
    return (
        f"task executor for {hook.task}: {first}runs the requests in order; the receiver sends "
        ".finished through POST /v1/event (a failed request is answered with .finished fail)"
    )


def render_document(
    config_bytes: bytes,
    config_name: str,
    event: KeptnEvent,
    secrets: dict[str, str],
    secrets_dir: Path | None,
    notes: list[str],
) -> dict[str, Any]:
    """The render document; raises ConfigError or WebhookRenderError."""
    from reconciler.adapters.secretdir import DirectorySecrets

    config = load_webhook_config(config_bytes, config_name)
    notes.extend(f"warning: {w}" for w in config.warnings)
    store = DirectorySecrets(secrets_dir) if secrets_dir is not None else None

    def lookup(env_name: str, ref: SecretRef) -> str | None:
        if env_name in secrets:
            return secrets[env_name]
        if store is not None:
            value = store.read(ref.name, ref.key)
            if value is not None:
                return value
        notes.append(
            f"note: secret {ref.name}/{ref.key} ({{{{.env.{env_name}}}}}) not given (--secret "
            f"{env_name}=VALUE or --secrets-dir); rendered with a placeholder, shown as ***"
        )
        return PLACEHOLDER

    selection = select_webhooks([config], event.type)
    chosen = ([(selection.executor, True)] if selection.executor else []) + [
        (hook, False) for hook in selection.notifiers
    ]
    webhooks = []
    for hook, executor in chosen:
        assert hook is not None
        requests = render_webhook(hook, event, lookup)
        entry: dict[str, Any] = {"webhook": hook.index, "type": hook.type}
        if hook.subscription_id:
            entry["subscriptionID"] = hook.subscription_id
        entry["does"] = describe(hook, executor)
        entry["requests"] = [r.display() for r in requests]
        webhooks.append(entry)
    if not webhooks:
        notes.append(f"note: no webhook in {config_name} handles {event.type}")
    return {
        "event": {"type": event.type, "id": event.id, "shkeptncontext": event.shkeptncontext},
        "webhooks": webhooks,
    }


def _secrets(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter("expected NAME=VALUE (NAME as in {{.env.NAME}})", param_hint="--secret")
        out[name] = value
    return out


@click.group()
def webhook() -> None:
    """Inspect what webhook/webhook.yaml does."""


@webhook.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The webhook config, e.g. helloservice/webhook/webhook.yaml",
)
@click.option(
    "--event",
    "event_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CloudEvent as JSON (a .triggered task event, or any event a webhook subscribes to)",
)
@click.option(
    "--secret",
    "secret_values",
    multiple=True,
    metavar="NAME=VALUE",
    help="A secret's value for {{.env.NAME}} (repeatable); shown masked",
)
@click.option(
    "--secrets-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Secrets as <dir>/<secret>/<key> files (the data directory's secrets/ layout)",
)
@click.option("--output", "-o", type=click.Choice(["json", "yaml"]), default="json", show_default=True)
def render(
    config_path: Path,
    event_path: Path,
    secret_values: tuple[str, ...],
    secrets_dir: Path | None,
    output: str,
) -> None:
    """Print the requests WEBHOOK would send for EVENT, secrets masked (nothing is sent)."""
    secrets = _secrets(secret_values)
    from reconciler.base.redact import register_secrets

    register_secrets(secrets.values())
    notes: list[str] = []
    try:
        event = whole_event(parse_event(event_path.read_bytes(), origin=str(event_path)))
        doc = render_document(config_path.read_bytes(), str(config_path), event, secrets, secrets_dir, notes)
    except (ConfigError, EventError, WebhookRenderError) as exc:
        for note in notes:
            click.echo(note, err=True)
        click.echo(str(exc), err=True)
        sys.exit(1)
    for note in notes:
        click.echo(note, err=True)
    if output == "yaml":
        click.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)
    else:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
