"""Where tasks run: the small protocol both runners implement, and how one is chosen.

A runner launches a `TaskSpec` under its deterministic job name or adopts the job
already launched under that name (after a restart), waits for it with a deadline,
and reports the outcome with the tail of its output. The Kubernetes runner creates
Jobs; the local runner (the embedded default when no cluster is configured) runs
the same spec as a process on this host.

Every launch (never an adoption) is appended to `<data_dir>/jobs/launches.jsonl`
(durable across restarts, unlike an in-process counter), so crash trials and
operators can check that no task ran twice.

May import: `reconciler.core`, `reconciler.formats`, `reconciler.settings`,
`reconciler.base.redact`; the runner modules import their own clients lazily.
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
from reconciler.core.jobspec import JobDefaults, TaskSpec
from reconciler.formats.events import format_time
from reconciler.settings import Settings

LOG_TAIL_BYTES = 16 * 1024
"""Tail of each task's output kept for the `.finished` message (the ledger caps events at 512 KiB)."""

ServiceAccountToken = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


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

    def cleanup(self, handle: JobHandle) -> None:
        """Stop the job and delete what it left behind (used after a deadline or failure to start)."""
        ...


def job_defaults(settings: Settings, namespace: str | None = None) -> JobDefaults:
    return JobDefaults(
        namespace=namespace or settings.job_namespace,
        service_account=settings.job_service_account,
        allowed_images=tuple(settings.allowed_images),
        allow_privileged=settings.allow_privileged_jobs,
        task_deadline_seconds=settings.job_task_deadline,
    )


class LaunchJournal:
    """Append-only record of launches: one JSON line per job started, never per adoption."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "jobs" / "launches.jsonl"
        self._lock = threading.Lock()

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

    def launches(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class RunnerChoice:
    name: Literal["kubernetes", "local"]
    reason: str
    kubeconfig: Path | None = None
    in_cluster: bool = False

    def status(self) -> dict[str, Any]:
        """For `reconciler status` and status.json."""
        out: dict[str, Any] = {"runner": self.name, "reason": self.reason}
        if self.kubeconfig is not None:
            out["kubeconfig"] = str(self.kubeconfig)
        return out


def _kubeconfig(settings: Settings, environ: dict[str, str]) -> Path | None:
    if settings.kubeconfig is not None:
        return settings.kubeconfig
    env = environ.get("KUBECONFIG", "")
    for part in env.split(os.pathsep):
        if part and Path(part).is_file():
            return Path(part)
    home = Path(environ.get("HOME", str(Path.home()))) / ".kube" / "config"
    return home if home.is_file() else None


def _in_cluster(environ: dict[str, str]) -> bool:
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and ServiceAccountToken.is_file()


def choose_runner(settings: Settings, environ: dict[str, str] | None = None) -> RunnerChoice:
    """`runner: kubernetes|local` as configured; `auto` picks kubernetes when a kubeconfig
    (setting, $KUBECONFIG, ~/.kube/config) or an in-cluster service account is found."""
    env = dict(os.environ if environ is None else environ)
    kubeconfig = _kubeconfig(settings, env)
    in_cluster = _in_cluster(env)
    if settings.runner == "local":
        return RunnerChoice("local", "configured: runner=local")
    if settings.runner == "kubernetes":
        return RunnerChoice("kubernetes", "configured: runner=kubernetes", kubeconfig, in_cluster)
    if kubeconfig is not None:
        return RunnerChoice("kubernetes", f"auto: kubeconfig {kubeconfig} found", kubeconfig)
    if in_cluster:
        return RunnerChoice("kubernetes", "auto: running inside a cluster", None, True)
    return RunnerChoice("local", "auto: no kubeconfig or in-cluster config found")


def runner_warnings(choice: RunnerChoice, settings: Settings) -> list[str]:
    """What the log and `reconciler status` must say about where jobs run: an automatic choice
    of the local runner, and who local jobs run as (see `local_runner.job_user_notes`)."""
    if choice.name != "local":
        return []
    from reconciler.adapters.local_runner import job_user_notes

    out = []
    if choice.reason.startswith("auto"):
        out.append(
            f"runner: auto chose the local runner ({choice.reason.removeprefix('auto: ')}): job/config.yaml "
            "tasks run as processes on this host, and whoever can push a stage branch can run what "
            f"local_commands allows ({'; '.join(settings.local_commands) or 'nothing'}); set runner: local "
            "to make this choice explicit, or give a kubeconfig to run jobs on Kubernetes"
        )
    return out + job_user_notes(settings)


def select_runner(settings: Settings, environ: dict[str, str] | None = None) -> Runner:
    """The runner the settings ask for (see `choose_runner`)."""
    choice = choose_runner(settings, environ)
    journal = LaunchJournal(settings.data_dir)
    if choice.name == "local":
        from reconciler.adapters.local_runner import LocalRunner

        return LocalRunner.from_settings(settings, journal=journal)
    from reconciler.adapters.kube_runner import KubeRunner, api_client

    return KubeRunner(api_client(choice.kubeconfig, in_cluster=choice.in_cluster), journal=journal)
