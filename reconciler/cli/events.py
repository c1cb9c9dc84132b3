"""`reconciler events`: the ledger, filtered, as a table or as the CloudEvents themselves.

Reads the ledger repository in the data directory directly (works whether or not a
reconciler is running); `git log <ledger branch>` in that repository shows the same
history, one commit per event. A damaged ledger (a truncated object, a vanished or
rewound branch, an unreadable repository) is one line on stderr naming what and where,
and exit status 1: never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reconciler.base.redact import redact
from reconciler.cli.common import make_settings, open_ledger, output_option, settings_options
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.errors import LedgerError
from reconciler.ledger.query import EventFilter, parse_since, select


def _scope(event: KeptnEvent) -> str:
    parts = [event.project or "-", event.stage or "-", event.service or "-"]
    while len(parts) > 1 and parts[-1] == "-":
        parts.pop()
    return "/".join(parts)


def _outcome(event: KeptnEvent) -> str:
    bits = [b for b in (event.status, event.result) if b]
    return "/".join(bits) or "-"


def render_table(events: list[KeptnEvent]) -> str:
    """One line per event: time, type, project/stage/service, short context, status/result, source."""
    header = ("TIME", "TYPE", "PROJECT/STAGE/SERVICE", "CONTEXT", "OUTCOME", "SOURCE")
    rows = [(e.time, e.type, _scope(e), e.shkeptncontext[:8] or "-", _outcome(e), e.source) for e in events]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


@click.command("events")
@settings_options
@click.option("--context", help="Keptn context id (a prefix is enough, e.g. the 8 characters shown).")
@click.option("--type", "type_", help="Event type, exactly or as a glob, e.g. 'sh.keptn.event.qa.*'.")
@click.option("--project")
@click.option("--stage")
@click.option("--service")
@click.option("--since", help="Only events at or after: a duration ago (30m, 2h), RFC 3339, or Unix seconds.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the newest N matching events.")
@output_option
def events(
    config_file: Path | None,
    data_dir: Path | None,
    context: str | None,
    type_: str | None,
    project: str | None,
    stage: str | None,
    service: str | None,
    since: str | None,
    limit: int | None,
    output: str,
) -> None:
    """Show recorded events, oldest first."""
    settings = make_settings(config_file, data_dir=data_dir)
    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    flt = EventFilter(
        context=context, type=type_, project=project, stage=stage, service=service, since=since_at
    )
    try:
        ledger = open_ledger(settings)
        chosen = select(ledger.events(), flt, limit)
    except LedgerError as exc:
        raise click.ClickException(" ".join(redact(str(exc)).split())) from None
    except OSError as exc:  # e.g. a data directory this user may not read
        where = settings.data_dir / "ledger.git"
        raise click.ClickException(f"ledger {where}: cannot read it: {redact(str(exc))}") from None
    if output == "json":
        payload: list[Any] = [json.loads(e.to_json()) for e in chosen]
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    if not chosen:
        click.echo("no matching events", err=True)
        return
    click.echo(render_table(chosen))
