"""The Kubernetes runner: one Job per task, through the official `kubernetes` client.

For each task a ConfigMap carrying the task's files and a Job are created, both
named after the triggered event and the task's position (`job_name`), so after a
restart a create answers 409 and the runner adopts the Job it already made.
Files go in a ConfigMap rather than an init container because the pod then needs
neither the upstream's credentials nor network access to it; its 1 MiB limit is
checked when the spec is built. The ConfigMap is owned by its Job, so the Job's
TTL (`ttlSecondsAfterFinished`) removes both.

Waiting watches the Job's pods (woken by every change, bounded by a short request
timeout) and re-reads the Job: `Complete`/`Failed` conditions end the wait, and so
do pod states that will never run (image pull errors, unschedulable, a missing
Secret or ConfigMap key, a Job controller that cannot create the pod because of a
missing service account or an admission rejection). The Job carries
`activeDeadlineSeconds` = maxPollDuration, so the cluster stops it at the deadline
even without us; a Job still running when we give up is deleted.
"""

from __future__ import annotations

import base64
import contextlib
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError

from reconciler.adapters.neterrors import connection_reason
from reconciler.adapters.runner import LOG_TAIL_BYTES, JobHandle, JobOutcome, LaunchJournal, RunnerError
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact, register_secrets
from reconciler.core.jobspec import JobSpecError, TaskSpec, files_configmap, job_manifest, timeout_message
from reconciler.core.outcomes import PartHealth
from reconciler.formats.gotime import parse_timestamp

log = get_logger("reconciler.kube")

NEVER_RUNS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Container waiting reasons after which the task will not start without someone changing something."""

LOG_TAIL_LINES = 500
WAIT_GRACE_SECONDS = 10.0
"""After maxPollDuration, time for the cluster's own deadline to mark the Job failed."""
REQUEST_TIMEOUT = 30.0
"""Seconds per API request: the client waits forever by default, and a hung API server must
not hang a task."""
CREATE_RETRY_SECONDS = 60.0
"""How long a create answered 5xx/429 or timed out is retried before the task fails."""
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
HEALTH_PART = "kubernetes"


class ClusterError(RunnerError):
    """The API server could not be reached or refused a request we cannot do without."""


def api_client(kubeconfig: Path | None = None, *, in_cluster: bool = False) -> client.ApiClient:
    """A client for the configured cluster, without touching the library's global configuration."""
    cfg = client.Configuration()
    loader: Any = config  # the loaders are untyped
    if in_cluster and kubeconfig is None:
        loader.load_incluster_config(client_configuration=cfg)
    else:
        loader.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, client_configuration=cfg)
    return client.ApiClient(cfg)


# --- reading cluster state (pure functions over API dicts) -------------------------------------------


def job_condition(job: dict[str, Any]) -> tuple[str, str, str] | None:
    """(type, reason, message) of a terminal condition: Complete, Failed or Suspended."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "Failed", "Suspended"):
            return str(cond["type"]), str(cond.get("reason") or ""), str(cond.get("message") or "")
    return None


def pod_blocker(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a pod will never run its task."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return "Unschedulable", str(cond.get("message") or "")
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in NEVER_RUNS:
                return str(waiting["reason"]), str(waiting.get("message") or "")
    return None


def creation_blocker(events: Iterable[dict[str, Any]], job: str) -> tuple[str, str] | None:
    """A Job controller event saying it cannot create the pod (bad service account, admission)."""
    for event in events:
        involved = event.get("involvedObject") or {}
        if (
            involved.get("kind") == "Job"
            and involved.get("name") == job
            and event.get("reason") == "FailedCreate"
        ):
            return "FailedCreate", str(event.get("message") or "")
    return None


def _pod_fingerprint(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    return repr(
        (
            status.get("phase"),
            status.get("conditions"),
            status.get("containerStatuses"),
            status.get("initContainerStatuses"),
        )
    )


def _container_log_header(pod: str, cs: dict[str, Any]) -> str:
    name = cs.get("name", "job")
    terminated = (cs.get("state") or {}).get("terminated") or {}
    if terminated and terminated.get("exitCode", 0) == 0:
        return f"Container {name} of pod {pod}:"
    if terminated:
        extra = (
            f"Message: {terminated['message']}"
            if terminated.get("message")
            else f"ExitCode: {terminated.get('exitCode')}"
        )
        return f"Container {name} of pod {pod} terminated with an error (Reason: {terminated.get('reason')}, {extra}):"
    return f"Container {name} of pod {pod}:"


def _bounded(text: str, limit: int = LOG_TAIL_BYTES) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    cut = data[-limit:].decode("utf-8", errors="replace")
    return f"[... {len(data) - limit} earlier bytes not shown ...]\n" + cut.split("\n", 1)[-1]


class KubeRunner:
    """Creates, adopts, watches and cleans up the Jobs of tasks."""

    name = "kubernetes"

    def __init__(
        self,
        api: client.ApiClient,
        *,
        journal: LaunchJournal | None = None,
        wake_seconds: float = 2.0,
        grace_seconds: float = WAIT_GRACE_SECONDS,
        request_timeout: float = REQUEST_TIMEOUT,
        create_retry_seconds: float = CREATE_RETRY_SECONDS,
    ) -> None:
        # Typed as Any: the client's generated stubs want model objects, we send manifest dicts
        # (which it accepts and validates) so that render and run share one manifest.
        self.api: Any = api
        self.batch: Any = client.BatchV1Api(api)
        self.core: Any = client.CoreV1Api(api)
        self.journal = journal
        self.wake_seconds = wake_seconds
        self.grace_seconds = grace_seconds
        self.request_timeout = request_timeout
        self.create_retry_seconds = create_retry_seconds
        self._health: PartHealth | None = None

    def health(self) -> PartHealth | None:
        """How the API server is doing, as the last request found it (None: not asked yet); the
        controller puts it on the problems board, also while a create is still being retried."""
        return self._health

    def _report(self, problem: str | None, *, retrying: bool = True) -> None:
        self._health = PartHealth(HEALTH_PART, problem, retrying)

    def _unreachable(self, exc: BaseException) -> str:
        """The API server's address and the OS's reason, not urllib3's pool internals."""
        host = str(getattr(getattr(self.api, "configuration", None), "host", "") or "the API server")
        return redact(f"{host}: {connection_reason(exc)}")

    def _dict(self, obj: Any) -> dict[str, Any]:
        value = self.api.sanitize_for_serialization(obj)
        return value if isinstance(value, dict) else {}

    # --- secrets -----------------------------------------------------------------------------

    def secret_keys(self, namespace: str, secret: str) -> list[str] | None:
        try:
            found = self.core.read_namespaced_secret(secret, namespace, _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status == 404:
                raise JobSpecError(f"secret {secret!r} not found in namespace {namespace!r}") from None
            if exc.status == 403:
                return None  # cannot list keys: reference the whole Secret instead
            raise ClusterError(
                f"Error while creating job: reading secret {secret!r}: {_api_message(exc)}"
            ) from None
        except Urllib3Error as exc:
            raise ClusterError(f"Error while connecting to cluster: {self._unreachable(exc)}") from None
        data = found.data or {}
        # The pod's log may print them: make sure they never reach the ledger or our logs.
        values = []
        for raw in data.values():
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                values.append(base64.b64decode(raw).decode())
        register_secrets(values)
        return sorted(data.keys())

    # --- launch / adopt -----------------------------------------------------------------------

    def launch(self, spec: TaskSpec) -> JobHandle:
        cm = files_configmap(spec)
        if cm is not None:
            self._create(
                lambda: self.core.create_namespaced_config_map(
                    spec.namespace, cm, _request_timeout=self.request_timeout
                ),
                f"ConfigMap {spec.job_name}",
            )
        created = self._create(
            lambda: self.batch.create_namespaced_job(
                spec.namespace, job_manifest(spec), _request_timeout=self.request_timeout
            ),
            f"Job {spec.job_name}",
        )
        if created is None:
            job = self._dict(self._read_job(spec.job_name, spec.namespace))
            adopted = True
            if self.journal is not None:  # its creator may have died before recording it
                self.journal.ensure(self.name, spec, image=spec.image)
        else:
            job = self._dict(created)
            adopted = False
            if self.journal is not None:
                self.journal.record(self.name, spec, image=spec.image)
        meta = job.get("metadata") or {}
        if cm is not None and meta.get("uid"):
            self._own(spec, meta)
        started = meta.get("creationTimestamp")
        return JobHandle(
            name=spec.job_name,
            namespace=spec.namespace,
            runner=self.name,
            started_at=parse_timestamp(started) if isinstance(started, str) else datetime.now(UTC),
            adopted=adopted,
            details={"uid": meta.get("uid", "")},
        )

    def _create(self, call: Any, what: str) -> Any:
        """The created object, or None when it already exists (409: ours, from before a restart
        or from an attempt whose answer timed out).

        An API server answering 5xx/429 or not answering in time is overloaded or restarting:
        the create is retried with backoff for `create_retry_seconds` (a retry after a
        timed-out create that did happen answers 409 and is adopted, so nothing runs twice).
        A refused connection or a 4xx fails at once: retrying cannot fix an address or a spec.
        """
        deadline = time.monotonic() + self.create_retry_seconds
        delay = 0.25
        while True:
            try:
                created = call()
            except ApiException as exc:
                if exc.status == 409:
                    self._report(None)
                    return None
                if exc.status not in TRANSIENT_STATUSES:
                    raise JobSpecError(_api_message(exc)) from None
                problem = _api_message(exc)
            except (ReadTimeoutError, ProtocolError) as exc:
                problem = f"no answer within {self.request_timeout:g}s ({type(exc).__name__})"
            except MaxRetryError as exc:
                if not isinstance(exc.reason, ReadTimeoutError | ProtocolError):
                    raise ClusterError(
                        f"Error while connecting to cluster: {self._unreachable(exc)}"
                    ) from None
                problem = f"no answer within {self.request_timeout:g}s ({type(exc.reason).__name__})"
            except Urllib3Error as exc:
                raise ClusterError(f"Error while connecting to cluster: {self._unreachable(exc)}") from None
            else:
                self._report(None)
                return created
            remaining = deadline - time.monotonic()
            message = f"creating {what}: {problem}"
            if remaining <= 0:
                self._report(f"{message}; gave up after {self.create_retry_seconds:g}s", retrying=False)
                raise ClusterError(
                    f"Error while creating job: {message} (retried for {self.create_retry_seconds:g}s)"
                )
            wait = min(delay, remaining)
            self._report(f"{message}; retrying in {wait:.2g}s")
            log.warning("kube.api_retry", what=what, error=redact(problem), retry_in=round(wait, 3))
            time.sleep(wait)
            delay = min(delay * 2, 8.0)

    def _read_job(self, name: str, namespace: str) -> Any:
        return self.batch.read_namespaced_job(name, namespace, _request_timeout=self.request_timeout)

    def _own(self, spec: TaskSpec, job_meta: dict[str, Any]) -> None:
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": spec.job_name,
            "uid": job_meta["uid"],
        }
        with contextlib.suppress(ApiException, Urllib3Error):
            self.core.patch_namespaced_config_map(
                spec.job_name,
                spec.namespace,
                {"metadata": {"ownerReferences": [owner]}},
                _request_timeout=self.request_timeout,
            )

    # --- wait ------------------------------------------------------------------------------------

    def _pods(self, handle: JobHandle) -> tuple[list[dict[str, Any]], str | None]:
        listing = self.core.list_namespaced_pod(
            handle.namespace, label_selector=f"job-name={handle.name}", _request_timeout=self.request_timeout
        )
        data = self._dict(listing)
        pods = [
            p
            for p in data.get("items") or []
            if ((p.get("metadata") or {}).get("labels") or {}).get("job-name") == handle.name
        ]
        version = (data.get("metadata") or {}).get("resourceVersion")
        return pods, version if isinstance(version, str) and version.isdigit() else None

    def _events(self, handle: JobHandle) -> list[dict[str, Any]]:
        try:
            listing = self.core.list_namespaced_event(
                handle.namespace,
                field_selector=f"involvedObject.name={handle.name}",
                _request_timeout=self.request_timeout,
            )
        except ApiException:
            return []
        return list(self._dict(listing).get("items") or [])

    def _wake(self, handle: JobHandle, seen: dict[str, str], version: str | None, seconds: float) -> None:
        """Block until a pod of the job changes, or `seconds` pass."""
        if seconds <= 0:
            return
        stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
        kwargs: dict[str, Any] = {
            "label_selector": f"job-name={handle.name}",
            "timeout_seconds": max(1, math.ceil(seconds)),
            "_request_timeout": seconds,
        }
        if version:
            kwargs["resource_version"] = version
        end = time.monotonic() + seconds
        try:
            for event in stream.stream(self.core.list_namespaced_pod, handle.namespace, **kwargs):
                pod = self._dict(event.get("object"))
                meta = pod.get("metadata") or {}
                if (meta.get("labels") or {}).get("job-name") != handle.name:
                    continue
                if seen.get(str(meta.get("name"))) != _pod_fingerprint(pod) or event.get("type") == "DELETED":
                    return
                if time.monotonic() >= end:
                    return
        except (ApiException, Urllib3Error, ValueError):
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        finally:
            stream.stop()

    def wait(self, handle: JobHandle, spec: TaskSpec) -> JobOutcome:
        """Until the Job ends, a pod shows it never will, or maxPollDuration (+ grace) passes.

        API errors (connection refused, 5xx) are retried until the deadline: a short
        API-server outage must not fail a deploy that is running fine."""
        deadline = handle.started_at.timestamp() + spec.max_poll_seconds
        hard_stop = deadline + (self.grace_seconds if spec.active_deadline_seconds else 0)
        last_error = ""
        while True:
            try:
                outcome, pods, version = self._observe(handle, spec)
            except (Urllib3Error, ApiException) as exc:
                last_error = _api_message(exc) if isinstance(exc, ApiException) else self._unreachable(exc)
                outcome, pods, version = None, [], None
                self._report(f"watching Job {handle.name}: {last_error}")
            else:
                self._report(None)
            if outcome is not None:
                return outcome
            now = time.time()
            if now >= hard_stop:
                if last_error and not pods:
                    return JobOutcome(
                        False,
                        "Lost",
                        f"Error while connecting to cluster: {last_error}",
                        "",
                        datetime.now(UTC),
                    )
                logs = self.logs(handle)
                self.cleanup(handle)
                return JobOutcome(
                    False,
                    "DeadlineExceeded",
                    timeout_message(handle.name, spec.max_poll_seconds),
                    logs,
                    datetime.now(UTC),
                )
            seen = {str((p.get("metadata") or {}).get("name")): _pod_fingerprint(p) for p in pods}
            budget = min(self.wake_seconds, max(0.0, hard_stop - now))
            if last_error:
                time.sleep(budget)
                last_error = ""
            else:
                self._wake(handle, seen, version, budget)

    def _observe(
        self, handle: JobHandle, spec: TaskSpec
    ) -> tuple[JobOutcome | None, list[dict[str, Any]], str | None]:
        """One look at the Job and its pods: an outcome when the task has ended or never will."""
        try:
            job = self._dict(self._read_job(handle.name, handle.namespace))
        except ApiException as exc:
            if exc.status == 404:
                return self._fail(handle, "Lost", "Lost", "the Job was deleted before it finished"), [], None
            raise
        cond = job_condition(job)
        if cond is not None:
            return self._ended(handle, spec, cond), [], None
        pods, version = self._pods(handle)
        for pod in pods:
            blocker = pod_blocker(pod)
            if blocker is not None:
                outcome = self._fail(handle, "NeverRan", *blocker)
                self.cleanup(handle)
                return outcome, pods, version
        if not pods:
            blocker = creation_blocker(self._events(handle), handle.name)
            if blocker is not None:
                self.cleanup(handle)
                return self._fail(handle, "NeverRan", *blocker), pods, version
        return None, pods, version

    def _ended(self, handle: JobHandle, spec: TaskSpec, cond: tuple[str, str, str]) -> JobOutcome:
        kind, reason, message = cond
        logs = self.logs(handle)
        finished = datetime.now(UTC)
        if kind == "Complete":
            return JobOutcome(True, "Completed", "", logs, finished, 0)
        if kind == "Failed" and reason == "DeadlineExceeded":
            return JobOutcome(
                False, "DeadlineExceeded", timeout_message(handle.name, spec.max_poll_seconds), logs, finished
            )
        if kind == "Suspended":
            text = f"job {handle.name} was suspended. Reason: {reason}, Message: {message}"
        else:
            text = f"job {handle.name} failed. Reason: {reason}, Message: {message}"
        return JobOutcome(False, "Failed", text, logs, finished)

    def _fail(self, handle: JobHandle, kind: Any, reason: str, message: str) -> JobOutcome:
        return JobOutcome(
            False,
            kind,
            f"job {handle.name} failed. Reason: {reason}, Message: {message}",
            self.logs(handle),
            datetime.now(UTC),
        )

    # --- logs / cleanup -----------------------------------------------------------------------------

    def logs(self, handle: JobHandle) -> str:
        """Per container, like job-executor-service: `Container <c> of pod <p>:` then the log."""
        try:
            pods, _ = self._pods(handle)
        except (ApiException, Urllib3Error):
            return ""
        blocks: list[str] = []
        for pod in pods:
            pod_name = str((pod.get("metadata") or {}).get("name"))
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            if not statuses:
                statuses = [
                    {"name": c.get("name", "job")} for c in (pod.get("spec") or {}).get("containers") or []
                ]
            for cs in statuses:
                try:
                    text = self.core.read_namespaced_pod_log(
                        pod_name,
                        handle.namespace,
                        container=cs.get("name"),
                        tail_lines=LOG_TAIL_LINES,
                        _request_timeout=self.request_timeout,
                    )
                except (ApiException, Urllib3Error):
                    continue
                if not isinstance(text, str) or not text:
                    continue
                blocks.append(f"{_container_log_header(pod_name, cs)}\n{_bounded(text)}\n")
        return _bounded("\n".join(blocks), 2 * LOG_TAIL_BYTES)

    def cleanup(self, handle: JobHandle) -> None:
        """Delete the Job (its pods and, by owner reference, its ConfigMap go with it)."""
        body = client.V1DeleteOptions(propagation_policy="Background")
        with contextlib.suppress(ApiException, Urllib3Error):
            self.batch.delete_namespaced_job(
                handle.name, handle.namespace, body=body, _request_timeout=self.request_timeout
            )
        with contextlib.suppress(ApiException, Urllib3Error):
            self.core.delete_namespaced_config_map(
                handle.name, handle.namespace, _request_timeout=self.request_timeout
            )


def _api_message(exc: ApiException) -> str:
    import json

    detail = ""
    try:
        detail = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        detail = ""
    return f"{exc.status} {exc.reason}" + (f": {detail}" if detail else "")
