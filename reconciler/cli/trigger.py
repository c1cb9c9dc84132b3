"""`reconciler trigger delivery|sequence` and `reconciler send event`: start work, print the context.

Locally (the default) a command validates against the configuration the running
reconciler accepted — the mirror in `<data_dir>/upstream.git` pinned to the commits
the ledger says were accepted, or `--upstream PATH_OR_URL` — and appends to the
ledger in `--data-dir` itself; the ledger's compare-and-swap makes that safe next to
a running `reconciler run`. With `--api URL` it posts to a running reconciler's HTTP
API instead. Either way a refused event prints one line saying why and records
nothing; an accepted one prints its shkeptncontext (stdout, so
`ctx=$(reconciler trigger delivery ...)` works) or, with `-o json`, the receipt.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from reconciler.base.clock import utcnow
from reconciler.base.ids import random_id
from reconciler.base.redact import redact, register_secrets
from reconciler.cli.common import echo_json, make_settings, open_ledger, output_option, settings_options
from reconciler.core.admission import API_SOURCE, Rejected
from reconciler.core.commands import CommandError, delivery_event, parse_pairs, sequence_event, unfold
from reconciler.core.configsnapshot import ConfigSnapshot
from reconciler.formats.events import EventError, KeptnEvent, parse_event
from reconciler.ingress.client import ApiClient, ApiClientError
from reconciler.ingress.submit import Ingress, NothingToDo
from reconciler.ledger.errors import LedgerError
from reconciler.runtime.observability import configure_logging
from reconciler.settings import Settings
from reconciler.upstream.files import open_files
from reconciler.upstream.records import accepted_pins
from reconciler.upstream.snapshot import snapshot_of

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Where:
    """The options every recording command shares, as one value: where to record and how to print."""

    config_file: Path | None
    data_dir: Path | None
    output: str
    upstream: str | None
    api_url: str | None
    token: str | None = field(default=None, repr=False)


def target_options(func: F) -> F:
    """Where to record: the local data dir (default), or a running reconciler's API.

    The command receives these options as one `where: Where` keyword argument, so
    each command's signature lists only its own options.
    """

    @functools.wraps(func)
    def with_where(*args: Any, **kwargs: Any) -> Any:
        where = Where(**{f.name: kwargs.pop(f.name) for f in fields(Where)})
        return func(*args, where=where, **kwargs)

    command: Callable[..., Any] = with_where
    command = click.option(
        "--token",
        envvar="RECONCILER_API_TOKEN",
        default=None,
        help="API token for --api (env RECONCILER_API_TOKEN; prefer the env var: flags show in `ps`).",
    )(command)
    command = click.option("--api", "api_url", default=None, help="Post to this reconciler API URL instead.")(
        command
    )
    command = click.option(
        "--upstream",
        default=None,
        help="Validate against this upstream (git repo path, branch directory, or URL) "
        "instead of the mirror in the data directory.",
    )(command)
    command = output_option(command)
    return cast(F, settings_options(command))


@dataclass
class Target:
    """The open destination of one command: a local ingress, or an API client."""

    settings: Settings
    ingress: Ingress | None = None
    view: ConfigSnapshot | None = None
    client: ApiClient | None = None
    remote_status: dict[str, Any] | None = None
    scratch: tempfile.TemporaryDirectory[str] | None = None
    """Where an --upstream URL was cloned; removed on close."""

    @property
    def project(self) -> str:
        if self.ingress is not None:
            return self.ingress.project
        return str((self.remote_status or {}).get("project") or self.settings.project)

    def first_stage(self) -> str | None:
        if self.view is not None:
            return self.view.first_stage()
        stages = (self.remote_status or {}).get("stages") or []
        return str(stages[0]) if stages else None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.scratch is not None:
            self.scratch.cleanup()


def open_target(where: Where, *, need_status: bool = False) -> Target:
    upstream, api_url, token = where.upstream, where.api_url, where.token
    settings = make_settings(where.config_file, data_dir=where.data_dir)
    register_secrets([*settings.secret_values(), token])
    # stdout carries only the result (the context); the log stays on stderr and quiet
    configure_logging(settings.log_format, "warning", sys.stderr)
    if api_url:
        client = ApiClient(api_url, token or settings.secret("api_token"))
        target = Target(settings, client=client)
        if need_status:
            target.remote_status = client.status()
        return target
    pins: dict[str, str] = {}
    scratch: tempfile.TemporaryDirectory[str] | None = None
    if upstream:
        if "://" in upstream and not upstream.startswith("file://"):
            scratch = tempfile.TemporaryDirectory(prefix="reconciler-upstream-")
        try:
            files = open_files(upstream, scratch=Path(scratch.name) if scratch else None)
        except Exception as exc:  # OSError for a path, pygit2.GitError for an unreachable URL
            if scratch is not None:
                scratch.cleanup()
            raise click.ClickException(redact(f"cannot read upstream {upstream}: {exc}")) from None
    else:
        mirror = settings.data_dir / "upstream.git"
        if not mirror.exists():
            raise click.ClickException(
                f"no upstream mirror at {mirror}: pass --data-dir of a reconciler that has polled its "
                "upstream, or --upstream PATH_OR_URL"
            )
        files = open_files(mirror)
    if not settings.data_dir.exists():
        raise click.ClickException(f"data directory {settings.data_dir} does not exist")
    ledger = open_ledger(settings, must_exist=False)
    if not upstream:
        pins = accepted_pins(ledger.events())
    view = snapshot_of(files, settings.main_branch, pins=pins)
    project = view.project or settings.project or ""
    ingress = Ingress(ledger=ledger, view=view, project=project)
    return Target(settings, ingress=ingress, view=view, scratch=scratch)


def report(receipt: dict[str, Any], output: str, what: str) -> None:
    if output == "json":
        echo_json(receipt)
        return
    note = "" if receipt.get("recorded", True) else " (already recorded)"
    click.echo(f"{what}{note}: shkeptncontext {receipt['keptnContext']}", err=True)
    click.echo(receipt["keptnContext"])


def run_command(action: Callable[[], None]) -> None:
    """Every refusal becomes `error: <one line>` on stderr and exit status 1; nothing is recorded."""
    try:
        action()
    except (Rejected, EventError, CommandError, ApiClientError, NothingToDo) as exc:
        click.echo(f"error: {redact(str(exc))}", err=True)
        sys.exit(1)
    except LedgerError as exc:  # a damaged, full or refused ledger: what to do, not a traceback
        click.echo(f"error: nothing recorded: {redact(str(exc))}", err=True)
        sys.exit(1)


def _post(target: Target, event: KeptnEvent) -> dict[str, Any]:
    assert target.client is not None
    body = target.client.post_event(event.to_json().encode())
    return {
        "keptnContext": body["keptnContext"],
        "id": body.get("id", ""),
        "type": event.type,
        "recorded": True,
    }


@click.group()
def trigger() -> None:
    """Start a sequence: a delivery of a new image, or any sequence by name."""


@trigger.command("delivery")
@click.option("--project", default=None, help="Project (default: metadata.yaml projectName).")
@click.option("--stage", default=None, help="Stage (default: the shipyard's first stage).")
@click.option("--service", required=True)
@click.option("--image", required=True, help="Image, used verbatim (no :latest is added).")
@click.option("--sequence", default="delivery", show_default=True)
@click.option("--labels", multiple=True, help="k=v[,k=v...]; repeatable.")
@click.option("--values", "values_", multiple=True, help="a.b=v[,...]: nested configurationChange.values.")
@target_options
def trigger_delivery(
    project: str | None,
    stage: str | None,
    service: str,
    image: str,
    sequence: str,
    labels: tuple[str, ...],
    values_: tuple[str, ...],
    where: Where,
) -> None:
    """Deliver IMAGE of SERVICE: `sh.keptn.event.<stage>.<sequence>.triggered` as `keptn trigger delivery`."""

    def act() -> None:
        target = open_target(where, need_status=True)
        try:
            stage_name = stage or target.first_stage()
            if not stage_name:
                raise CommandError("--stage not given and the accepted shipyard has no stages")
            event = delivery_event(
                project=project or target.project,
                stage=stage_name,
                service=service,
                image=image,
                sequence=sequence,
                labels=dict(parse_pairs(labels, option="--labels")),
                values=unfold(parse_pairs(values_, option="--values"), option="--values"),
                event_id=random_id(),
                context=random_id(),
                now=utcnow(),
            )
            receipt = _record(target, event)
            report(receipt, where.output, f"{stage_name}.{sequence} of {service} triggered")
        finally:
            target.close()

    run_command(act)


@trigger.command("sequence")
@click.argument("sequence")
@click.option("--project", default=None, help="Project (default: metadata.yaml projectName).")
@click.option("--stage", required=True)
@click.option("--service", required=True)
@click.option("--labels", multiple=True, help="k=v[,k=v...]; repeatable.")
@click.option("--data", "data_", multiple=True, help="a.b=v[,...]: nested fields of the event's data.")
@click.option("--context", default=None, help="Join an existing shkeptncontext instead of starting one.")
@target_options
def trigger_sequence(
    sequence: str,
    project: str | None,
    stage: str,
    service: str,
    labels: tuple[str, ...],
    data_: tuple[str, ...],
    context: str | None,
    where: Where,
) -> None:
    """Trigger SEQUENCE in a stage for a service, as `keptn trigger sequence`."""

    def act() -> None:
        target = open_target(where, need_status=project is None)
        try:
            extra = unfold(parse_pairs(data_, option="--data"), option="--data")
            for reserved in ("project", "stage", "service", "labels"):
                if reserved in extra:
                    raise CommandError(f"--data {reserved}=...: use --{reserved} instead")
            event = sequence_event(
                project=project or target.project,
                stage=stage,
                service=service,
                sequence=sequence,
                labels=dict(parse_pairs(labels, option="--labels")),
                data=extra,
                event_id=random_id(),
                context=context or random_id(),
                now=utcnow(),
            )
            report(_record(target, event), where.output, f"{stage}.{sequence} of {service} triggered")
        finally:
            target.close()

    run_command(act)


def _record(target: Target, event: KeptnEvent) -> dict[str, Any]:
    if target.client is not None:
        return _post(target, event)
    assert target.ingress is not None
    return target.ingress.record(event, origin="cli").as_dict()


@click.group()
def send() -> None:
    """Send a Keptn CloudEvent."""


@send.command("event")
@click.option(
    "-f",
    "--file",
    "file_",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="JSON file holding one CloudEvent ('-' reads stdin).",
)
@target_options
def send_event(
    file_: Path,
    where: Where,
) -> None:
    """Record any accepted Keptn event (a sequence trigger, or an answer to an open task).

    Stamped as Keptn's API does: a new id and time; the context is kept when it is a
    UUID, derived from it when it is another string, new when absent.
    """

    def act() -> None:
        raw = _read(file_)
        origin = "stdin" if str(file_) == "-" else str(file_)
        parse_event(
            raw, origin=origin, default_source=API_SOURCE
        )  # a malformed file fails before anything is opened
        target = open_target(where)
        try:
            if target.client is not None:
                body = target.client.post_event(raw)
                receipt = {"keptnContext": body["keptnContext"], "id": body.get("id", ""), "recorded": True}
            else:
                assert target.ingress is not None
                receipt = target.ingress.submit_json(raw, origin=origin).as_dict()
            report(receipt, where.output, "event recorded")
        finally:
            target.close()

    run_command(act)


def _read(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EventError(f"{path}: cannot read: {exc.strerror}") from None


def approver_name() -> str:
    """Who approves from this shell: $USER, else the git identity, else 'unknown'."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if user:
        return user
    import pygit2

    try:
        return str(pygit2.Config.get_global_config()["user.name"])
    except (KeyError, OSError, pygit2.GitError):
        return "unknown"
