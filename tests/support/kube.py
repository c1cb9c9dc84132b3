"""A Kubernetes API-server test double on 127.0.0.1 (kmock), for the official synchronous client.

kmock's emulator keeps objects in memory and speaks the API over HTTP; it runs
here on a background thread's event loop. What a real API server does and kmock
does not is added in `_ApiServer`: uid, creationTimestamp and resourceVersion on
create, and pod logs served from `KubeDouble.logs`. There is no controller: a test
plays the Job controller with `KubeDouble.job_controller` (create the pod, move
it through states, mark the Job Complete/Failed). Label and field selectors are
ignored by kmock, so clients must filter what they list.

Usage::

    def test_x(kube):
        api = kube.api_client()
        kube.job_controller(lambda job: kube.succeed(job, logs="done\\n"))
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import kmock
import pytest
from kubernetes import client

RESOURCES = (
    "batch/v1/jobs",
    "v1/pods",
    "v1/configmaps",
    "v1/events",
    "v1/secrets",
    "v1/serviceaccounts",
    "coordination.k8s.io/v1/leases",
)


class _ApiServer(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock plus the metadata a real API server assigns, and a record of every object created (2xx)."""

    created: list[dict[str, Any]]

    async def _handle(self, request: Any) -> Any:
        sent = None
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            sent = copy.deepcopy(request.data)
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("resourceVersion", str(len(self.created) + 1))
            if request.namespace and "namespace" not in meta:
                meta["namespace"] = request.namespace
        response = await super()._handle(request)
        if sent is not None and response.status < 300:
            self.created.append(sent)
        return response


class KubeDouble:
    """Handle on a running API double: a client factory, object access and a Job controller to play."""

    def __init__(self, emulator: _ApiServer, url: str) -> None:
        self.emulator = emulator
        self.url = url.rstrip("/")
        self.logs: dict[tuple[str, str], str] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    # --- clients and objects ---------------------------------------------------------------------

    def api_client(self) -> client.ApiClient:
        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api_client())

    @property
    def batch(self) -> Any:
        return client.BatchV1Api(self.api_client())

    def created(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Bodies of every create request, as the client sent them."""
        return [o for o in self.emulator.created if kind is None or o.get("kind") == kind]

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        api = self.api_client()
        items = self.batch.list_namespaced_job(namespace).items
        return [api.sanitize_for_serialization(j) for j in items]

    def configmaps(self, namespace: str) -> list[dict[str, Any]]:
        api = self.api_client()
        return [
            api.sanitize_for_serialization(c) for c in self.core.list_namespaced_config_map(namespace).items
        ]

    # --- playing the Job controller ----------------------------------------------------------------

    def job_controller(self, behaviour: Callable[[dict[str, Any]], None], *, timeout: float = 30.0) -> None:
        """Call `behaviour(job)` once for every Job that appears, on a background thread (bounded)."""

        def loop() -> None:
            seen: set[str] = set()
            end = time.monotonic() + timeout
            api = self.api_client()
            batch = client.BatchV1Api(api)
            while not self._stop.is_set() and time.monotonic() < end:
                try:
                    for job in batch.list_job_for_all_namespaces().items:
                        key = f"{job.metadata.namespace}/{job.metadata.name}"
                        if key not in seen:
                            seen.add(key)
                            behaviour(api.sanitize_for_serialization(job))
                except BaseException as exc:  # surfaced by the fixture
                    self.errors.append(exc)
                    return
                self._stop.wait(0.05)

        thread = threading.Thread(target=loop, daemon=True, name="kube-job-controller")
        thread.start()
        self._threads.append(thread)

    def pod(self, job: dict[str, Any], *, status: dict[str, Any], logs: str = "") -> str:
        """Create the Job's pod (labelled `job-name`, as the Job controller does) with a status."""
        meta = job["metadata"]
        name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        spec = job["spec"]["template"]["spec"]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {
                    **(job["spec"]["template"]["metadata"].get("labels") or {}),
                    "job-name": meta["name"],
                },
            },
            "spec": spec,
        }
        self.core.create_namespaced_pod(meta["namespace"], body)
        if logs:
            self.logs[(meta["namespace"], name)] = logs
        self.core.patch_namespaced_pod_status(name, meta["namespace"], {"status": status})
        return name

    def job_status(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        meta = job["metadata"]
        self.batch.patch_namespaced_job_status(meta["name"], meta["namespace"], {"status": status})

    def succeed(self, job: dict[str, Any], logs: str = "") -> None:
        self.pod(
            job,
            logs=logs,
            status={"phase": "Succeeded", "containerStatuses": [_terminated("job", 0, "Completed")]},
        )
        self.job_status(job, {"succeeded": 1, "conditions": [_cond("Complete")]})

    def fail(self, job: dict[str, Any], logs: str = "", exit_code: int = 1) -> None:
        self.pod(
            job,
            logs=logs,
            status={"phase": "Failed", "containerStatuses": [_terminated("job", exit_code, "Error")]},
        )
        self.job_status(
            job,
            {
                "failed": 1,
                "conditions": [
                    _cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
                ],
            },
        )

    def waiting(self, job: dict[str, Any], reason: str, message: str) -> None:
        self.pod(
            job,
            status={
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "job",
                        "ready": False,
                        "restartCount": 0,
                        "image": "x",
                        "imageID": "",
                        "state": {"waiting": {"reason": reason, "message": message}},
                    }
                ],
            },
        )

    def running(self, job: dict[str, Any], logs: str = "") -> None:
        self.pod(
            job,
            logs=logs,
            status={
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "job",
                        "ready": True,
                        "restartCount": 0,
                        "image": "x",
                        "imageID": "",
                        "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
                    }
                ],
            },
        )

    def event(self, job: dict[str, Any], reason: str, message: str) -> None:
        meta = job["metadata"]
        self.core.create_namespaced_event(
            meta["namespace"],
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{meta['name']}.{uuid.uuid4().hex[:8]}",
                    "namespace": meta["namespace"],
                },
                "involvedObject": {
                    "kind": "Job",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "apiVersion": "batch/v1",
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
            },
        )

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


def _terminated(name: str, code: int, reason: str) -> dict[str, Any]:
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "image": "x",
        "imageID": "",
        "state": {"terminated": {"exitCode": code, "reason": reason}},
    }


def _cond(type_: str, reason: str = "", message: str = "") -> dict[str, Any]:
    out = {"type": type_, "status": "True"}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


@pytest.fixture
def kube() -> Iterator[KubeDouble]:
    """An API-server double on 127.0.0.1, stopped (with its controller threads) after the test."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        holder["stop"] = stop
        emulator = _ApiServer()
        emulator.created = []
        async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
            for resource in RESOURCES:
                emulator.resources[resource] = {}
            double = KubeDouble(emulator, str(server.url))

            def pod_log(request: Any) -> bytes:
                return double.logs.get((request.namespace, request.name), "").encode()

            (
                emulator["get", kmock.resource("", "v1", "pods"), kmock.subresource("log")]
                << pod_log
                << {"Content-Type": "text/plain"}
            )
            holder["double"] = double
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True, name="kmock")
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the Kubernetes API double did not start within 10 s")
    double: KubeDouble = holder["double"]
    try:
        yield double
    finally:
        double.close()
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=10)
        loop.close()
    if double.errors:
        raise double.errors[0]
