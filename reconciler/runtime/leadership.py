"""Leader election on a `coordination.k8s.io/v1` Lease, so only one replica polls, dispatches and writes.

The protocol is client-go's (the one kube-controller-manager and every operator
use), so people who operate Kubernetes can read our Lease like any other:

- A candidate reads the Lease. It takes it when nobody holds it, when the holder
  released it (empty `holderIdentity`), or when the record has not changed for
  `leaseDurationSeconds` *as observed by this candidate's own monotonic clock* —
  never by comparing `renewTime` with the local wall clock, so clock skew between
  nodes cannot hand the lease over early.
- The leader renews every `retry_period`; if it cannot renew for `renew_deadline`
  (shorter than the lease duration) it steps down before anyone else may take
  over, so two leaders never act at once while the API server is reachable.
- Writes are conditional on `metadata.resourceVersion` when the server provides
  one (a stale writer gets 409 Conflict). A test double without resourceVersion
  gets the same guarantee, slower: after taking the lease the candidate waits a
  moment and reads it back, and a lost race shows up as somebody else's identity.
- Stopping releases the lease (empty holder, duration 1 s) so a standby takes
  over at its next retry instead of after a full lease duration.

The decision (`judge`) is a pure function over the record and the observation
time; the thread around it does I/O and callbacks. Callbacks run on a separate
thread, in order, so a slow `on_started_leading` (replaying the ledger) cannot
delay a renewal. Imports: the kubernetes client, reconciler.base.redact.
"""

from __future__ import annotations

import contextlib
import enum
import json
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact

if TYPE_CHECKING:
    from reconciler.settings import Settings

log = get_logger("reconciler.runtime.leadership")

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

MERGE_PATCH = "application/merge-patch+json"
JITTER = 0.2
"""Candidates retry after retry_period * (1 + up to 20 %), so they do not hammer the server in step."""


class ElectionConfigError(ValueError):
    """Timings that would let two leaders overlap; the message says which rule is broken."""


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease the protocol reads and writes."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    resource_version: str | None = None

    def same_as(self, other: LeaseRecord | None) -> bool:
        """Whether nothing a holder writes changed (resourceVersion aside: it changes with any write)."""
        return other is not None and replace(self, resource_version=None) == replace(
            other, resource_version=None
        )


class Verdict(enum.Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # we hold it
    TAKE = "take"  # free, released, or its holder stopped renewing
    WAIT = "wait"  # someone else holds a valid lease


def judge(record: LeaseRecord | None, identity: str, observed_at: float, now: float) -> Verdict:
    """What a candidate may do with the Lease it just read.

    `observed_at` is when (monotonic) this candidate last saw the record change;
    a holder is presumed alive for its `duration_seconds` after that.
    """
    if record is None:
        return Verdict.CREATE
    if record.holder == identity:
        return Verdict.RENEW
    if not record.holder:
        return Verdict.TAKE
    if observed_at + max(record.duration_seconds, 1) <= now:
        return Verdict.TAKE
    return Verdict.WAIT


def parse_lease(obj: Mapping[str, Any]) -> LeaseRecord:
    """A Lease as the API returns it (JSON dict) -> the record; missing fields read as empty."""
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    try:
        duration = int(spec.get("leaseDurationSeconds") or 0)
    except (TypeError, ValueError):
        duration = 0
    try:
        transitions = int(spec.get("leaseTransitions") or 0)
    except (TypeError, ValueError):
        transitions = 0
    rv = meta.get("resourceVersion")
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=duration,
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        transitions=transitions,
        resource_version=str(rv) if rv else None,
    )


def lease_spec(record: LeaseRecord) -> dict[str, Any]:
    return {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration_seconds,
        "acquireTime": record.acquire_time,
        "renewTime": record.renew_time,
        "leaseTransitions": record.transitions,
    }


def micro_time(when: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """Pod name (the hostname in a pod) plus a random suffix, as client-go does: unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def check_timings(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    if retry_period <= 0:
        raise ElectionConfigError(f"retry_period must be > 0 seconds, got {retry_period}")
    if renew_deadline <= retry_period * (1 + JITTER):
        raise ElectionConfigError(
            f"renew_deadline ({renew_deadline}s) must exceed retry_period * {1 + JITTER} "
            f"({retry_period * (1 + JITTER):.2f}s): a leader needs more than one try to renew"
        )
    if lease_duration <= renew_deadline:
        raise ElectionConfigError(
            f"lease_duration ({lease_duration}s) must exceed renew_deadline ({renew_deadline}s): "
            "a leader that cannot renew must step down before a standby may take over"
        )
    if lease_duration < 1 or lease_duration != int(lease_duration):
        raise ElectionConfigError(
            f"lease_duration must be a whole number of seconds >= 1 (Lease.leaseDurationSeconds), "
            f"got {lease_duration}"
        )


class _Conflict(Exception):
    """Someone else wrote the Lease between our read and our write."""


class LeaseElector:
    """Runs the election on a background thread; `is_leader` and the callbacks tell the app its role."""

    def __init__(
        self,
        client: k8s.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        *,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        release_on_stop: bool = True,
        settle: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        check_timings(lease_duration, renew_deadline, retry_period)
        if not identity:
            raise ElectionConfigError("identity must not be empty: it is how the Lease names its holder")
        self.api = k8s.CoordinationV1Api(client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.release_on_stop = release_on_stop
        self.settle = settle if settle is not None else min(retry_period / 2, 1.0)
        self._clock = clock
        self._wall = wall_clock
        self._timeout = max(0.5, min(retry_period, renew_deadline / 3))
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._last_contact: float | None = None
        self._leader = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._calls: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._caller: threading.Thread | None = None
        self._leader_seen = ""
        self._transitions = 0

    # -- what the app reads --------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leader.is_set()

    @property
    def stopped(self) -> bool:
        """True once stop() was called: lets on_stopped_leading tell a shutdown from a lost lease."""
        return self._stop.is_set()

    @property
    def leader_identity(self) -> str:
        """The holder this process last saw ('' when none or not yet known)."""
        return self._observed.holder if self._observed else ""

    @property
    def role(self) -> str:
        """leader | standby (a lease held by someone else, seen recently) | unknown."""
        if self.is_leader:
            return "leader"
        if self._last_contact is not None and self._clock() - self._last_contact <= self.lease_duration:
            return "standby"
        return "unknown"

    def wait_for_leadership(self, timeout: float) -> bool:
        return self._leader.wait(timeout)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> LeaseElector:
        if self._thread is not None:
            return self
        self._caller = threading.Thread(target=self._call_loop, name="lease-callbacks", daemon=True)
        self._caller.start()
        self._thread = threading.Thread(target=self._run, name="lease-elector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop campaigning; release the lease if held (unless release_on_stop=False); run callbacks."""
        self._stop.set()
        budget = timeout if timeout is not None else self.renew_deadline + 2 * self._timeout
        deadline = time.monotonic() + budget
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._caller is not None:
            self._calls.put(None)
            self._caller.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._campaign():
                    break
                self._lead()
        except Exception as exc:  # never die silently: a dead elector thread means a silent standby
            log.error("lease.elector_crashed", error=redact(f"{type(exc).__name__}: {exc}"))
            if self._leader.is_set():
                self._step_down("elector crashed")
            raise

    def _pause(self, seconds: float) -> bool:
        """Sleep unless stopped; True if we should go on."""
        return not self._stop.wait(seconds)

    def _campaign(self) -> bool:
        """Try until we lead (True) or are stopped (False)."""
        while not self._stop.is_set():
            if self._try_acquire_or_renew():
                self._leader.set()
                self._transitions += 1
                log.info("lease.acquired", lease=f"{self.namespace}/{self.name}", identity=self.identity)
                self._notify(self.on_started_leading)
                return True
            if not self._pause(self.retry_period * (1 + random.random() * JITTER)):
                return False
        return False

    def _lead(self) -> None:
        last_renewal = self._clock()
        while self._pause(self.retry_period):
            attempt = self._clock()
            if self._try_acquire_or_renew():
                last_renewal = attempt
                continue
            other = self._observed.holder if self._observed else ""
            if other and other != self.identity:
                self._step_down(f"lease taken by {other}")
                return
            if self._clock() - last_renewal >= self.renew_deadline:
                self._step_down(f"could not renew for {self.renew_deadline:g}s")
                return
        # stopped while leading
        if self.release_on_stop:
            self._release()
        self._step_down("stopped")

    def _step_down(self, why: str) -> None:
        if not self._leader.is_set():
            return
        self._leader.clear()
        level = log.info if why in ("stopped", "released") else log.warning
        level("lease.lost", lease=f"{self.namespace}/{self.name}", identity=self.identity, reason=why)
        self._notify(self.on_stopped_leading)

    def _notify(self, callback: Callable[[], None] | None) -> None:
        if callback is not None:
            self._calls.put(callback)

    def _call_loop(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            try:
                call()
            except Exception as exc:
                log.error("lease.callback_failed", error=redact(f"{type(exc).__name__}: {exc}"))

    # -- one round of the protocol -----------------------------------------------------------------

    def _observe(self, record: LeaseRecord | None) -> None:
        now = self._clock()
        self._last_contact = now
        if record is None:
            self._observed, self._observed_at = None, now
            return
        if not record.same_as(self._observed):
            self._observed_at = now
            if record.holder != self._leader_seen:
                self._leader_seen = record.holder
                if record.holder and record.holder != self.identity:
                    log.info("lease.leader_observed", leader=record.holder)
                if self.on_new_leader is not None and record.holder:
                    holder = record.holder
                    callback = self.on_new_leader
                    self._notify(lambda: callback(holder))
        self._observed = record

    def _try_acquire_or_renew(self) -> bool:
        try:
            return self._round()
        except _Conflict:
            return False
        except (ApiException, Urllib3Error, OSError, ValueError) as exc:
            log.warning(
                "lease.api_error",
                lease=f"{self.namespace}/{self.name}",
                error=redact(_describe(exc)),
            )
            return False

    def _round(self) -> bool:
        current = self._read()
        self._observe(current)
        verdict = judge(current, self.identity, self._observed_at, self._clock())
        if verdict is Verdict.WAIT:
            return False
        stamp = micro_time(self._wall())
        if verdict is Verdict.CREATE:
            mine = LeaseRecord(
                holder=self.identity,
                duration_seconds=int(self.lease_duration),
                acquire_time=stamp,
                renew_time=stamp,
                transitions=0,
            )
            written = self._create(mine)
        else:
            assert current is not None
            taking = verdict is Verdict.TAKE
            mine = replace(
                current,
                holder=self.identity,
                duration_seconds=int(self.lease_duration),
                renew_time=stamp,
                acquire_time=stamp if taking else current.acquire_time,
                transitions=current.transitions + 1 if taking else current.transitions,
            )
            written = self._write(mine, current)
        if verdict is not Verdict.RENEW and written.resource_version is None:
            # No optimistic concurrency on this server: let a racing writer land, then look.
            if not self._pause(self.settle):
                return False
            written = self._read() or LeaseRecord()
            if written.holder != self.identity or written.renew_time != stamp:
                self._observe(written)
                return False
        self._observe(written)
        return True

    # -- API calls ---------------------------------------------------------------------------------

    def _read(self) -> LeaseRecord | None:
        try:
            resp = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return parse_lease(_json(resp))

    def _create(self, record: LeaseRecord) -> LeaseRecord:
        body: Any = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": lease_spec(record),
        }
        try:
            resp = self.api.create_namespaced_lease(
                self.namespace, body, _preload_content=False, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 409:
                raise _Conflict() from None
            raise
        return parse_lease(_json(resp))

    def _write(self, record: LeaseRecord, seen: LeaseRecord) -> LeaseRecord:
        body: dict[str, Any] = {"spec": lease_spec(record)}
        if seen.resource_version:
            body["metadata"] = {"resourceVersion": seen.resource_version}
        try:
            resp = self.api.patch_namespaced_lease(
                self.name,
                self.namespace,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status in (409, 404):
                raise _Conflict() from None
            raise
        written = parse_lease(_json(resp))
        if seen.resource_version and written.resource_version == seen.resource_version:
            # The server echoed our precondition back instead of bumping it: it does not version.
            written = replace(written, resource_version=None)
        return written

    def _release(self) -> None:
        """Hand the lease back so a standby need not wait out the duration."""
        with contextlib.suppress(_Conflict):
            try:
                current = self._read()
                if current is None or current.holder != self.identity:
                    return
                released = replace(
                    current,
                    holder="",
                    duration_seconds=1,
                    renew_time=micro_time(self._wall()),
                )
                self._write(released, current)
                log.info("lease.released", lease=f"{self.namespace}/{self.name}", identity=self.identity)
            except (ApiException, Urllib3Error, OSError, ValueError) as exc:
                log.warning("lease.release_failed", error=redact(_describe(exc)))


def _json(resp: Any) -> dict[str, Any]:
    data = resp.data if hasattr(resp, "data") else resp
    if isinstance(data, bytes | bytearray):
        data = json.loads(data or b"{}")
    if not isinstance(data, dict):
        raise ValueError(f"the API server answered a Lease request with {type(data).__name__}, not an object")
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        reason = exc.reason or ""
        with contextlib.suppress(Exception):
            body = json.loads(exc.body or "{}")
            reason = body.get("message") or reason
        return f"HTTP {exc.status}: {reason}"
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# Wiring from settings
# --------------------------------------------------------------------------------------------


def pod_namespace(path: Path = SA_NAMESPACE_FILE) -> str | None:
    """The namespace the pod runs in, from its service-account mount."""
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value or None


def elector_from_settings(
    settings: Settings,
    client: k8s.ApiClient,
    *,
    on_started_leading: Callable[[], None] | None = None,
    on_stopped_leading: Callable[[], None] | None = None,
    on_new_leader: Callable[[str], None] | None = None,
    namespace_file: Path = SA_NAMESPACE_FILE,
) -> LeaseElector:
    """A LeaseElector configured by `lease_*` and `leader_identity` settings (not started)."""
    namespace = settings.lease_namespace or pod_namespace(namespace_file) or settings.job_namespace
    return LeaseElector(
        client,
        namespace,
        settings.lease_name,
        settings.leader_identity or default_identity(),
        lease_duration=settings.lease_duration,
        renew_deadline=settings.lease_renew_deadline,
        retry_period=settings.lease_retry_period,
        on_started_leading=on_started_leading,
        on_stopped_leading=on_stopped_leading,
        on_new_leader=on_new_leader,
    )
