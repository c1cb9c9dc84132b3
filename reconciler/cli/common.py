"""Options and openers shared by the CLI commands (settings, data dir, ledger, output format)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import click

from reconciler.base.clock import utcnow
from reconciler.base.ids import random_id
from reconciler.formats.events import IncomingEvent, KeptnEvent, format_time
from reconciler.settings import CONFIG_ENV, Settings, describe_settings_error, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    """`--config` and `--data-dir`, the two settings every command that touches state needs."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Data directory (ledger, mirror). Env: RECONCILER_DATA_DIR. Default: ./.reconciler",
    )(func)
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"YAML config file (lowest precedence). Env: {CONFIG_ENV}",
    )(func)
    return func


@overload
def output_option(func: F) -> F: ...


@overload
def output_option(*, help: str = ...) -> Callable[[F], F]: ...


def output_option(func: F | None = None, *, help: str = "Output format.") -> Any:
    """`-o text|json`; `@output_option` or `@output_option(help=...)`."""

    def wrap(f: F) -> F:
        return click.option(
            "--output",
            "-o",
            type=click.Choice(["text", "json"]),
            default="text",
            show_default=True,
            help=help,
        )(f)

    return wrap(func) if func is not None else wrap


def make_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file)
    try:
        return load_settings(**overrides)
    except Exception as exc:  # pydantic ValidationError: print it as a usage error
        raise click.UsageError(f"invalid settings: {describe_settings_error(exc)}") from None


def open_ledger(settings: Settings, *, must_exist: bool = True) -> Any:
    """The ledger in the data directory (read/append from this process; CAS makes it safe)."""
    from reconciler.ledger.gitledger import Ledger

    path = settings.data_dir / "ledger.git"
    if must_exist and not path.exists():
        raise click.ClickException(
            f"no ledger at {path}: run `reconciler run` first or pass --data-dir of a running reconciler"
        )
    return Ledger.in_data_dir(settings.data_dir, settings.ledger_branch, key_file=settings.ledger_key_file)


def read_status_file(settings: Settings) -> dict[str, Any] | None:
    path = settings.data_dir / "status.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def whole_event(event: IncomingEvent) -> KeptnEvent:
    """An event file for a preview (`job render`, `webhook render`) as the reconciler would see it:
    without an id or time of its own, it gets a new id and the current time."""
    return event.stamped(id_=event.id or random_id(), time=event.time or format_time(utcnow()))
