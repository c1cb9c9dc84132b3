"""`reconciler run`: the reconciler in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.cli.common import make_settings, settings_options
from reconciler.runtime.observability import configure_logging
from reconciler.settings import Settings


@click.command()
@settings_options
@click.option(
    "--upstream",
    default=None,
    help="Upstream repository: path, file://, git://, http(s)://, ssh. Env: RECONCILER_UPSTREAM",
)
@click.option(
    "--poll-interval",
    type=float,
    default=None,
    help="Seconds between polls (default 30). Env: RECONCILER_POLL_INTERVAL",
)
@click.option(
    "--runner",
    type=click.Choice(["auto", "local", "kubernetes"]),
    default=None,
    help="Where jobs run. Env: RECONCILER_RUNNER",
)
@click.option(
    "--api-listen",
    default=None,
    help="host:port of the HTTP API and /metrics ('' disables). Env: RECONCILER_API_LISTEN",
)
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default=None)
@click.option(
    "--ledger-start-over",
    is_flag=True,
    default=False,
    help="Start even though the data directory recorded ledger history that is gone now (the mark is kept "
    "in ledger.tip.abandoned), or the upstream's copy was refused. Once, on purpose: events are lost.",
)
def run(
    config_file: Path | None,
    data_dir: Path | None,
    upstream: str | None,
    poll_interval: float | None,
    runner: str | None,
    api_listen: str | None,
    log_format: str | None,
    ledger_start_over: bool,
) -> None:
    """Poll the upstream, run sequences, record every event in the ledger."""
    settings = make_settings(
        config_file,
        data_dir=data_dir,
        upstream=upstream,
        poll_interval=poll_interval,
        runner=runner,
        api_listen=api_listen,
        log_format=log_format,
    )
    configure_logging(settings.log_format, settings.log_level)
    log = get_logger("reconciler.run")
    if not settings.upstream:
        raise click.UsageError("no upstream: pass --upstream PATH_OR_URL or set RECONCILER_UPSTREAM")
    if upstream is not None:
        _off_the_command_line(upstream, settings, log)

    from reconciler.api.token import api_token_problem
    from reconciler.app import App
    from reconciler.ingress.approvals import approval_policy_problem
    from reconciler.runtime.datalock import DataDirLocked
    from reconciler.runtime.lifecycle import raise_open_files_limit

    problem = api_token_problem(settings)
    if problem is not None:  # before anything starts: an API refusing every request is an outage
        log.error("start_failed", error=problem)
        click.echo(
            f"error: cannot start: {problem}; create it (deploy/: the Secret's api-token key), or set "
            "RECONCILER_API_TOKEN, or unset RECONCILER_API_TOKEN_FILE",
            err=True,
        )
        sys.exit(1)
    problem = approval_policy_problem(settings)
    if problem is not None:  # approvals would silently never count
        log.error("start_failed", error=problem)
        click.echo(f"error: cannot start: {problem}", err=True)
        sys.exit(1)
    if settings.api_listen and settings.secret("api_token") is None:
        log.warning("api_without_token", api=settings.api_listen, effect="every /v1 route answers 401")
    raise_open_files_limit()  # the API's connection cap is derived from it, beside a reserve
    app = App(settings, ledger_start_over=ledger_start_over)
    try:
        app.start()
    except DataDirLocked as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        log.error("start_failed", error=redact(f"{type(exc).__name__}: {exc}"))
        click.echo(f"error: cannot start: {redact(str(exc))}", err=True)
        sys.exit(1)

    from reconciler.runtime.lifecycle import Shutdown

    shutdown = Shutdown(grace=settings.shutdown_grace)
    shutdown.on_request(app.request_stop)  # stop taking work at once, from the signal handler
    shutdown.add("stop, flush and push the ledger", lambda budget: app.stop(grace=budget))
    shutdown.add("release the lease", lambda budget: app.release_lease(budget), reserve=2.0)
    shutdown.add("release the data directory", lambda budget: app.release_lock(), reserve=0.5)
    shutdown.install()
    log.info(
        "reconciler_running",
        upstream=redact(settings.upstream),
        data_dir=str(settings.data_dir),
        api=settings.api_listen or "off",
    )
    app.run_forever()
    report = shutdown.run()
    log.info("reconciler_stopped", clean=report.clean)
    sys.stdout.flush()
    sys.stderr.flush()
    # Executor threads may be waiting on long jobs; those jobs are adopted at the next start.
    os._exit(report.exit_code)


def _off_the_command_line(upstream: str, settings: Settings, log: Any) -> None:
    """A secret in `--upstream` shows in `ps -ef` for as long as the reconciler runs: start
    again at once (same pid, `exec`) with the URL's secret in the environment instead."""
    from reconciler.upstream.credentials import argv_without_secret

    try:
        rewrite = argv_without_secret(list(sys.orig_argv), upstream, settings, executable=sys.executable)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if rewrite is None:
        return
    log.warning(
        "upstream_secret_moved_off_the_command_line",
        to=", ".join(rewrite.env) or "dropped: the upstream token/password settings are given",
        hint="set RECONCILER_UPSTREAM_TOKEN or RECONCILER_UPSTREAM_TOKEN_FILE instead of a URL with credentials",
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, rewrite.argv, {**os.environ, **rewrite.env})
