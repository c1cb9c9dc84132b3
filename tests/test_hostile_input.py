"""Hostile files in an upstream: each is one clear, located error within a second, never a crash or a hang.

Upstream files come through pull requests, so a careless or malicious one must not
take the reconciler down: an alias bomb, a 50 MB file, binary garbage, duplicate
keys, tabs, absurd nesting. Each case puts one such file in an otherwise valid
upstream and runs `reconciler validate` on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.core.validation import MAX_BLOB_BYTES
from reconciler.formats.problems import ConfigError
from reconciler.formats.shipyard import load_shipyard
from reconciler.formats.yamldoc import MAX_FILE_BYTES, MAX_NODES, load_yaml
from tests.support.upstreams import SHIPYARD, SLO, build_upstream

BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)),
        "",
    ]
)


@dataclass(frozen=True)
class Hostile:
    id: str
    branch: str
    file: str
    content: Callable[[], bytes]
    says: str
    line: int | None
    """Expected line (None: the problem concerns the whole file)."""


def text(s: str) -> Callable[[], bytes]:
    return lambda: s.encode()


def raw(b: bytes) -> Callable[[], bytes]:
    return lambda: b


CASES = [
    Hostile("alias-bomb-shipyard", "main", "shipyard.yaml", text(BOMB), "through YAML aliases", 9),
    Hostile(
        "recursive-alias",
        "qa",
        "web/slo.yaml",
        text("objectives: &o\n  - sli: x\n    more: *o\n"),
        "recursive alias",
        2,
    ),
    Hostile(
        "fifty-megabytes",
        "qa",
        "web/slo.yaml",
        lambda: b"objectives:\n" + b"  - sli: response_time\n" * (50 * 1024 * 1024 // 24),
        f"expected at most {MAX_FILE_BYTES} bytes",
        None,
    ),
    Hostile(
        "binary-garbage",
        "production",
        "web/job/config.yaml",
        raw(bytes(range(256)) * 64),
        "NUL bytes; expected UTF-8 YAML text",
        None,
    ),
    Hostile(
        "not-utf8",
        "production",
        "web/remediation.yaml",
        raw("apiVersion: spec.keptn.sh/0.1.4\nkind: Remediation # caf\u00e9\n".encode("latin-1")),
        "not UTF-8 text",
        None,
    ),
    Hostile(
        "duplicate-key",
        "main",
        "shipyard.yaml",
        text(SHIPYARD.replace("kind: Shipyard\n", "kind: Shipyard\nkind: Shipyard\n")),
        "duplicate key 'kind'",
        3,
    ),
    Hostile(
        "tab-indented",
        "qa",
        "web/slo.yaml",
        text(SLO.replace("  - sli: throughput", "\t- sli: throughput")),
        "a tab cannot indent YAML",
        SLO.splitlines().index("  - sli: throughput") + 1,
    ),
    Hostile(
        "deep-nesting",
        "main",
        "prometheus/sli.yaml",
        text("indicators: " + "[" * 5000 + "]" * 5000 + "\n"),
        "nesting deeper than",
        1,
    ),
    Hostile(
        "two-documents",
        "main",
        "shipyard.yaml",
        text(SHIPYARD + "---\n" + SHIPYARD),
        "expected a single YAML document",
        None,
    ),
    Hostile(
        "top-level-list",
        "qa",
        "web/job/config.yaml",
        text("- apiVersion: v2\n"),
        "expected a mapping at the top level",
        1,
    ),
    Hostile(
        "unclosed-flow", "qa", "web/slo.yaml", text("objectives: [\n  {sli: x\n"), "YAML syntax error", None
    ),
    Hostile(
        "many-tokens",
        "qa",
        "web/slo.yaml",
        text("objectives: [" + ",".join(["1"] * 120_000) + "]\n"),
        "YAML tokens",
        None,
    ),
    Hostile(
        "python-tag",
        "main",
        "shipyard.yaml",
        text("!!python/object/apply:os.system ['true']\n"),
        "unsupported YAML tag",
        1,
    ),
    Hostile(
        "python-scalar-tag",
        "qa",
        "web/slo.yaml",
        text("spec_version: !!python/name:os.system\n"),
        "invalid value",
        1,
    ),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Hostile, Path]:
    case: Hostile = request.param
    return case, build_upstream(tmp_path, {f"{case.branch}:{case.file}": case.content()})


@pytest.mark.timeout(1, func_only=True)
def test_hostile_file_is_one_located_error(hostile: tuple[Hostile, Path]) -> None:
    case, path = hostile
    result = CliRunner().invoke(cli, ["validate", str(path), "--output", "json"])
    assert result.exit_code == 1, result.output
    problems = json.loads(result.output)["problems"]
    mine = [p for p in problems if p["branch"] == case.branch and p["file"] == case.file]
    assert mine, problems
    assert case.says in mine[0]["message"], mine[0]
    if case.line is not None:
        assert mine[0]["line"] == case.line, mine[0]


@pytest.mark.timeout(1, func_only=True)
def test_hostile_files_in_a_git_repository_too(tmp_path: Path) -> None:
    path = build_upstream(
        tmp_path,
        {
            "main:shipyard.yaml": BOMB,
            "qa:web/job/config.yaml": bytes(range(256)),
            "production:web/slo.yaml": "a:\n\tb: 1\n",
        },
        kind="git",
    )
    result = CliRunner().invoke(cli, ["validate", str(path), "--output", "json"])
    assert result.exit_code == 1
    where = {(p["branch"], p["file"]) for p in json.loads(result.output)["problems"]}
    assert ("main", "shipyard.yaml") in where


@pytest.mark.timeout(1, func_only=True)
def test_file_beyond_the_read_limit_is_an_error_not_an_absent_file(tmp_path: Path) -> None:
    path = build_upstream(tmp_path)
    huge = path / "production" / "web" / "remediation.yaml"
    with huge.open("r+b") as f:  # sparse: the size is real, the disk stays empty
        f.truncate(MAX_BLOB_BYTES + 1)
    result = CliRunner().invoke(cli, ["validate", str(path), "--output", "json"])
    assert result.exit_code == 1
    problems = json.loads(result.output)["problems"]
    assert [(p["branch"], p["file"]) for p in problems] == [("production", "web/remediation.yaml")]
    assert "could not be read" in problems[0]["message"]


def test_shared_aliases_within_limits_still_load() -> None:
    doc = load_yaml("base: &b {timeframe: 5m}\nqa: *b\nproduction:\n  <<: *b\n  extra: 1\n", "f.yaml")
    assert doc.value == {
        "base": {"timeframe": "5m"},
        "qa": {"timeframe": "5m"},
        "production": {"timeframe": "5m", "extra": 1},
    }


def test_bomb_is_refused_without_being_expanded() -> None:
    with pytest.raises(ConfigError) as err:
        load_yaml(BOMB, "shipyard.yaml")
    assert f"more than {MAX_NODES} values" in str(err.value)
    assert err.value.problems[0].field == "i"


def test_secret_looking_values_are_not_echoed_in_yaml_errors() -> None:
    """A syntax error reports where, not the surrounding text (which may hold a token)."""
    with pytest.raises(ConfigError) as err:
        load_shipyard("apiVersion: spec.keptn.sh/0.2.4\ntoken: ghp_abcdefghijklmnop: oops\n")
    assert "ghp_abcdefghijklmnop" not in str(err.value)
    assert err.value.problems[0].line == 2
