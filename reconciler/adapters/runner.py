"""Where tasks run: the small protocol both runners implement.

A runner launches a `TaskSpec` under its deterministic job name or adopts the job
already launched under that name (after a restart), waits for it with a deadline,
and reports the outcome with the tail of its output. The Kubernetes runner creates
Jobs; the local runner (the embedded default when no cluster is configured) runs
the same spec as a process on this host.

Every job created is appended once to `<data_dir>/jobs/launches.jsonl` (durable
across restarts, unlike an in-process counter), so crash trials and operators can
check that no task ran twice. A process killed between creating a job and recording
it leaves the line to the process that adopts the job (`LaunchJournal.ensure`).

Which runner a process uses is decided once, from the settings and the environment
(`runtime.environment`).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from reconciler.base.clock import utcnow
from reconciler.core.jobspec import TaskSpec
from reconciler.core.outcomes import PartHealth
from reconciler.formats.events import format_time

LOG_TAIL_BYTES = 16 * 1024
"""Tail of each task's output kept for the `.finished` message (the ledger caps events at 512 KiB)."""


class RunnerError(RuntimeError):
    """The runner's backend cannot be used (e.g. the cluster is unreachable); the message is final."""


@dataclass(frozen=True)
class JobHandle:
    """A launched or adopted job."""

    name: str
    namespace: str
    runner: str
    started_at: datetime
    """When the job was first launched (kept across adoption), the base of its deadline."""
    adopted: bool = False
    """True when the job already existed (launched before a restart)."""
    details: dict[str, Any] = field(default_factory=dict)


Reason = Literal["Completed", "Failed", "DeadlineExceeded", "NeverRan", "Lost"]


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended, in words a person can act on."""

    succeeded: bool
    reason: Reason
    message: str
    """Keptn-style failure text (without the `Error while creating job: ` prefix); empty on success."""
    logs: str
    """Bounded tail of the output, formatted per container like job-executor-service."""
    finished_at: datetime
    exit_code: int | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    """Paths a later step may read, e.g. `locustStatsDir` for a locust run with --csv."""


class Runner(Protocol):
    """Launch-or-adopt, wait with a deadline, logs, cleanup."""

    name: str

    def secret_keys(self, namespace: str, secret: str) -> list[str] | None:
        """Keys of a Secret, None when they cannot be listed (then the whole Secret is referenced).

        Raises `JobSpecError` when the Secret does not exist."""
        ...

    def launch(self, spec: TaskSpec) -> JobHandle:
        """Start the job, or adopt the one already started under `spec.job_name`."""
        ...

    def wait(self, handle: JobHandle, spec: TaskSpec) -> JobOutcome:
        """Block until the job ends or `spec.max_poll_seconds` after `handle.started_at` passed."""
        ...

    def logs(self, handle: JobHandle) -> str: ...

    def health(self) -> PartHealth | None:
        """How the runner's backend is doing (None: nothing to say)."""
        ...

    def cleanup(self, handle: JobHandle) -> None:
        """Stop the job and delete what it left behind (used after a deadline or failure to start)."""
        ...


class LaunchJournal:
    """Append-only record of launches: one JSON line per job created, whoever created it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "jobs" / "launches.jsonl"
        self._lock = threading.RLock()  # `ensure` holds it around `record`

    def record(self, runner: str, spec: TaskSpec, **extra: Any) -> None:
        line = {
            "time": format_time(utcnow()),
            "runner": runner,
            "job": spec.job_name,
            "namespace": spec.namespace,
            "event": spec.event_id,
            "context": spec.context,
            "action": spec.action_name,
            "task": spec.task_name,
            **extra,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def ensure(self, runner: str, spec: TaskSpec, **extra: Any) -> None:
        """Record a job found already created unless its creator recorded it. Only adoptions
        (after a restart) read the journal; a launch appends without reading."""
        with self._lock:
            if any(line.get("job") == spec.job_name for line in self.launches()):
                return
            self.record(runner, spec, adopted=True, **extra)

    def launches(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
