"""The configuration being served, as one immutable value: what plan and admission read.

A `ConfigSnapshot` holds, for the commits the reconciler accepted, everything deciding needs
without reading git: the validated configuration (`config`: shipyard, stages, services, job
configs, SLOs), the commit served per branch, the shipyards at the other main commits that
running sequences are pinned to (`shipyards`), and the records behind it (what was judged
last, what was rejected and why). The shell builds a new one when the upstream changes or a
sequence pins a shipyard not loaded yet; nothing changes one after it is built (its
mappings are read-only views).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from reconciler.core.validation import UpstreamConfig
from reconciler.formats.layout import is_service
from reconciler.formats.problems import Problem
from reconciler.formats.shipyard import Shipyard
from reconciler.formats.upstreamrecords import Rejection


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


@dataclass(frozen=True)
class ConfigSnapshot:
    """The configuration being served: validated, pinned to one commit per branch."""

    main_branch: str = "main"
    project: str = ""
    accepted: Mapping[str, str] = field(default_factory=dict)
    """Branch -> the commit new sequences read (their `gitcommitid`)."""
    seen: Mapping[str, str] = field(default_factory=dict)
    """Branch -> the last tip judged (accepted or rejected)."""
    rejected: Mapping[str, Rejection] = field(default_factory=dict)
    """Branches whose newest commit was rejected, with the problems."""
    deleted: frozenset[str] = frozenset()
    config: UpstreamConfig | None = None
    """The whole configuration at `accepted`, validated (None before anything was accepted)."""
    warnings: tuple[Problem, ...] = ()
    shipyards: Mapping[str, Shipyard | None] = field(default_factory=dict)
    """Main commit -> its shipyard, for commits other than the accepted one that running
    sequences are pinned to (`shipyardcommit`), and for a snapshot read without validation."""
    listed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Stage -> services, for a snapshot read without validation (`config` is None)."""
    shipyard_error: str = ""
    """Why a snapshot read without validation has no shipyard."""

    def __post_init__(self) -> None:
        for name in ("accepted", "seen", "rejected", "shipyards", "listed"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    # -- what plan reads (core.planning.ConfigView) ---------------------------------------------

    def commit(self, branch: str) -> str | None:
        return self.accepted.get(branch)

    def main_commit(self) -> str | None:
        return self.accepted.get(self.main_branch)

    def stage_head(self, stage: str) -> str | None:
        """Accepted head commit of a stage branch (what a new sequence pins)."""
        return self.accepted.get(stage)

    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        """The accepted shipyard, or the one at a main `commit` when it is loaded (else None)."""
        if commit is None or commit == self.main_commit():
            if self.config is not None:
                return self.config.shipyard
            main = self.main_commit()
            return self.shipyards.get(main) if main else None
        return self.shipyards.get(commit)

    @property
    def ready(self) -> bool:
        """Whether a valid shipyard is being served (nothing can run before)."""
        return self.config is not None and self.config.shipyard is not None

    # -- what admission of outside events reads (core.admission.UpstreamView) -------------------

    def services(self, stage: str) -> frozenset[str] | None:
        """Services of the stage at its accepted commit (empty for a stage not served)."""
        if self.config is not None:
            stage_config = self.config.stages.get(stage)
            return frozenset(stage_config.services) if stage_config is not None else frozenset()
        return frozenset(n for n in self.listed.get(stage, frozenset()) if is_service(n))

    def first_stage(self) -> str | None:
        shipyard = self.shipyard()
        if shipyard is None or not shipyard.spec.stages:
            return None
        return shipyard.spec.stages[0].name

    def with_shipyards(self, loaded: Mapping[str, Shipyard | None]) -> ConfigSnapshot:
        """This snapshot knowing the shipyards at more main commits (running sequences' pins)."""
        if all(c in self.shipyards for c in loaded):
            return self
        return replace(self, shipyards={**self.shipyards, **loaded})
