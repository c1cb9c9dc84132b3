"""The lock (`constraints.txt`) must cover what `pyproject.toml` asks for, within its ranges.

A dependency added to `pyproject.toml` without refreshing the lock would install unpinned on
a fresh machine (the failure the lock exists to prevent); a range narrowed past a pin would
make the README's set-up commands unresolvable.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for raw in LOCK.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f"constraints.txt: {raw!r} is not an exact NAME==VERSION pin"
        out[canonicalize_name(match.group(1))] = Version(match.group(2))
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        found += [Requirement(r) for r in extra]
    return found


def test_every_requirement_of_the_project_and_its_extras_is_pinned_within_its_range() -> None:
    locked = pins()
    missing = [str(r) for r in requirements() if canonicalize_name(r.name) not in locked]
    assert not missing, f"not in constraints.txt (run bash .ci/lock): {missing}"
    outside = [
        f"{r} but locked {locked[canonicalize_name(r.name)]}"
        for r in requirements()
        if not r.specifier.contains(locked[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, f"constraints.txt pins outside pyproject.toml's ranges (run bash .ci/lock): {outside}"


def test_the_lock_says_which_platform_it_was_resolved_for_and_how_to_refresh_it() -> None:
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "Linux" in text and "3.11" in text
    assert "bash .ci/lock" in text
