"""The upstream configuration as ingress validates against it: shipyard, stages, services, project.

The running reconciler's mirror (`<data_dir>/upstream.git`) or any path the user
names (`--upstream`: a git repository or an `example-upstream/`-style directory)
is read through `UpstreamFiles`. When the ledger says which commits the running
reconciler accepted, those are pinned here, so the CLI refuses exactly what the
reconciler would refuse and not what a newer, still unvalidated push says.

Implements both `core.planning.ConfigView` and `core.admission.UpstreamView`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from reconciler.core.validation import UpstreamFiles
from reconciler.formats.layout import is_service
from reconciler.formats.metadata import load_project_metadata
from reconciler.formats.problems import ConfigError
from reconciler.formats.shipyard import Shipyard, load_shipyard
from reconciler.upstream.files import DirectoryFiles, GitFiles

SHIPYARD = "shipyard.yaml"
METADATA = "metadata.yaml"
"""Top-level directories of a stage branch that hold stage-level resources, not services."""


@dataclass
class FilesView:
    files: UpstreamFiles
    main_branch: str = "main"
    pins: Callable[[], Mapping[str, str]] = dict
    """branch -> accepted commit (asked on every use); branches not pinned are read at their tip."""
    shipyard_error: str = ""
    _cache: dict[str, Shipyard | None] = field(default_factory=dict)

    def _commit(self, branch: str) -> str | None:
        return self.pins().get(branch)

    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        key = commit or self.main_commit() or ""
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = self._load(commit or self._commit(self.main_branch))
        return self._cache[key]

    def _load(self, commit: str | None) -> Shipyard | None:
        raw = self.files.read(self.main_branch, SHIPYARD, commit)
        if raw is None:
            self.shipyard_error = f"{self.main_branch}:{SHIPYARD} does not exist"
            return None
        try:
            return load_shipyard(raw, f"{self.main_branch}:{SHIPYARD}")
        except ConfigError as exc:
            self.shipyard_error = str(exc).splitlines()[0]
            return None

    def main_commit(self) -> str | None:
        return self._commit(self.main_branch) or self.files.branches().get(self.main_branch)

    def stage_head(self, stage: str) -> str | None:
        return self._commit(stage) or self.files.branches().get(stage)

    def services(self, stage: str) -> frozenset[str] | None:
        if stage not in self.files.branches():
            return frozenset()
        names = {
            path.split("/", 1)[0] for path in self.files.list(stage, "", self._commit(stage)) if "/" in path
        }
        return frozenset(n for n in names if is_service(n))

    def project(self) -> str:
        """`projectName` of metadata.yaml on main; empty when absent or invalid."""
        raw = self.files.read(self.main_branch, METADATA, self._commit(self.main_branch))
        if raw is None:
            return ""
        try:
            meta = load_project_metadata(raw, f"{self.main_branch}:{METADATA}")
        except ConfigError:
            return ""
        return meta.project_name or ""

    def first_stage(self) -> str | None:
        shipyard = self.shipyard()
        if shipyard is None or not shipyard.spec.stages:
            return None
        return shipyard.spec.stages[0].name


def open_files(location: str | Path, *, scratch: Path | None = None) -> UpstreamFiles:
    """A path (git repository or branch directories) or a URL (cloned bare into `scratch`)."""
    text = str(location)
    path = Path(text)
    if "://" not in text or text.startswith("file://"):
        if text.startswith("file://"):
            path = Path(text[len("file://") :])
        if not path.exists():
            raise FileNotFoundError(f"upstream {text}: no such file or directory")
        if (path / "HEAD").is_file() or (path / ".git").exists():
            return GitFiles(pygit2.Repository(str(path)))
        return DirectoryFiles(path)
    target = scratch or Path(tempfile.mkdtemp(prefix="reconciler-upstream-"))
    repo = pygit2.init_repository(str(target / "upstream.git"), bare=True)
    remote = repo.remotes.create("origin", text, "+refs/heads/*:refs/heads/*")
    remote.fetch()
    return GitFiles(repo)
