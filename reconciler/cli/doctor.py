"""`reconciler doctor [--install]`: are the tools of the embedded default here, and if not, get them.

The demo calls `doctor --install` before it starts anything, and so does the
README's test command, so a fresh Debian machine needs nothing but Python.
"""

from __future__ import annotations

import json
import sys

import click

from reconciler.runtime import toolchain


def _line(found: toolchain.Found) -> str:
    if found.ok:
        return f"ok       {found.tool.command:<24} {found.version or '(version unknown)'}  [{found.path}]"
    how = f"apt package {found.tool.package}" if found.tool.package else found.tool.hint
    return f"MISSING  {found.tool.command:<24} needed for {found.tool.purpose}; get it with: {how}"


@click.command()
@click.option(
    "--install", is_flag=True, help="Install missing Debian packages with apt-get (as root, or via sudo -n)."
)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def doctor(install: bool, output: str) -> None:
    """Check for git, prometheus, promtool, prometheus-alertmanager and locust.

    With --install, missing Debian packages are installed with apt-get: directly when
    running as root, else through 'sudo -n' when sudo needs no password; otherwise the
    command to run is printed. Exit status 1 when something required is still missing.

    Example: reconciler doctor --install
    """
    path = toolchain.search_path()
    found = toolchain.check(path=path)
    actions: list[str] = []
    blocked: list[str] = []
    missing = [f.tool for f in found if not f.ok]
    if install and missing:
        plan = toolchain.plan_install(missing, **toolchain.machine_facts(path))
        blocked.extend(plan.blocked)
        for command, code in toolchain.run_plan(plan, path):
            actions.append(f"ran: {' '.join(command)} (exit {code})")
        if plan.commands:
            found = toolchain.check(path=path)
    elif install:
        actions.append("nothing to install")
    still = [f for f in found if not f.ok]
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "ok": not still,
                    "tools": [
                        {
                            "command": f.tool.command,
                            "path": f.path,
                            "version": f.version,
                            "package": f.tool.package,
                        }
                        for f in found
                    ],
                    "actions": actions,
                    "blocked": blocked,
                },
                indent=2,
            )
        )
    else:
        for f in found:
            click.echo(_line(f))
        for action in actions:
            click.echo(action)
        for reason in blocked:
            click.echo(f"cannot install {reason}")
        if still and not install:
            packages = sorted({f.tool.package for f in still if f.tool.package})
            if packages:
                click.echo(f"run 'reconciler doctor --install' to install: {' '.join(packages)}")
        click.echo(
            "all tools present" if not still else f"missing: {', '.join(f.tool.command for f in still)}"
        )
    sys.exit(0 if not still else 1)
