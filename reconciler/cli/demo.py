"""`reconciler demo`: the tutorial end to end on the embedded default (see reconciler/demo/scenario.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from reconciler.runtime import toolchain


def find_example(explicit: Path | None) -> Path:
    candidates = (
        [explicit]
        if explicit
        else [Path.cwd() / "example-upstream", Path(__file__).resolve().parents[2] / "example-upstream"]
    )
    for candidate in candidates:
        if candidate and (candidate / "main" / "shipyard.yaml").is_file() and (candidate / "_local").is_dir():
            return candidate
    raise click.UsageError(
        "cannot find example-upstream/ (with its _local/ profile): run from a checkout of the repository "
        "or pass --example PATH"
    )


def ensure_tools() -> None:
    """Prometheus and locust must be here; install Debian's prometheus when missing and possible."""
    path = toolchain.search_path()
    wanted = [t for t in toolchain.TOOLS if t.command in ("git", "prometheus", "locust")]
    missing = [f.tool for f in toolchain.check(wanted, path=path) if not f.ok]
    if missing:
        click.echo(f"installing what the demo needs: {', '.join(t.command for t in missing)}")
        plan = toolchain.plan_install(missing, **toolchain.machine_facts(path))
        for command, code in toolchain.run_plan(plan, path):
            click.echo(f"ran: {' '.join(command)} (exit {code})")
        still = [f.tool.command for f in toolchain.check(wanted, path=path) if not f.ok]
        if still:
            hints = "; ".join(plan.blocked) or "run `reconciler doctor --install` as root or with sudo"
            raise click.ClickException(f"missing {', '.join(still)}: {hints}")


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Where the demo's upstream, ledger, Prometheus and job state go.",
)
@click.option("--keep", is_flag=True, help="Leave everything running after the summary, until Ctrl-C.")
@click.option(
    "--example",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The example upstream (default: ./example-upstream).",
)
@click.option("--load-time", default=None, help="Override the local profile's locust run time, e.g. 20s.")
def demo(workdir: Path, keep: bool, example: Path | None, load_time: str | None) -> None:
    """Play the tutorial on this machine: deliver, gate, promote, self-heal — no cluster needed.

    Builds a local upstream from example-upstream/ with its local profile, starts a real
    Prometheus and the reconciler (local runner), commits a good and a slow build to qa,
    sends a problem to production, and prints a live view, then each sequence's result,
    the evaluation table and the ledger. Takes a few minutes; stops everything it started.
    """
    from reconciler.demo.scenario import DemoError, DemoOptions, run_demo
    from reconciler.runtime.observability import configure_logging

    ensure_tools()
    log_file = workdir.resolve().parent / f"{workdir.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handle = log_file.open("w")
    configure_logging("json", "info", stream=handle)
    click.echo(f"reconciler demo: logs in {log_file}")
    try:
        result = run_demo(
            DemoOptions(workdir=workdir, example=find_example(example), keep=keep, locust_run_time=load_time)
        )
    except DemoError as exc:
        click.echo(f"demo failed: {exc} (see {log_file})", err=True)
        sys.exit(1)
    finally:
        handle.close()
    click.echo("")
    click.echo(f"done. Everything the demo started has stopped; its files stay in {result.workdir}.")
