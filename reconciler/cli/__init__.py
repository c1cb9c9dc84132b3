"""The `reconciler` command line (click).

click was picked over argparse for nested command groups, typed options and its
test runner; each command lives in its own module and is imported only when
invoked, so `reconciler validate` does not pay for the kubernetes client.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> "module:attribute"; modules under reconciler.cli
COMMANDS: dict[str, str] = {
    "validate": "validate:validate",
    "upstream": "upstream:upstream",
    "run": "run:run",
    "status": "status:status",
    "get": "status:get",
    "events": "events:events",
    "trigger": "trigger:trigger",
    "send": "trigger:send",
    "approve": "control:approve",
    "decline": "control:decline",
    "abort": "control:abort",
    "pause": "control:pause",
    "resume": "control:resume",
    "evaluate": "evaluate:evaluate",
    "sli": "evaluate:sli",
    "job": "job:job",
    "webhook": "webhook:webhook",
    "simulate": "simulate:simulate",
    "demo": "demo:demo",
    "doctor": "doctor:doctor",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(f"reconciler.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"reconciler.cli.{module_name}":
                return None
            raise
        command: click.Command = getattr(module, attr)
        return command


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="reconciler")
def cli() -> None:
    """GitOps delivery reconciler: Keptn shipyard sequences from a git upstream, every event a git commit."""


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="reconciler")
    except KeyboardInterrupt:
        sys.exit(130)
