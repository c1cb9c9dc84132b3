"""`reconciler doctor [--install]`: what is missing, what it will run to get it, and its exit status.

The real programs on this machine are looked up for real; a restricted PATH plays a
machine where they are missing. Installing needs root and the network, so the
decision of what to run is tested as the pure function it is (`plan_install`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.runtime import toolchain
from reconciler.runtime.toolchain import TOOLS, Tool, plan_install


def doctor(*args: str, path: str | None = None) -> tuple[int, str]:
    env = {"PATH": path} if path is not None else None
    result = CliRunner().invoke(cli, ["doctor", *args], env=env)
    return result.exit_code, result.output


def by_command(name: str) -> Tool:
    return next(t for t in TOOLS if t.command == name)


@pytest.mark.timeout(120)
def test_reports_every_tool_with_its_version_when_all_are_present() -> None:
    if any(not f.ok for f in toolchain.check()):
        pytest.skip("some tools are missing here; run `reconciler doctor --install` first")
    code, out = doctor("--output", "json")
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    assert [t["command"] for t in report["tools"]] == [
        "git",
        "prometheus",
        "promtool",
        "prometheus-alertmanager",
        "chromium",
        "locust",
    ]
    versions = {t["command"]: t["version"] for t in report["tools"]}
    assert versions["git"].startswith("git version")
    assert "prometheus, version" in versions["prometheus"]
    assert "alertmanager, version" in versions["prometheus-alertmanager"]
    assert "Chromium" in versions["chromium"]


@pytest.mark.timeout(120)
def test_install_with_everything_present_installs_nothing() -> None:
    if any(not f.ok for f in toolchain.check()):
        pytest.skip("some tools are missing here")
    code, out = doctor("--install")
    assert code == 0, out
    assert "nothing to install" in out and "ran:" not in out


@pytest.mark.timeout(120)
def test_missing_tools_are_named_with_their_package_and_exit_one(tmp_path: Path) -> None:
    code, out = doctor(path=str(tmp_path))  # an empty PATH: only the venv's own bin directory remains
    assert code == 1
    assert "MISSING  git" in out and "apt package git" in out
    assert "MISSING  prometheus-alertmanager" in out
    assert "MISSING  chromium" in out and "apt package chromium" in out
    assert (
        "run 'reconciler doctor --install' to install: chromium git prometheus prometheus-alertmanager" in out
    )
    assert out.strip().endswith("missing: git, prometheus, promtool, prometheus-alertmanager, chromium")


@pytest.mark.timeout(120)
def test_install_without_apt_get_explains_and_still_fails(tmp_path: Path) -> None:
    code, out = doctor("--install", "--output", "json", path=str(tmp_path))
    assert code == 1
    report = json.loads(out)
    assert report["actions"] == []
    assert report["blocked"] == [
        "git, prometheus, prometheus-alertmanager, chromium: apt-get not found; install these packages with your package manager"
    ]


def test_root_runs_apt_get_directly() -> None:
    plan = plan_install(
        [by_command("prometheus"), by_command("promtool"), by_command("git")],
        is_root=True,
        apt_get=True,
        sudo_without_password=False,
    )
    assert plan.commands == (
        ("apt-get", "update"),
        ("apt-get", "install", "-y", "--no-install-recommends", "prometheus", "git"),
    )
    assert plan.env == {"DEBIAN_FRONTEND": "noninteractive"} and plan.blocked == ()


def test_user_with_passwordless_sudo_uses_sudo_n() -> None:
    plan = plan_install(
        [by_command("prometheus-alertmanager")], is_root=False, apt_get=True, sudo_without_password=True
    )
    assert all(c[:2] == ("sudo", "-n") for c in plan.commands)
    assert plan.commands[-1][-1] == "prometheus-alertmanager"
    assert "DEBIAN_FRONTEND=noninteractive" in plan.commands[-1]


def test_user_without_sudo_gets_the_command_to_run_instead_of_a_prompt() -> None:
    plan = plan_install([by_command("git")], is_root=False, apt_get=True, sudo_without_password=False)
    assert plan.commands == ()
    assert plan.blocked == (
        "git: not root and sudo needs a password (or is missing); run: sudo apt-get update && "
        "sudo apt-get install -y --no-install-recommends git",
    )


def test_locust_is_not_an_apt_package_and_says_how_to_get_it() -> None:
    plan = plan_install([by_command("locust")], is_root=True, apt_get=True, sudo_without_password=False)
    assert plan.commands == ()
    assert plan.blocked == (
        "locust: pip install -e '.[load]' (or '.[test]') into the reconciler's virtualenv",
    )


def test_nothing_missing_plans_nothing() -> None:
    assert plan_install([], is_root=True, apt_get=True, sudo_without_password=True).commands == ()
