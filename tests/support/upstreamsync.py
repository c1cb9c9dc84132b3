"""A running upstream side for tests: a real upstream repo, mirror, ledger, snapshot store and poller.

Wired the way the app wires them (the poller hands its changes to the controller's
`SourceLoop`: admit -> record -> publish), so tests of snapshots and commit-to-deploy
exercise the same path as production, on real git.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.controller.source import SourceLoop
from reconciler.core.observations import UpstreamChanges
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import Ledger
from reconciler.settings import Settings
from reconciler.upstream.credentials import resolve_upstream
from reconciler.upstream.mirror import Mirror
from reconciler.upstream.poll import Poller
from reconciler.upstream.snapshot import SnapshotStore
from tests.support.gitserver import UpstreamRepo


class UpstreamSync:
    def __init__(self, upstream: UpstreamRepo, data_dir: Path, *, project: str = "") -> None:
        self.upstream = upstream
        self.data_dir = data_dir
        self.project = project
        self.start()

    def start(self) -> None:
        """(Re)open everything from the data directory, as a restarted process would."""
        self.ledger = Ledger(self.data_dir / "ledger.git")
        self.mirror = Mirror.in_data_dir(
            self.data_dir, resolve_upstream(Settings(upstream=str(self.upstream.path)))
        )
        self.store = SnapshotStore(self.mirror.files(), project=self.project)
        self.store.restore(self.ledger.events())
        self.kicks = 0
        settings = Settings(upstream=str(self.upstream.path), project=self.project)
        self.source = SourceLoop(settings, self.store, self.ledger, self.mirror.files(), engine=self)
        self.poller = Poller(
            self.mirror, self.on_change, baseline=self.store.baseline(), ignore_branches={"reconciler-ledger"}
        )

    def on_change(self, changes: UpstreamChanges) -> None:
        self.source.fetched(changes)

    def kick(self) -> None:
        """The engine loop's wake-up, counted."""
        self.kicks += 1

    def poll(self) -> list[KeptnEvent]:
        """One poll; returns the events it recorded."""
        before = len(self.ledger.events())
        self.poller.poll_once()
        return list(self.ledger.events()[before:])

    def types(self) -> list[str]:
        return [e.type for e in self.ledger.events()]


@pytest.fixture
def upstream_sync(tmp_path: Path, upstream_repo: UpstreamRepo, example_upstream: Path) -> UpstreamSync:
    """The tutorial's upstream (example-upstream/) committed to a git repo, polled once."""
    upstream_repo.seed_from_directory(example_upstream)
    sync = UpstreamSync(upstream_repo, tmp_path / "data")
    sync.poll()
    return sync
