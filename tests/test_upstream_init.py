"""`reconciler upstream init`: a branch-per-directory tree becomes a git upstream with the same SHAs everywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.upstream.files import GitFiles
from reconciler.upstream.init import AUTHOR_EMAIL, init_upstream
from tests.support.upstreams import apply, write_tree

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example-upstream"
GIT = shutil.which("git") or "git"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = write_tree(tmp_path / "tree", apply({}))
    (root / "README.md").write_text("not a branch\n")
    write_tree(root, {"_local": {"qa/web/slo.yaml": "not: a branch\n"}, ".hidden": {"x": "y"}})
    script = root / "qa" / "web" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    return root


def test_each_branch_directory_becomes_one_parentless_commit(tree: Path, tmp_path: Path) -> None:
    code, out = invoke("upstream", "init", str(tree), str(tmp_path / "repo"))
    assert code == 0, out
    repo = pygit2.Repository(str(tmp_path / "repo"))
    assert sorted(repo.branches.local) == ["main", "production", "qa"]
    for branch in ("main", "qa", "production"):
        commit = repo.lookup_reference(f"refs/heads/{branch}").peel(pygit2.Commit)
        assert commit.parents == []
        assert commit.author.email == AUTHOR_EMAIL and commit.committer.email == AUTHOR_EMAIL
        assert f"{branch} {commit.id}" in out
    files = GitFiles(repo)
    for branch, content in apply({}).items():
        listed = set(files.list(branch))
        assert set(content) <= listed
        for path, data in content.items():
            assert files.read(branch, path) == (data.encode() if isinstance(data, str) else data)
    assert "web/run.sh" in files.list("qa")


def test_same_directory_gives_same_shas_whatever_the_environment(tree: Path, tmp_path: Path) -> None:
    first = init_upstream(tree, tmp_path / "one").branches
    env = {
        **os.environ,
        "TZ": "Pacific/Kiritimati",
        "GIT_AUTHOR_NAME": "Somebody Else",
        "GIT_COMMITTER_EMAIL": "else@example.com",
        "HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "upstream", "init", str(tree), str(tmp_path / "two"), "--bare"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    second = dict(line.split() for line in proc.stdout.splitlines()[:3])
    assert second == first


def test_executable_bit_survives(tree: Path, tmp_path: Path) -> None:
    repo = pygit2.Repository(str(init_upstream(tree, tmp_path / "repo", bare=True).path))
    entry = repo.revparse_single("refs/heads/qa").peel(pygit2.Commit).tree / "web" / "run.sh"
    assert entry.filemode == pygit2.enums.FileMode.BLOB_EXECUTABLE


def test_work_tree_holds_main_and_git_sees_it_clean(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "repo"
    init_upstream(tree, dest)
    assert (dest / "shipyard.yaml").read_bytes() == (tree / "main" / "shipyard.yaml").read_bytes()
    status = subprocess.run(
        [GIT, "-C", str(dest), "status", "--porcelain"], capture_output=True, text=True, check=True
    )
    assert status.stdout == ""
    log = subprocess.run(
        [GIT, "-C", str(dest), "log", "--format=%an <%ae> %aI", "qa"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert log.stdout.strip() == f"reconciler upstream init <{AUTHOR_EMAIL}> 2024-01-01T00:00:00+00:00"


def test_git_can_clone_it_and_validate_passes(tree: Path, tmp_path: Path) -> None:
    init_upstream(tree, tmp_path / "repo.git", bare=True)
    subprocess.run(
        [GIT, "clone", "-q", str(tmp_path / "repo.git"), str(tmp_path / "clone")], check=True, timeout=60
    )
    assert (tmp_path / "clone" / "shipyard.yaml").is_file()
    code, out = invoke("validate", str(tmp_path / "repo.git"))
    assert code == 0, out


def test_refuses_to_write_into_a_non_empty_directory(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "file").write_text("mine")
    code, out = invoke("upstream", "init", str(tree), str(dest))
    assert code == 2
    assert "not an empty directory" in out
    assert (dest / "file").read_text() == "mine"


def test_refuses_a_source_without_main(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", {"qa": {"web/slo.yaml": "objectives: []\n"}})
    code, out = invoke("upstream", "init", str(root), str(tmp_path / "repo"))
    assert code == 2
    assert "has no main/ directory" in out and not (tmp_path / "repo").exists()


def test_refuses_symbolic_links(tree: Path, tmp_path: Path) -> None:
    (tree / "qa" / "web" / "link.yaml").symlink_to(tree / "main" / "shipyard.yaml")
    code, out = invoke("upstream", "init", str(tree), str(tmp_path / "repo"))
    assert code == 2
    assert "symbolic link" in out


def test_invalid_source_is_created_but_reported(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "tree", apply({"qa:web/slo.yaml": "objectives:\n  - sli: nope\n"}))
    code, out = invoke("upstream", "init", str(root), str(tmp_path / "repo"))
    assert code == 1
    assert "qa:web/slo.yaml:2:" in out and (tmp_path / "repo" / ".git").is_dir()


# --- the must-show: the tutorial's example upstream -----------------------------------------------------------

needs_example = pytest.mark.skipif(
    not (EXAMPLE / "main" / "shipyard.yaml").is_file(), reason="example-upstream/ is not written yet"
)


@needs_example
def test_example_upstream_directory_is_valid() -> None:
    code, out = invoke("validate", str(EXAMPLE), "--output", "json")
    assert code == 0, out
    report = json.loads(out)
    assert report["project"] == "fulltour"
    assert list(report["branches"]) == ["main", "qa", "production"]


@needs_example
def test_example_upstream_as_git_repository_is_valid_and_reproducible(tmp_path: Path) -> None:
    code, out = invoke("upstream", "init", str(EXAMPLE), str(tmp_path / "fulltour"))
    assert code == 0, out
    code, out = invoke("validate", str(tmp_path / "fulltour"))
    assert code == 0, out
    again = init_upstream(EXAMPLE, tmp_path / "again", bare=True).branches
    first = GitFiles(str(tmp_path / "fulltour")).branches()
    assert again == first
