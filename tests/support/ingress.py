"""Real git upstreams and data directories for the ingress and remediation tests.

`GitUpstream` builds a bare repository with one branch per stage (plus `main`)
from plain dicts and commits to it as a named author, the way a person pushing to
the upstream would; `data_dir` lays out `<data_dir>/upstream.git` as the running
reconciler's mirror, so CLI commands validate against it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pygit2
import pytest
from pygit2.enums import FileMode

from reconciler.core.engine_state import CONTROLLER
from reconciler.formats.events import KeptnEvent, derived_id, task_type
from reconciler.ledger.gitledger import Ledger
from reconciler.upstream.files import GitFiles
from tests.support.events import new_id, now_text

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "example-upstream"


class GitUpstream:
    def __init__(self, path: Path) -> None:
        self.path = path
        if (path / "HEAD").is_file():
            self.repo = pygit2.Repository(str(path))
        else:
            self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")

    def read(self, branch: str, path: str) -> str:
        blob = self.repo.revparse_single(f"refs/heads/{branch}:{path}")
        assert isinstance(blob, pygit2.Blob)
        return blob.data.decode()

    def commit(
        self,
        branch: str,
        files: Mapping[str, bytes | str | None],
        message: str = "change",
        author: tuple[str, str] = ("Test Author", "author@example.com"),
        time: int | None = None,
    ) -> str:
        """Write (or delete, with None) files on `branch` in one commit; returns the commit id."""
        ref = self.repo.references.get(f"refs/heads/{branch}")
        parents = []
        index = pygit2.Index()
        if ref is not None:
            parent = ref.peel(pygit2.Commit)
            parents = [parent.id]
            index.read_tree(parent.tree)
        for path, content in files.items():
            if content is None:
                if path in index:
                    index.remove(path)
                continue
            data = content.encode() if isinstance(content, str) else content
            index.add(pygit2.IndexEntry(path, self.repo.create_blob(data), FileMode.BLOB))
        tree = index.write_tree(self.repo)
        if time is None:
            sig = pygit2.Signature(author[0], author[1])
        else:
            sig = pygit2.Signature(author[0], author[1], time, 0)
        oid = self.repo.create_commit(f"refs/heads/{branch}", sig, sig, message, tree, parents)
        return str(oid)

    def head(self, branch: str) -> str:
        return str(self.repo.references[f"refs/heads/{branch}"].target)

    def files(self) -> GitFiles:
        return GitFiles(self.repo)


def directory_files(root: Path) -> dict[str, dict[str, bytes]]:
    """Branch -> {path: bytes} of an `example-upstream/`-style directory."""
    out: dict[str, dict[str, bytes]] = {}
    for branch in sorted(root.iterdir()):
        if not branch.is_dir() or branch.name.startswith((".", "_")):
            continue
        out[branch.name] = {
            str(p.relative_to(branch)): p.read_bytes() for p in sorted(branch.rglob("*")) if p.is_file()
        }
    return out


def example_upstream_repo(path: Path) -> GitUpstream:
    """The tutorial's upstream (example-upstream/) as a real git repository, one commit per branch."""
    up = GitUpstream(path)
    for branch, files in directory_files(EXAMPLE).items():
        up.commit(branch, files, message=f"{branch}: tutorial files")
    return up


@pytest.fixture
def git_upstream(tmp_path: Path) -> GitUpstream:
    return GitUpstream(tmp_path / "upstream.git")


@pytest.fixture
def tutorial_upstream(tmp_path: Path) -> GitUpstream:
    return example_upstream_repo(tmp_path / "tutorial-upstream.git")


@pytest.fixture
def tutorial_data_dir(tmp_path: Path) -> Path:
    """A data directory whose `upstream.git` mirror holds the tutorial's upstream."""
    data = tmp_path / "data"
    data.mkdir()
    example_upstream_repo(data / "upstream.git")
    return data


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def sequence_started(trigger: KeptnEvent) -> KeptnEvent:
    """The controller's `.started` for a sequence `.triggered`, as the engine records it."""
    return KeptnEvent(
        id=derived_id(trigger.id, "started"),
        source=CONTROLLER,
        type=trigger.type.removesuffix(".triggered") + ".started",
        shkeptncontext=trigger.shkeptncontext,
        triggeredid=trigger.id,
        data={k: trigger.data[k] for k in ("project", "stage", "service")},
        time=now_text(),
    )


def production_approval_waiting(ledger: Ledger, context: str, **approval_data: Any) -> KeptnEvent:
    """Record the tutorial's production delivery at its manual approval (the sequence
    `.triggered`/`.started` and the approval's `.triggered`, with `approval_data` added to
    its data); returns the approval's `.triggered`."""
    trigger = KeptnEvent(
        source="test",
        type="sh.keptn.event.production.delivery.triggered",
        shkeptncontext=context,
        data={"project": "fulltour", "stage": "production", "service": "helloservice"},
        id=new_id(),
        time=now_text(),
    )
    started = sequence_started(trigger)
    approval = KeptnEvent(
        id=derived_id("approval", context),
        source=CONTROLLER,
        type=task_type("approval", "triggered"),
        shkeptncontext=context,
        sequencetriggeredid=trigger.id,
        data={**trigger.data, **approval_data},
        time=now_text(),
    )
    for event in (trigger, started, approval):
        ledger.append(event)
    return approval
