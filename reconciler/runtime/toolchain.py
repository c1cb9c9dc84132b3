"""The external programs the embedded default needs, and how to get them on Debian.

The reconciler itself is a Python package, but its local mode runs real tools:
git (upstreams, the ledger, test servers), Prometheus and promtool (quality gates),
Alertmanager (alerts that start remediation) and locust (load tests); the test suite
also drives Debian's chromium (the web view's browser tests). `reconciler
doctor` tells a user which are missing and, with `--install`, installs the Debian
packages itself, so the README's two set-up commands work on a fresh machine.

Deciding what to do is pure (`plan_install`); looking for programs and running
apt-get are the thin shell around it. May import: stdlib only.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

VERSION_TIMEOUT_SECONDS = 20.0
"""`locust --version` imports gevent and takes a few seconds on a busy machine."""

INSTALL_TIMEOUT_SECONDS = 900.0


@dataclass(frozen=True)
class Tool:
    command: str
    purpose: str
    package: str | None = None
    """Debian package that provides the command (None: not installed with apt-get)."""
    hint: str = ""
    """How to get it when there is no Debian package."""


TOOLS: tuple[Tool, ...] = (
    Tool("git", "upstream repositories, the events ledger, git servers in tests", package="git"),
    Tool("prometheus", "SLI queries for quality gates on the embedded default", package="prometheus"),
    Tool("promtool", "instant Prometheus test data (tsdb create-blocks-from)", package="prometheus"),
    Tool(
        "prometheus-alertmanager",
        "alerts that start remediation sequences on the embedded default",
        package="prometheus-alertmanager",
    ),
    Tool(
        "chromium",
        "headless browser for the web view's browser tests (driven by Playwright)",
        package="chromium",
    ),
    Tool(
        "locust",
        "load tests run by the local job runner",
        hint="pip install -e '.[load]' (or '.[test]') into the reconciler's virtualenv",
    ),
)


@dataclass(frozen=True)
class Found:
    tool: Tool
    path: str | None
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class InstallPlan:
    commands: tuple[tuple[str, ...], ...] = ()
    """Commands to run in order (empty when nothing can or needs to be installed)."""
    packages: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    """Why some missing tools cannot be installed here, each with what the user can do."""
    env: dict[str, str] = field(default_factory=dict)


def search_path(environ: dict[str, str] | None = None) -> str:
    """PATH with the running interpreter's bin directory first: a venv's locust counts even if not activated."""
    env = os.environ if environ is None else environ
    venv_bin = str(Path(sys.executable).parent)
    return os.pathsep.join([venv_bin, env.get("PATH", os.defpath)])


def find(tool: Tool, path: str | None = None) -> Found:
    location = shutil.which(tool.command, path=path if path is not None else search_path())
    if location is None:
        return Found(tool, None)
    return Found(tool, location, _version(location))


def check(tools: Sequence[Tool] = TOOLS, path: str | None = None) -> list[Found]:
    return [find(tool, path) for tool in tools]


@functools.lru_cache(maxsize=32)
def _version(location: str) -> str | None:
    """First line of `<tool> --version`; cached per path (locust takes seconds to import gevent)."""
    try:
        proc = subprocess.run(
            [location, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        if line.strip():
            return line.strip()[:120]
    return None


def plan_install(
    missing: Sequence[Tool], *, is_root: bool, apt_get: bool, sudo_without_password: bool
) -> InstallPlan:
    """What `--install` will do for `missing` on this machine (no side effects).

    apt-get needs root: run it directly as root, else through `sudo -n` (never a
    password prompt, which would hang an unattended set-up), else explain.
    """
    packages = tuple(dict.fromkeys(t.package for t in missing if t.package))
    blocked = [f"{t.command}: {t.hint}" for t in missing if t.package is None]
    if not packages:
        return InstallPlan(blocked=tuple(blocked))
    manual = f"sudo apt-get update && sudo apt-get install -y --no-install-recommends {' '.join(packages)}"
    if not apt_get:
        blocked.append(
            f"{', '.join(packages)}: apt-get not found; install these packages with your package manager"
        )
        return InstallPlan(packages=packages, blocked=tuple(blocked))
    if is_root:
        prefix: tuple[str, ...] = ()
    elif sudo_without_password:
        prefix = ("sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive")
    else:
        blocked.append(
            f"{', '.join(packages)}: not root and sudo needs a password (or is missing); run: {manual}"
        )
        return InstallPlan(packages=packages, blocked=tuple(blocked))
    commands = (
        (*prefix, "apt-get", "update"),
        (*prefix, "apt-get", "install", "-y", "--no-install-recommends", *packages),
    )
    return InstallPlan(
        commands=commands,
        packages=packages,
        blocked=tuple(blocked),
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


def machine_facts(path: str | None = None) -> dict[str, bool]:
    """The inputs of `plan_install` for this machine."""
    where = path if path is not None else search_path()
    sudo = shutil.which("sudo", path=where)
    sudo_ok = False
    if sudo is not None and os.geteuid() != 0:
        try:
            sudo_ok = (
                subprocess.run(
                    [sudo, "-n", "true"],
                    capture_output=True,
                    timeout=10,
                    stdin=subprocess.DEVNULL,
                    check=False,
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            sudo_ok = False
    return {
        "is_root": os.geteuid() == 0,
        "apt_get": shutil.which("apt-get", path=where) is not None,
        "sudo_without_password": sudo_ok,
    }


def run_plan(plan: InstallPlan, path: str | None = None) -> list[tuple[tuple[str, ...], int]]:
    """Run the plan's commands in order, output passing through; stop at the first failure."""
    env = {**os.environ, **plan.env, "PATH": path if path is not None else search_path()}
    done: list[tuple[tuple[str, ...], int]] = []
    for command in plan.commands:
        try:
            # apt-get's progress goes to stderr (fd 2), keeping stdout for doctor's report.
            code = subprocess.run(
                list(command),
                env=env,
                timeout=INSTALL_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
                stdout=2,
                check=False,
            ).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            code = 127 if isinstance(exc, OSError) else 124
        done.append((command, code))
        if code != 0:
            break
    return done
