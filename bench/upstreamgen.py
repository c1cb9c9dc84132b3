"""Upstreams for the benches: the tutorial's files, for one service or for a thousand.

Built with pygit2 straight into a bare repository (one tree per service directory,
identical blobs shared as git would), so a 1,000-service, 2-stage upstream takes a
second or two instead of thousands of commits. Each service gets the tutorial's
helloservice files under its own name (its chart renamed `charts/<service>.tgz`
as the job config expects) and a `values.yaml` naming its own image, so every
service is valid on its own and distinct where a person's would be.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "example-upstream"
STAGES = ("qa", "production")
AUTHOR = pygit2.Signature("Bench Author", "bench@example.com", 1_700_000_000, 0)


def tutorial_service_files(stage: str) -> dict[str, bytes]:
    """helloservice's files on a stage branch of example-upstream, relative to the service."""
    base = EXAMPLE / stage / "helloservice"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def main_files() -> dict[str, bytes]:
    base = EXAMPLE / "main"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def service_name(n: int) -> str:
    return f"svc{n:04d}"


class BareUpstream:
    """A bare repository people commit to; commits are built without a work tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if (path / "HEAD").is_file():
            self.repo = pygit2.Repository(str(path))
        else:
            self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        self.clock = AUTHOR.time

    def tip(self, branch: str) -> str | None:
        ref = self.repo.references.get(f"refs/heads/{branch}")
        return str(ref.target) if ref is not None else None

    def _tree(self, files: Mapping[str, bytes], base: pygit2.Tree | None) -> pygit2.Oid:
        index = pygit2.Index()
        if base is not None:
            index.read_tree(base)
        blobs: dict[bytes, pygit2.Oid] = {}
        for path, data in files.items():
            oid = blobs.get(data)
            if oid is None:
                oid = blobs[data] = self.repo.create_blob(data)
            index.add(pygit2.IndexEntry(path, oid, FileMode.BLOB))
        tree: pygit2.Oid = index.write_tree(self.repo)
        return tree

    def commit(self, branch: str, files: Mapping[str, bytes], message: str = "change") -> str:
        """Commit on the branch tip (or as its first commit); the ref moves last, as a push does."""
        head = self.tip(branch)
        base = self.repo[head].peel(pygit2.Commit).tree if head else None
        tree = self._tree(files, base)
        self.clock += 1
        sig = pygit2.Signature(AUTHOR.name, AUTHOR.email, self.clock, 0)
        parents = [pygit2.Oid(hex=head)] if head else []
        oid = self.repo.create_commit(None, sig, sig, message, tree, parents)
        if head is None:
            self.repo.references.create(f"refs/heads/{branch}", oid)
        else:
            self.repo.references[f"refs/heads/{branch}"].set_target(oid)
        return str(oid)


def service_files(stage: str, service: str, template: Mapping[str, bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for rel, data in template.items():
        if rel == "charts/helloservice.tgz":
            rel = f"charts/{service}.tgz"
        elif rel == "values.yaml":
            data = f"image: ghcr.io/example/{service}:v1.0.{stage == 'production'}\n".encode()
        out[f"{service}/{rel}"] = data
    return out


def build_upstream(path: Path, services: int, *, project: str = "fulltour") -> BareUpstream:
    """main (the tutorial's shipyard) plus qa and production with `services` services each."""
    up = BareUpstream(path)
    files = main_files()
    files["metadata.yaml"] = f"projectName: {project}\n".encode()
    up.commit("main", files, "shipyard")
    for stage in STAGES:
        template = tutorial_service_files(stage)
        stage_files: dict[str, bytes] = {}
        for n in range(services):
            stage_files.update(service_files(stage, service_name(n), template))
        up.commit(stage, stage_files, f"{stage}: {services} services")
    return up
