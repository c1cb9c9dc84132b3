"""`reconciler status` and `reconciler get sequences`: what is running, waiting and done.

Both rebuild the engine state from the ledger (the only source of truth), so they
work whether or not a reconciler is running; upstream health and the active runner
come from the running reconciler's `status.json` when there is one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from reconciler.base.clock import utcnow
from reconciler.cli.common import (
    echo_json,
    make_settings,
    open_ledger,
    output_option,
    read_status_file,
    settings_options,
)
from reconciler.core.engine_state import replay
from reconciler.runtime.statusview import pending_approvals, render_table, sequences

WATCH_MAX_SECONDS = 24 * 3600


def _snapshot(settings: Any, **filters: Any) -> dict[str, Any]:
    ledger = open_ledger(settings)
    state = replay(ledger.events())
    rows = sequences(state, utcnow(), **filters)
    return {
        "sequences": rows,
        "approvals": pending_approvals(state),
        "running": read_status_file(settings),
        "events": len(ledger.events()),
    }


def _render_status(snap: dict[str, Any], limit: int) -> str:
    lines = []
    running = snap["running"]
    if running:
        up = running.get("upstream") or {}
        lines.append(
            f"reconciler: {running.get('phase', 'unknown')}  runner: {running.get('runner', '?')}  "
            f"leader: {running.get('leader', '?')}  updated: {running.get('updated_at', '?')}"
        )
        lines.append(
            f"upstream: {up.get('url', '?')}  reachable: {up.get('reachable', '?')}  "
            f"last success: {up.get('last_success') or 'never'}"
        )
        if up.get("last_error"):
            lines.append(f"  last error: {up['last_error']}")
        for branch, sha in sorted((up.get("branches") or {}).items()):
            lines.append(f"  {branch:16} {str(sha)[:12]}")
        for warning in running.get("warnings") or []:
            lines.append(f"WARNING: {warning}")
        for part, problem in sorted((running.get("problems") or {}).items()):
            again = "retrying" if problem.get("retrying") else "not retrying"
            lines.append(
                f"problem: {part}: {problem.get('message', '?')} ({again}; since {problem.get('since', '?')}, "
                f"{problem.get('count', 1)}x)"
            )
    else:
        lines.append("reconciler: not running (no fresh status.json); showing the ledger")
    lines.append(f"ledger: {snap['events']} events")
    if snap["approvals"]:
        lines.append("pending approvals:")
        for a in snap["approvals"]:
            lines.append(
                f"  {a.context}  {a.stage}/{a.service} {a.sequence}  previous result {a.previous_result or '-'}"
                f"  since {a.waiting_since}   -> reconciler approve {a.context} --stage {a.stage}"
            )
    rows = snap["sequences"]
    active = [r for r in rows if r.state not in ("finished", "timedOut", "aborted")]
    done = [r for r in rows if r not in active][-limit:]
    lines.append("")
    lines.append(render_table(active + done))
    return "\n".join(lines)


def _json(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        "sequences": [r.model_dump() for r in snap["sequences"]],
        "pending_approvals": [a.model_dump() for a in snap["approvals"]],
        "reconciler": snap["running"],
        "ledger_events": snap["events"],
    }


def _watch(render: Any, interval: float) -> None:
    deadline = time.monotonic() + WATCH_MAX_SECONDS
    try:
        while time.monotonic() < deadline:
            text = render()
            click.echo("\x1b[2J\x1b[H" + text)
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


@click.command()
@settings_options
@output_option
@click.option("--watch", "-w", is_flag=True, help="Refresh every second until interrupted.")
@click.option("--limit", default=10, show_default=True, help="Finished sequences to show.")
def status(config_file: Path | None, data_dir: Path | None, output: str, watch: bool, limit: int) -> None:
    """Health of the running reconciler, pending approvals, and sequences."""
    settings = make_settings(config_file, data_dir=data_dir)
    if output == "json":
        echo_json(_json(_snapshot(settings)))
        return
    if watch:
        _watch(lambda: _render_status(_snapshot(settings), limit), 1.0)
        return
    click.echo(_render_status(_snapshot(settings), limit))


@click.group()
def get() -> None:
    """List resources (sequences)."""


@get.command("sequences")
@settings_options
@output_option
@click.option("--project", default=None)
@click.option("--stage", default=None)
@click.option("--service", default=None)
@click.option("--context", default=None, help="Only this shkeptncontext.")
@click.option("--watch", "-w", is_flag=True, help="Refresh every second until interrupted.")
def get_sequences(
    config_file: Path | None,
    data_dir: Path | None,
    output: str,
    project: str | None,
    stage: str | None,
    service: str | None,
    context: str | None,
    watch: bool,
) -> None:
    """Sequences with their tasks: state, result, executors and durations."""
    settings = make_settings(config_file, data_dir=data_dir)
    filters = {"project": project, "stage": stage, "service": service, "context": context}

    def render() -> str:
        return render_table(_snapshot(settings, **filters)["sequences"])

    if output == "json":
        echo_json([r.model_dump() for r in _snapshot(settings, **filters)["sequences"]])
    elif watch:
        _watch(render, 1.0)
    else:
        click.echo(render())
