"""`reconciler job render`: what the job executor would run for an event, without running it.

Prints every action that would run (silent ones first, then the answering one),
each task's image, command, env and staged files, and the exact Kubernetes Job
(and ConfigMap) the runner would create, built by `build_action_specs`, the
function the executor runs. `expanded` shows cmd/args after the kubelet's `$(VAR)`
expansion with the non-Secret env values (Secret-backed values stay as `$(NAME)`).
Env values from the event are marked `literal`: the Job carries them escaped
(`$` doubled), so the kubelet passes them on exactly as sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from reconciler.cli.common import whole_event
from reconciler.core.jobmatching import matching_actions
from reconciler.core.jobspec import (
    JobSpecError,
    build_action_specs,
    files_configmap,
    job_manifest,
)
from reconciler.formats.events import EventError, parse_event
from reconciler.formats.jobconfig import load_jobconfig
from reconciler.formats.problems import ConfigError


def _service_dir(config: Path, explicit: Path | None) -> Path:
    """`<service>/job/config.yaml` -> `<service>/`, unless given."""
    if explicit is not None:
        return explicit
    return config.resolve().parent.parent


def _secret_keys(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values:
        name, sep, keys = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected SECRET=KEY[,KEY...]", param_hint="--secret-keys")
        out[name] = [k for k in keys.split(",") if k]
    return out


def render_actions(
    config_bytes: bytes,
    config_name: str,
    event_bytes: bytes,
    event_name: str,
    service_dir: Path,
    *,
    namespace: str | None,
    secret_keys: dict[str, list[str]],
) -> dict[str, Any]:
    """The render document; raises ConfigError, EventError or JobSpecError."""
    from reconciler.executors.jobs import job_defaults
    from reconciler.settings import load_settings

    config = load_jobconfig(config_bytes, config_name)
    event = whole_event(parse_event(event_bytes, origin=event_name))
    defaults = job_defaults(load_settings(), namespace)
    base = service_dir.resolve()

    def read(source: str) -> bytes | None:
        rel = source.split("/", 1)[1] if "/" in source else ""
        target = (base / rel).resolve()
        if base not in target.parents or not target.is_file():
            return None
        return target.read_bytes()

    listing: list[str] = []
    if base.is_dir():
        listing = sorted(
            f"{event.service}/{p.relative_to(base).as_posix()}" for p in base.rglob("*") if p.is_file()
        )
    actions = []
    for matched in matching_actions(config, event):
        specs = build_action_specs(
            event=event,
            matched=matched,
            defaults=defaults,
            read=read,
            listing=listing,
            secret_keys=secret_keys,
            raw_config=config_bytes,
        )
        tasks = []
        for spec in specs:
            task = spec.render()
            task["job"] = job_manifest(spec)
            cm = files_configmap(spec)
            if cm is not None:
                task["configMap"] = cm
            tasks.append(task)
        actions.append({"name": matched.action.name, "silent": matched.action.silent, "tasks": tasks})
    return {"actions": actions}


@click.group()
def job() -> None:
    """Inspect what job/config.yaml actions do."""


@job.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The job config, e.g. helloservice/job/config.yaml",
)
@click.option(
    "--event",
    "event_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A .triggered CloudEvent as JSON",
)
@click.option("--namespace", default=None, help="Namespace for tasks that name none (default: job_namespace)")
@click.option(
    "--service-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the task's files are (default: the directory above job/)",
)
@click.option(
    "--secret-keys",
    multiple=True,
    metavar="SECRET=KEY[,KEY]",
    help="Keys of a Secret, to render one secretKeyRef per key as the runner does (repeatable)",
)
@click.option("--output", "-o", type=click.Choice(["json", "yaml"]), default="json", show_default=True)
def render(
    config_path: Path,
    event_path: Path,
    namespace: str | None,
    service_dir: Path | None,
    secret_keys: tuple[str, ...],
    output: str,
) -> None:
    """Print the actions, tasks and Kubernetes Jobs that would run for EVENT (nothing is run)."""
    try:
        doc = render_actions(
            config_path.read_bytes(),
            str(config_path),
            event_path.read_bytes(),
            str(event_path),
            _service_dir(config_path, service_dir),
            namespace=namespace,
            secret_keys=_secret_keys(secret_keys),
        )
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except EventError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except JobSpecError as exc:
        click.echo(f"{config_path}: {str(exc).rstrip()}", err=True)
        sys.exit(1)
    if output == "yaml":
        click.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)
    else:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
