"""Probes and graceful shutdown: what `/healthz` and `/readyz` answer, and what SIGTERM does.

Kubernetes sends SIGTERM, waits `terminationGracePeriodSeconds`, then SIGKILLs.
Everything the reconciler must do before it goes — stop taking work, let the
ledger's last commits land and push them, hand the Lease back so a standby takes
over at once, drop the data-dir lock — is an ordered list of named steps run by
`Shutdown` within a grace budget. A step that hangs cannot eat the budget of the
steps after it (each may reserve time), and a step that fails does not stop the
rest: releasing the Lease matters most exactly when something else went wrong.

Probe answers are pure functions of a few facts so the HTTP layer stays a thin
adapter and the rules are tested without a server. At start the soft descriptor
limit is raised to the hard one (`raise_open_files_limit`), so the API's
connection cap, derived from it, leaves room for everything else. Imports: the
standard library and reconciler.base.redact.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from reconciler.base.logs import get_logger
from reconciler.base.redact import redact

log = get_logger("reconciler.runtime.lifecycle")

DEFAULT_GRACE = 25.0
"""Seconds; under Kubernetes' default 30 s grace period, leaving room for the SIGKILL race."""

ROLES = ("single", "leader", "standby", "unknown", "starting")


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reasons: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def status_code(self) -> int:
        return 200 if self.ok else 503

    def body(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": list(self.reasons), **self.detail}

    def as_tuple(self) -> tuple[bool, list[str]]:
        """The shape `reconciler.api.create_app(ready=...)` expects."""
        return self.ok, list(self.reasons)


def readiness(
    role: str,
    *,
    ledger_replayed: bool,
    upstream_fetched: bool,
    stopping: bool = False,
) -> ProbeResult:
    """Ready = able to do its part: a leader (or single instance) once it replayed the
    ledger and fetched the upstream once; a standby as soon as it knows who leads.

    A standby counts as ready on purpose: a Deployment's rolling update waits for new
    pods to become ready, and a new pod is a standby until the old leader leaves — a
    leader-only readiness would deadlock every rollout. The API on a standby answers
    reads; work goes to the leader.
    """
    detail = {
        "role": role,
        "ledgerReplayed": ledger_replayed,
        "upstreamFetched": upstream_fetched,
        "stopping": stopping,
    }
    if stopping:
        return ProbeResult(False, ("shutting down",), detail)
    if role == "standby":
        return ProbeResult(True, (), detail)
    if role in ("leader", "single"):
        reasons = []
        if not ledger_replayed:
            reasons.append("ledger not replayed yet")
        if not upstream_fetched:
            reasons.append("upstream not fetched yet")
        return ProbeResult(not reasons, tuple(reasons), detail)
    if role == "unknown":
        return ProbeResult(
            False, ("leadership unknown: the Lease could not be read (is the API server reachable?)",), detail
        )
    return ProbeResult(False, (f"starting (role {role})",), detail)


def liveness(heartbeat_age: float | None, max_silence: float | None = None) -> ProbeResult:
    """Alive = the process answers; with `max_silence`, also: its control loop turned recently.

    `heartbeat_age` is seconds since the control loop last completed a cycle (None when
    no loop runs, e.g. on a standby). A loop stuck longer than `max_silence` gets the
    container restarted; the ledger makes that safe.
    """
    detail: dict[str, Any] = {"heartbeatAge": heartbeat_age}
    if max_silence is None or heartbeat_age is None or heartbeat_age <= max_silence:
        return ProbeResult(True, (), detail)
    return ProbeResult(
        False, (f"control loop silent for {heartbeat_age:.0f}s (limit {max_silence:.0f}s)",), detail
    )


class Heartbeat:
    """The control loop calls `beat()` each cycle (e.g. via `Controller.on_cycle`); probes read `age()`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: float | None = None

    def beat(self, *_: Any) -> None:
        self._last = self._clock()

    def age(self) -> float | None:
        return None if self._last is None else max(0.0, self._clock() - self._last)


# --------------------------------------------------------------------------------------------
# Descriptors
# --------------------------------------------------------------------------------------------

OPEN_FILES_CEILING = 1 << 20
"""Where the soft limit goes when the hard one is unlimited (Linux refuses more than fs.nr_open)."""


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns the soft limit now in force.

    Shells and container runtimes often start processes with a soft limit of 1024 and a
    far higher hard one. The HTTP API's connection cap is derived from the soft limit
    (`reconciler.ingress.httplimits.connection_cap`), with a reserve kept for the
    ledger, git and jobs; raising it costs nothing and moves the cap out of a
    legitimate load's way. Never lowers it; a refusal leaves it as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open_files_limit_not_raised", soft=soft, hard=hard, error=str(exc))
        else:
            log.info("open_files_limit_raised", before=soft, now=target)
    return open_files_limit()


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE (unlimited counts as `OPEN_FILES_CEILING`)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return OPEN_FILES_CEILING if soft == resource.RLIM_INFINITY else int(soft)


# --------------------------------------------------------------------------------------------
# Shutdown
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One thing to do on the way out. `run(budget)` gets the seconds it may use."""

    name: str
    run: Callable[[float], Any]
    reserve: float = 0.0  # seconds kept for this step whatever earlier steps do


@dataclass(frozen=True)
class StepOutcome:
    name: str
    outcome: str  # done | failed | timed out | skipped
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class ShutdownReport:
    signal: str
    steps: tuple[StepOutcome, ...]
    seconds: float

    @property
    def clean(self) -> bool:
        return all(s.outcome == "done" for s in self.steps)

    @property
    def exit_code(self) -> int:
        return 0 if self.clean else 1


class Shutdown:
    """SIGTERM/SIGINT -> `requested`; `run()` then performs the steps within `grace` seconds.

    Typical wiring (main thread)::

        shutdown = Shutdown(grace=settings.shutdown_grace)
        shutdown.add("stop taking work", lambda t: app.stop_intake())
        shutdown.add("flush ledger", lambda t: controller.shutdown(wait=True, timeout=t))
        shutdown.add("push ledger", lambda t: ledger.push(url, auth), reserve=5)
        shutdown.add("release lease", lambda t: elector.stop(timeout=t), reserve=3)
        shutdown.add("release data dir", lambda t: lock.release(), reserve=0.5)
        shutdown.install()
        shutdown.requested.wait()      # or poll it from the main loop
        sys.exit(shutdown.run().exit_code)

    A second signal while steps run exits at once (exit code 130): the person at
    the terminal, or the kubelet, has decided not to wait.
    """

    def __init__(
        self,
        grace: float = DEFAULT_GRACE,
        steps: Iterable[Step] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        force_exit: Callable[[int], Any] = os._exit,
    ) -> None:
        if grace <= 0:
            raise ValueError(f"shutdown grace must be > 0 seconds, got {grace}")
        self.grace = grace
        self.steps: list[Step] = list(steps)
        self.requested = threading.Event()
        self.signal_name = ""
        self._clock = clock
        self._force_exit = force_exit
        self._running = threading.Event()
        self._previous: dict[int, Any] = {}
        self._callbacks: list[Callable[[], None]] = []

    def add(self, name: str, run: Callable[[float], Any], *, reserve: float = 0.0) -> Shutdown:
        self.steps.append(Step(name, run, reserve))
        return self

    def on_request(self, callback: Callable[[], None]) -> None:
        """Called (from the signal handler's thread) as soon as shutdown is requested, e.g. to wake loops."""
        self._callbacks.append(callback)

    def request(self, reason: str = "requested") -> None:
        """Ask for shutdown without a signal (tests, `POST /shutdown`, a lost lease the app will not survive)."""
        if self.requested.is_set():
            return
        self.signal_name = self.signal_name or reason
        self.requested.set()
        log.info("shutdown.requested", reason=reason)
        for callback in self._callbacks:
            try:
                callback()
            except Exception as exc:
                log.error("shutdown.callback_failed", error=redact(f"{type(exc).__name__}: {exc}"))

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested.is_set():
            log.warning("shutdown.forced", signal=name)
            self._force_exit(130)
            return
        self.signal_name = name
        self.request(name)

    def install(self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> Shutdown:
        """Route the signals here. Must run on the main thread (a Python rule for signal handlers)."""
        for sig in signals:
            self._previous[int(sig)] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, previous)
        self._previous.clear()

    def run(self) -> ShutdownReport:
        """Perform every step in order within the grace budget; never raises."""
        self._running.set()
        start = self._clock()
        deadline = start + self.grace
        outcomes: list[StepOutcome] = []
        for i, step in enumerate(self.steps):
            later = sum(s.reserve for s in self.steps[i + 1 :])
            budget = max(0.0, deadline - self._clock() - later)
            budget = max(budget, min(step.reserve, max(0.0, deadline - self._clock())))
            if budget <= 0:
                outcomes.append(StepOutcome(step.name, "skipped", 0.0, "no time left in the grace period"))
                log.warning("shutdown.step_skipped", step=step.name)
                continue
            outcomes.append(self._run_step(step, budget))
        report = ShutdownReport(self.signal_name or "requested", tuple(outcomes), self._clock() - start)
        log.info(
            "shutdown.done",
            clean=report.clean,
            seconds=round(report.seconds, 3),
            steps={o.name: o.outcome for o in outcomes},
        )
        return report

    def _run_step(self, step: Step, budget: float) -> StepOutcome:
        began = self._clock()
        result: dict[str, BaseException] = {}

        def target() -> None:
            try:
                step.run(budget)
            except BaseException as exc:
                result["error"] = exc

        worker = threading.Thread(target=target, name=f"shutdown-{step.name}", daemon=True)
        worker.start()
        worker.join(timeout=budget)
        took = self._clock() - began
        if worker.is_alive():
            log.error("shutdown.step_timed_out", step=step.name, budget=round(budget, 3))
            return StepOutcome(step.name, "timed out", took, f"still running after {budget:.1f}s")
        if "error" in result:
            exc = result["error"]
            message = redact(f"{type(exc).__name__}: {exc}")
            log.error("shutdown.step_failed", step=step.name, error=message)
            return StepOutcome(step.name, "failed", took, message)
        log.info("shutdown.step_done", step=step.name, seconds=round(took, 3))
        return StepOutcome(step.name, "done", took)
