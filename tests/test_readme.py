"""The README's promises that can drift: the two set-up commands, CI, the settings table, the commands."""

from __future__ import annotations

import importlib
import os
import re
import stat
from pathlib import Path

import pytest

from reconciler import configdoc
from reconciler.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"

DEMO = "python3 -m venv .venv && .venv/bin/pip install -e '.[load]' -c constraints.txt && .venv/bin/reconciler demo"
TESTS = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' -c constraints.txt && .venv/bin/reconciler doctor --install "
    "&& .venv/bin/python -m pytest"
)


def code_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"```(?:sh|bash)?\n(.*?)```", text, re.S)]


def test_readme_opens_with_exactly_the_two_set_up_commands() -> None:
    text = README.read_text()
    first_section = text.index("\n## ")
    assert text[first_section:].startswith("\n## Set up\n")
    assert code_blocks(text)[:2] == [DEMO, TESTS]
    assert "```" not in text[:first_section], "nothing but the introduction comes before the set-up commands"


def test_ci_runs_the_readme_test_command_and_nothing_else() -> None:
    assert os.access(CI, os.X_OK) and CI.stat().st_mode & stat.S_IXUSR
    lines = [line for line in CI.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', code_blocks(README.read_text())[1]]


def test_settings_table_matches_the_settings_model() -> None:
    text = README.read_text()
    assert configdoc.rewrite(text) == text, (
        "the configuration table is stale: run python -m reconciler.configdoc README.md"
    )
    for name in configdoc.rows():
        assert name[0] in text and name[1] in text


def test_rewrite_refuses_text_without_markers() -> None:
    with pytest.raises(ValueError, match="markers not found"):
        configdoc.rewrite("# no table here\n")


def test_every_available_command_has_an_example_in_the_readme() -> None:
    text = README.read_text()
    for name, target in sorted(COMMANDS.items()):
        module = target.split(":")[0]
        try:
            importlib.import_module(f"reconciler.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"reconciler.cli.{module}":
                continue  # registered but not built yet
            raise
        assert re.search(rf"reconciler {re.escape(name)}\b", text), (
            f"README has no example of `reconciler {name}`"
        )
