"""A Kubernetes API double for leader election, in two flavours, on 127.0.0.1.

kmock's emulator stores objects but keeps no resourceVersion, so it cannot refuse a
stale write. `VersionedEmulator` adds what a real API server does for every object:
a resourceVersion bumped on each write, and 409 Conflict for a write whose
`metadata.resourceVersion` precondition is stale. Tests run the elector against
both, because both exist in the field (test doubles, and real clusters).

The server runs on its own thread's event loop so the synchronous kubernetes client
(and other processes, through a kubeconfig) can use it. `calls` records every
request as (method, path) for the RBAC check.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import pytest
import yaml
from kmock._internal import enums
from kubernetes import client as k8s

_RV_LOCK_NAME = "_reconciler_rv_lock"


class UnversionedEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock as it comes, plus an outage switch: while `down`, every request gets 503."""

    down: bool = False

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if self.down:
            raise kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="API server is down")
        return await super()._handle(request)  # type: ignore[no-any-return]


class VersionedEmulator(UnversionedEmulator):
    """kmock plus resourceVersion semantics: bumped on every write, checked when the writer sends one."""

    _rv: int = 0

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if self.down:
            raise kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="API server is down")
        lock: asyncio.Lock | None = getattr(self, _RV_LOCK_NAME, None)
        if lock is None:
            lock = asyncio.Lock()
            object.__setattr__(self, _RV_LOCK_NAME, lock)
        if request.resource is None or request.action not in (enums.action.CREATE, enums.action.UPDATE):
            return await super()._handle(request)  # type: ignore[no-any-return]
        async with lock:
            data = request.data if isinstance(request.data, dict) else {}
            meta = data.setdefault("metadata", {})
            if request.action == enums.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                stored = self.objects[key] if key in self.objects else None  # noqa: SIM401 (no .get)
                wanted = meta.get("resourceVersion")
                current = None
                if stored is not None and not stored.deleted:
                    current = (stored.raw.get("metadata") or {}).get("resourceVersion")
                if wanted and current and str(wanted) != str(current):
                    raise kmock.KubernetesError(
                        status=409,
                        reason="Conflict",
                        message=(
                            f'Operation cannot be fulfilled on {request.resource.plural} "{request.name}": '
                            "the object has been modified; please apply your changes to the latest version "
                            "and try again"
                        ),
                    )
            type(self)._rv += 1
            meta["resourceVersion"] = str(type(self)._rv)
            return await super()._handle(request)  # type: ignore[no-any-return]


@dataclass
class ApiDouble:
    """A running API-server double: its URL, a client factory, a kubeconfig, and what was called."""

    url: str
    emulator: Any
    loop: asyncio.AbstractEventLoop
    kubeconfig: Path
    clients: list[k8s.ApiClient] = field(default_factory=list)

    def client(self) -> k8s.ApiClient:
        cfg = k8s.Configuration()
        cfg.host = self.url
        api = k8s.ApiClient(cfg)
        self.clients.append(api)
        return api

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(HTTP method, path) of every request served so far."""
        return [(str(r.method.value), str(r.url.path)) for r in list(self.emulator._requests)]

    def set_down(self, down: bool) -> None:
        """Make every request fail with 503 (an API-server outage) or serve again."""
        self.emulator.down = down

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored Lease, read through the API (as any client would)."""
        api = k8s.CoordinationV1Api(self.client())
        try:
            resp = api.read_namespaced_lease(name, namespace, _preload_content=False, _request_timeout=5)
        except k8s.exceptions.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, Any] = json.loads(resp.data)
        return data


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "double", "cluster": {"server": url}}],
                "users": [{"name": "tester", "user": {"token": "not-a-real-token"}}],
                "contexts": [
                    {
                        "name": "double",
                        "context": {"cluster": "double", "user": "tester", "namespace": namespace},
                    }
                ],
                "current-context": "double",
            }
        )
    )
    return path


def _serve(cls: type[Any], tmp: Path) -> Iterator[ApiDouble]:
    loop = asyncio.new_event_loop()
    ready: Future[tuple[str, Any]] = Future()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with cls() as emulator, kmock.Server(emulator, host="127.0.0.1") as server:
                ready.set_result((str(server.url).rstrip("/"), emulator))
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())

    thread = threading.Thread(target=run, name="kmock", daemon=True)
    thread.start()
    url, emulator = ready.result(timeout=15)
    double = ApiDouble(
        url=url, emulator=emulator, loop=loop, kubeconfig=write_kubeconfig(tmp / "kubeconfig", url)
    )
    try:
        yield double
    finally:
        for api in double.clients:
            api.close()
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
        if not thread.is_alive():
            loop.close()


@pytest.fixture
def lease_api(tmp_path: Path) -> Iterator[ApiDouble]:
    """An API double that versions objects like a real API server (409 on stale writes)."""
    yield from _serve(VersionedEmulator, tmp_path)


@pytest.fixture
def lease_api_unversioned(tmp_path: Path) -> Iterator[ApiDouble]:
    """Plain kmock: no resourceVersion, last write wins."""
    yield from _serve(UnversionedEmulator, tmp_path)
