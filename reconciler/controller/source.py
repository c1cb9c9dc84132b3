"""The source side of the controller: observe → admit → record → publish, for the upstream.

The poller observes (fetch, then the tree diffs of every changed branch: `UpstreamChanges`)
and hands each poll's changes to `SourceLoop.fetched` on its own thread, and synchronously:
the poller's baseline moves only once the changes are recorded, so a crash in between
re-derives the same records with the same ids on the next poll. `fetched` is the list of
named steps:

- admit: the store's pure admission (`core.admission.admit_upstream`: validation verdicts,
  accepted/rejected records, commit-to-deploy triggers), which changes nothing;
- record: one ledger write for the poll;
- publish: fold the records into a new immutable `ConfigSnapshot`, tell the ways in which
  project they serve, answer approval files on main, and wake the engine loop.

Approval files are also checked every few seconds while an approval is pending (a file may
predate the approval it answers): `on_engine_cycle` is hung on the engine loop's cycle.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.observations import UpstreamChanges
from reconciler.formats.events import KeptnEvent
from reconciler.ingress.submit import Ingress
from reconciler.settings import Settings
from reconciler.upstream.files import GitFiles
from reconciler.upstream.snapshot import SnapshotStore

log = get_logger("reconciler.controller.source")

APPROVAL_FILES_EVERY = 3.0
"""Seconds between checks of the approval files while an approval is pending."""


class Records(Protocol):
    """The ledger as the source side writes it."""

    def extend(self, events: Iterable[KeptnEvent]) -> list[bool]: ...


class Engine(Protocol):
    """The engine loop as the source side wakes it."""

    def kick(self) -> None: ...


@dataclass
class SourceLoop:
    settings: Settings
    store: SnapshotStore
    ledger: Records
    files: GitFiles
    engine: Engine
    ingress: Ingress | None = None
    """The ways in, once started (the first poll runs before them)."""
    _approvals_checked: float = 0.0

    def fetched(self, changes: UpstreamChanges) -> None:
        """One poll's changes through admit → record → publish (the poller's handler)."""
        events = self.admit(changes)
        self.record(events)
        self.publish(events)

    def admit(self, changes: UpstreamChanges) -> list[KeptnEvent]:
        return self.store.decide(changes)

    def record(self, events: Sequence[KeptnEvent]) -> None:
        self.ledger.extend(events)

    def publish(self, events: Sequence[KeptnEvent]) -> None:
        self.store.fold(events)
        self.refresh_project()
        self.answer_approval_files(force=True)
        self.engine.kick()

    # ------------------------------------------------------------------ what the ways in see

    def project(self) -> str:
        return self.store.current().project or self.settings.project

    def refresh_project(self) -> None:
        if self.ingress is not None:
            self.ingress.project = self.project()

    # ------------------------------------------------------------------ approval files

    def answer_approval_files(self, force: bool = False) -> None:
        """Approvals decided by files on main: checked on every upstream change and, while an
        approval is pending, every few seconds (a file may predate the approval it answers)."""
        ingress = self.ingress
        if ingress is None:
            return
        now = time.monotonic()
        if not force and now - self._approvals_checked < APPROVAL_FILES_EVERY:
            return
        self._approvals_checked = now
        from reconciler.ingress.approvals import ApprovalPolicy, record_approval_files

        try:
            record_approval_files(
                ingress,
                self.files,
                branch=self.settings.main_branch,
                approval_dir=self.settings.approval_dir,
                head=self.store.current().commit(self.settings.main_branch),
                policy=ApprovalPolicy.from_settings(self.settings),
            )
        except Exception as exc:  # a broken file must not stop the loop; it is logged
            log.warning("approval_files_failed", error=redact(f"{type(exc).__name__}: {exc}"))

    def on_engine_cycle(self, controller: Any) -> None:
        if any(run.name == "approval" for _, run in controller.state.open_tasks()):
            self.answer_approval_files()
