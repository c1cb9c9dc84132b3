"""Where this process runs, decided once: in a cluster or not, which runner runs jobs,
whether to elect a leader, and the Kubernetes client all of it uses.

`Environment.detect(settings)` applies one rule (in a cluster = KUBERNETES_SERVICE_HOST
set and the service account's token mounted) and one order for the cluster's address
(the `kubeconfig` setting, then $KUBECONFIG, then ~/.kube/config, then the in-cluster
service account), so the Lease elector and the job runner cannot disagree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from reconciler.adapters.local_runner import LocalRunner, job_user_notes
from reconciler.adapters.runner import LaunchJournal, Runner
from reconciler.settings import Settings

if TYPE_CHECKING:
    from kubernetes import client as k8s

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


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


def _kubeconfig(settings: Settings, environ: Mapping[str, str]) -> Path | None:
    if settings.kubeconfig is not None:
        return settings.kubeconfig
    env = environ.get("KUBECONFIG", "")
    for part in env.split(os.pathsep):
        if part and Path(part).is_file():
            return Path(part)
    home = Path(environ.get("HOME", str(Path.home()))) / ".kube" / "config"
    return home if home.is_file() else None


def in_cluster(environ: Mapping[str, str], token: Path = SERVICE_ACCOUNT_TOKEN) -> bool:
    """The one rule: inside a pod the kubelet sets KUBERNETES_SERVICE_HOST and mounts the
    service account's token (without the token there is nothing to talk to the API with)."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and token.is_file()


@dataclass(frozen=True)
class Environment:
    """What `detect` found; the wiring builds the runner and the elector from it."""

    in_cluster: bool
    kubeconfig: Path | None
    runner: RunnerChoice
    election: bool

    @classmethod
    def detect(
        cls,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        *,
        token: Path = SERVICE_ACCOUNT_TOKEN,
    ) -> Environment:
        env = dict(os.environ if environ is None else environ)
        kubeconfig = _kubeconfig(settings, env)
        inside = in_cluster(env, token)
        return cls(
            in_cluster=inside,
            kubeconfig=kubeconfig,
            runner=_choose_runner(settings.runner, kubeconfig, inside),
            election=settings.leader_election == "on" or (settings.leader_election == "auto" and inside),
        )

    def kube_client(self) -> k8s.ApiClient:
        """The cluster the runner and the elector talk to (a kubeconfig wins over the pod's own account)."""
        from reconciler.adapters.kube_runner import api_client

        return api_client(self.kubeconfig, in_cluster=self.in_cluster)

    def build_runner(self, settings: Settings) -> Runner:
        journal = LaunchJournal(settings.data_dir)
        if self.runner.name == "local":
            return local_runner(settings, journal=journal)
        from reconciler.adapters.kube_runner import KubeRunner

        return KubeRunner(self.kube_client(), journal=journal)

    def connect(self, settings: Settings) -> Callable[[], Runner]:
        """The runner, built on first use (a cluster that cannot be configured fails the first job, not the start)."""
        return lambda: self.build_runner(settings)

    def warnings(self, settings: Settings) -> list[str]:
        """What the log and `reconciler status` must say about where jobs run: an automatic choice
        of the local runner, and who local jobs run as (see `local_runner.job_user_notes`)."""
        choice = self.runner
        if choice.name != "local":
            return []
        out = []
        if choice.reason.startswith("auto"):
            out.append(
                f"runner: auto chose the local runner ({choice.reason.removeprefix('auto: ')}): job/config.yaml "
                "tasks run as processes on this host, and whoever can push a stage branch can run what "
                f"local_commands allows ({'; '.join(settings.local_commands) or 'nothing'}); set runner: local "
                "to make this choice explicit, or give a kubeconfig to run jobs on Kubernetes"
            )
        return out + job_user_notes(settings.local_job_user, settings.data_dir)


def _choose_runner(setting: str, kubeconfig: Path | None, inside: bool) -> RunnerChoice:
    """`runner: kubernetes|local` as configured; `auto` picks kubernetes when a kubeconfig
    (setting, $KUBECONFIG, ~/.kube/config) or an in-cluster service account is found."""
    if setting == "local":
        return RunnerChoice("local", "configured: runner=local")
    if setting == "kubernetes":
        return RunnerChoice("kubernetes", "configured: runner=kubernetes", kubeconfig, inside)
    if kubeconfig is not None:
        return RunnerChoice("kubernetes", f"auto: kubeconfig {kubeconfig} found", kubeconfig)
    if inside:
        return RunnerChoice("kubernetes", "auto: running inside a cluster", None, True)
    return RunnerChoice("local", "auto: no kubeconfig or in-cluster config found")


def local_runner(settings: Settings, *, journal: LaunchJournal | None = None) -> LocalRunner:
    """The local runner as the settings configure it (allow-list, job user)."""
    return LocalRunner(
        Path(settings.data_dir),
        journal=journal,
        allowed_commands=settings.local_commands,
        job_user=settings.local_job_user,
    )
