"""A launch journal for tests of "the launcher died between creating a job and recording it"."""

from __future__ import annotations

from typing import Any

from reconciler.adapters.runner import LaunchJournal


class DiesBeforeRecording(LaunchJournal):
    """Raises (standing in for SIGKILL) where a launch would append its line; an adopter's
    `ensure` still records, so the journal shows what a restarted process writes."""

    def record(self, runner: str, spec: Any, **extra: Any) -> None:
        if not extra.get("adopted"):
            raise SystemExit("killed")
        super().record(runner, spec, **extra)
