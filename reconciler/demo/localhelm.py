"""A stand-in for `helm` that runs a chart's Deployment as local helloservice processes.

The tutorial's job config deploys with `helm upgrade --install ... --set image=IMG
--wait`, scales with `--set replicaCount=N` and (in our example) rolls back with
`helm rollback`. The demo has no cluster, so the local profile of
`example-upstream` runs this module instead, with the same argument shape::

    python -m reconciler.demo.localhelm upgrade --create-namespace --install -n fulltour-qa \\
        helloservice charts/helloservice.tgz --set image=ghcr.io/podtato-head/podtatoserver:v0.1.1 \\
        --wait [--timeout 5m] [--reuse-values] [--local-service-port 18091]
    python -m reconciler.demo.localhelm rollback -n NS RELEASE [REVISION] [--wait]
    python -m reconciler.demo.localhelm uninstall -n NS RELEASE
    python -m reconciler.demo.localhelm status -n NS RELEASE        # JSON on stdout
    python -m reconciler.demo.localhelm history -n NS RELEASE       # JSON on stdout
    python -m reconciler.demo.localhelm cleanup                     # stop everything, forget all

What really happens, per release (`-n NS RELEASE`):

- The packaged chart is read and rendered (`reconciler.demo.chartpack.render`) with the
  chart's values, the previous values (`--reuse-values`, or no `--set` at all, as Helm
  3 does) and `--set` overrides. Its single Deployment says how many replicas run and
  which image; the image tag picks the helloservice version (see
  `reconciler.demo.helloservice`). Each replica is `python -m reconciler.demo.helloservice`
  on a free 127.0.0.1 port (the chart's container port 9000 cannot be shared locally).
- Processes are detached (own session, output to log files, no inherited pipes), so
  they outlive the command and the job runner that started it. Scaling adds or stops
  replicas; an image change starts the new replicas before stopping the old ones.
- The chart's Service becomes a round-robin TCP proxy on 127.0.0.1: the stable
  "Service address" of the release. Its port is `--local-service-port P` when given
  (the local profile pins 18091 for qa and 18092 for production, so the locust job can
  name `http://127.0.0.1:18091`; `reconciler demo` rewrites both to free ports when it
  builds its upstream), else the previous one, else a free port (read it with `status`,
  or `service_url()`). A pinned port that another process holds fails the command with
  the port and that process's pid and name.
- Prometheus file_sd targets go to `$RECONCILER_LOCALHELM_DIR/file_sd/<release>-<ns>.json`
  with `job="<release>-<namespace>"` (release `helloservice`, namespace `fulltour-qa`
  -> `helloservice-fulltour-qa`, the tutorial's `job="$SERVICE-$PROJECT-$STAGE"`), plus
  `namespace` and `release` labels. `prometheus_scrape_config()` gives the
  scrape config that reads them.
- `--wait` returns only when every replica answers `GET /healthz` and the Service port
  accepts connections, or fails after `--timeout` (Go duration, default 5m).
- Namespaces must exist unless `--create-namespace` is given (recorded under the state
  directory); `upgrade` of an unknown release needs `--install`; `rollback` without a
  revision returns to the revision before the current one (a new revision, as in Helm).

Environment:

- `RECONCILER_LOCALHELM_DIR`: the state directory. When unset (the local job runner
  passes only PATH, HOME, LANG and the task's env), the nearest directory named
  `localhelm/` at or above the working directory is used, so the demo creates
  `<data_dir>/localhelm/` and every job under `<data_dir>/jobs/` finds it. Layout: `argv.jsonl`
  (every invocation: argv, cwd, time), `releases/<ns>/<release>.json` (revisions,
  values, processes), `releases/<ns>/<release>.r<N>.tgz` (the chart of each revision),
  `namespaces/`, `file_sd/`, `logs/` (one file per process), `run/` (port files).
- `RECONCILER_LOCALHELM_MODE=record`: only append the invocation to `argv.jsonl` and
  exit 0; nothing runs (for tests that need a command standing in for helm).

Cleanup: `uninstall` stops a release's processes; `cleanup` (or `cleanup(state_dir)`
from Python) uninstalls every release and then stops any process whose command line
points into this state directory's `run/` (e.g. left by a crashed command), so a demo
leaves nothing behind. Processes are signalled by pid only after checking their start
time, so a recycled pid is never hit.

May import: stdlib, PyYAML, pydantic, psutil, `reconciler.demo.chartpack`,
`reconciler.formats` and `reconciler.formats.gotime`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, Field, ValidationError

from reconciler.core.merge import deep_merge
from reconciler.demo.chartpack import Chart, load_packaged, render
from reconciler.formats.gotime import DurationError, parse_go_duration
from reconciler.formats.problems import ConfigError

ENV_DIR = "RECONCILER_LOCALHELM_DIR"
ENV_MODE = "RECONCILER_LOCALHELM_MODE"
STATE_DIR_NAME = "localhelm"
LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT = "5m"
START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.05
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class HelmError(Exception):
    """A failure reported to the caller as `Error: <message>` with exit status 1."""


class Proc(BaseModel):
    """A process we started: pid plus start time, so a recycled pid is never mistaken for it."""

    pid: int
    create_time: float
    port: int
    log: str
    port_file: str = ""


class Replica(Proc):
    id: str
    image: str


class Revision(BaseModel):
    revision: int
    config: dict[str, Any]
    """User-supplied values (Helm's "config"); the chart's own values are merged under them."""
    chart: str
    description: str
    updated: str


class ReleaseState(BaseModel):
    namespace: str
    release: str
    revision: int
    history: list[Revision]
    replicas: list[Replica] = Field(default_factory=list)
    service: Proc | None = None
    service_port: int | None = None
    """The requested Service port (`--local-service-port`); None means "any free port"."""

    @property
    def service_url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.service.port}" if self.service else None

    @property
    def current(self) -> Revision:
        return next(r for r in self.history if r.revision == self.revision)


class Workload(BaseModel):
    """What the rendered chart asks to run."""

    image: str
    replicas: int
    has_service: bool


# --- paths and state -------------------------------------------------------------------


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def release_file(self, namespace: str, release: str) -> Path:
        return self.root / "releases" / namespace / f"{release}.json"

    def chart_file(self, namespace: str, release: str, revision: int) -> Path:
        return self.root / "releases" / namespace / f"{release}.r{revision}.tgz"

    def namespace_file(self, namespace: str) -> Path:
        return self.root / "namespaces" / namespace

    def targets_file(self, namespace: str, release: str) -> Path:
        return self.root / "file_sd" / f"{release}-{namespace}.json"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def load(self, namespace: str, release: str) -> ReleaseState | None:
        path = self.release_file(namespace, release)
        try:
            return ReleaseState.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            raise HelmError(
                f"{path}: corrupt release state ({exc.error_count()} problems); run cleanup"
            ) from None

    def save(self, state: ReleaseState) -> None:
        _write_atomic(self.release_file(state.namespace, state.release), state.model_dump_json(indent=2))

    def releases(self) -> list[tuple[str, str]]:
        base = self.root / "releases"
        if not base.is_dir():
            return []
        return sorted((p.parent.name, p.stem) for p in base.glob("*/*.json"))

    @contextlib.contextmanager
    def locked(self, namespace: str, release: str) -> Iterator[None]:
        """One command at a time per release; different releases proceed in parallel."""
        path = self.root / "releases" / namespace / f"{release}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- values ------------------------------------------------------------------------------


def _typed(text: str) -> Any:
    """`--set` typing as Helm does it: integers and booleans become such, `null` removes."""
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    return text


def parse_set(expr: str) -> dict[str, Any]:
    """`a=1,b.c=x` -> {"a": 1, "b": {"c": "x"}}; `\\,` keeps a comma inside a value."""
    out: dict[str, Any] = {}
    for item in re.split(r"(?<!\\),", expr):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HelmError(f"failed parsing --set data: key {item!r} has no value (expected key=value)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise HelmError(f"failed parsing --set data: {key!r} nests under a non-map value")
            node = child
        node[parts[-1]] = _typed(value.replace("\\,", ","))
    return out


def _drop_nulls(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (_drop_nulls(v) if isinstance(v, Mapping) else v) for k, v in values.items() if v is not None}


def workload_of(chart: Chart, config: Mapping[str, Any], *, release: str, namespace: str) -> Workload:
    values = _drop_nulls(deep_merge(chart.values, config))
    try:
        objects = render(chart, values, release=release, namespace=namespace)
    except ConfigError as exc:
        raise HelmError(f"template: {exc}") from None
    deployments = [o for o in objects if o.get("kind") == "Deployment"]
    if len(deployments) != 1:
        raise HelmError(
            f"localhelm runs charts with exactly one Deployment; this one renders {len(deployments)}"
        )
    spec = deployments[0].get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers or not isinstance(containers[0].get("image"), str):
        raise HelmError("the chart's Deployment has no container image")
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise HelmError(
            f"Deployment replicas {replicas!r} is not a non-negative integer (check replicaCount)"
        )
    return Workload(
        image=containers[0]["image"],
        replicas=replicas,
        has_service=any(o.get("kind") == "Service" for o in objects),
    )


# --- processes ---------------------------------------------------------------------------


def _alive(proc: Proc) -> bool:
    try:
        p = psutil.Process(proc.pid)
        same: bool = abs(p.create_time() - proc.create_time) < 0.05
        return same and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _running(procs: Sequence[Proc]) -> list[Proc]:
    return [p for p in procs if _alive(p)]


def _wait_gone(procs: Sequence[Proc], seconds: float) -> list[Proc]:
    """Poll until the processes are gone or zombies. They are not our children, so whoever
    reaps them (init, a subreaper) may do so late; a zombie no longer serves anything."""
    deadline = time.monotonic() + seconds
    left = _running(procs)
    while left and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        left = _running(left)
    return left


def _stop(procs: Sequence[Proc]) -> None:
    """SIGTERM the process groups, then SIGKILL whatever is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = _running(procs)
        for proc in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        if not _wait_gone(left, STOP_GRACE_SECONDS):
            break
    for proc in procs:
        if proc.port_file:
            Path(proc.port_file).unlink(missing_ok=True)


def _spawn(state: StateDir, args: list[str], name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    state.run_dir.mkdir(parents=True, exist_ok=True)
    state.log_dir.mkdir(parents=True, exist_ok=True)
    port_file = state.run_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    log = state.log_dir / f"{name}.log"
    with log.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", *args, "--port-file", str(port_file)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=state.root,
            start_new_session=True,
            close_fds=True,
        )
    return child, port_file, log


def _await_port(child: subprocess.Popen[bytes], port_file: Path, log: Path, deadline: float) -> Proc:
    while time.monotonic() < deadline:
        if port_file.is_file():
            try:
                port = int(json.loads(port_file.read_text())["port"])
            except (ValueError, KeyError):
                port = 0
            if port:
                return Proc(
                    pid=child.pid,
                    create_time=psutil.Process(child.pid).create_time(),
                    port=port,
                    log=str(log),
                    port_file=str(port_file),
                )
        if child.poll() is not None:
            tail = log.read_text(errors="replace")[-600:] if log.is_file() else ""
            raise HelmError(f"process exited with status {child.returncode} before listening:\n{tail}")
        time.sleep(POLL_SECONDS)
    _kill_child(child)
    raise HelmError(f"process did not start listening in time (log: {log})")


def _kill_child(child: subprocess.Popen[bytes]) -> None:
    """Stop a process this command started itself (so it can also reap it)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)
        try:
            child.wait(timeout=STOP_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def _start_replicas(
    state: StateDir, rel: ReleaseState, image: str, count: int, deadline: float
) -> list[Replica]:
    started: list[tuple[str, subprocess.Popen[bytes], Path, Path]] = []
    for index in range(count):
        rid = f"{rel.namespace}.{rel.release}.r{rel.revision}-{index}-{uuid.uuid4().hex[:8]}"
        child, port_file, log = _spawn(
            state, ["reconciler.demo.helloservice", "--image", image, "--port", "0"], rid
        )
        started.append((rid, child, port_file, log))
    out: list[Replica] = []
    try:
        for rid, child, port_file, log in started:
            proc = _await_port(child, port_file, log, deadline)
            out.append(Replica(id=rid, image=image, **proc.model_dump()))
    except HelmError:
        for _, child, port_file, _ in started:
            _kill_child(child)
            port_file.unlink(missing_ok=True)
        raise
    return out


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/healthz", timeout=1.0) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0):
            return True
    except OSError:
        return False


def _wait_ready(replicas: Sequence[Replica], service: Proc | None, deadline: float) -> None:
    pending = list(replicas)
    while pending:
        pending = [r for r in pending if not _healthy(r.port)]
        if not pending:
            break
        if time.monotonic() >= deadline:
            raise HelmError(
                f"timed out waiting for the condition: {len(pending)} replica(s) not answering /healthz"
            )
        if any(not _alive(r) for r in pending):
            raise HelmError("a replica exited while waiting for it to become ready; see " + pending[0].log)
        time.sleep(POLL_SECONDS * 2)
    if service:
        while not _accepts(service.port):
            if time.monotonic() >= deadline:
                raise HelmError(f"timed out waiting for the Service port {service.port}")
            time.sleep(POLL_SECONDS * 2)


def _ensure_service(state: StateDir, rel: ReleaseState, wanted: bool, deadline: float) -> None:
    """Keep one proxy per release on the requested port; restart it if it died or the port changed."""
    current = rel.service
    keep = (
        wanted
        and current is not None
        and _alive(current)
        and (rel.service_port is None or rel.service_port == current.port)
    )
    if keep:
        return
    if current is not None:
        _stop([current])
        rel.service = None
    if not wanted:
        return
    port = rel.service_port or 0
    if port:
        _check_port_free(port)
    name = f"{rel.namespace}.{rel.release}.service"
    child, port_file, log = _spawn(
        state,
        [
            "reconciler.demo.localhelm",
            "_proxy",
            "--release-file",
            str(state.release_file(rel.namespace, rel.release)),
            "--port",
            str(port),
        ],
        name,
    )
    try:
        rel.service = _await_port(child, port_file, log, deadline)
    except HelmError as exc:
        raise HelmError(f"could not start the Service proxy on port {port or 'any'}: {exc}") from None


def _check_port_free(port: int) -> None:
    """A pinned `--local-service-port` that something else holds fails before anything starts,
    naming the port and, where the OS lets us see it, the process that holds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy binds
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise HelmError(f"cannot use port {port} on {LOOPBACK}: {exc.strerror}") from None
            raise HelmError(
                f"port {port} on {LOOPBACK} is taken by {port_holder(port)}; stop it, or pick "
                "another port for --local-service-port (and the tests' --host) in the job config"
            ) from None


def port_holder(port: int) -> str:
    """Who listens on TCP `port`: "pid 123 (name)", or a phrase when it cannot be seen.

    Only the pid and the process name: a command line may carry secrets, and the message
    ends up in a task's `.finished` event."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return "another process (this user may not list connections)"
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "a process of another user"
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.Error:
                return f"pid {conn.pid}"
            return f"pid {conn.pid} ({name})"
    return "another process (bound, not listening)"


def _write_targets(state: StateDir, rel: ReleaseState) -> None:
    """One target group per release; the version is in each replica's `helloservice_build_info`
    (a `version` target label would clash with it and rename it to `exported_version`)."""
    payload = [
        {
            "targets": [f"{LOOPBACK}:{replica.port}" for replica in rel.replicas],
            "labels": {
                "job": f"{rel.release}-{rel.namespace}",
                "namespace": rel.namespace,
                "release": rel.release,
            },
        }
    ]
    _write_atomic(state.targets_file(rel.namespace, rel.release), json.dumps(payload, indent=2))


def _apply(state: StateDir, rel: ReleaseState, work: Workload, *, wait: bool, deadline: float) -> None:
    """Make the running processes match the workload, new replicas up before old ones go."""
    keep = [r for r in rel.replicas if r.image == work.image and _alive(r)][: work.replicas]
    retire = [r for r in rel.replicas if r not in keep]
    fresh = _start_replicas(state, rel, work.image, work.replicas - len(keep), deadline)
    rel.replicas = keep + fresh
    try:
        if wait:
            _wait_ready(fresh, None, deadline)
    except HelmError:
        _stop(fresh)
        rel.replicas = keep + retire
        raise
    state.save(rel)
    _write_targets(state, rel)
    _stop(retire)
    _ensure_service(state, rel, work.has_service, deadline)
    state.save(rel)
    if wait:
        _wait_ready(rel.replicas, rel.service, deadline)


# --- commands ----------------------------------------------------------------------------


def _deadline(timeout: str) -> float:
    try:
        seconds = parse_go_duration(timeout).total_seconds()
    except DurationError as exc:
        raise HelmError(f"invalid --timeout: {exc}") from None
    return time.monotonic() + max(seconds, 0.0)


def _check_names(namespace: str, release: str) -> None:
    for kind, value, limit in (("namespace", namespace, 63), ("release name", release, 53)):
        if not NAME.match(value) or len(value) > limit:
            raise HelmError(
                f"invalid {kind} {value!r}: expected lower-case letters, digits and '-' (at most {limit})"
            )


def _read_chart(path: str) -> tuple[Chart, bytes]:
    file = Path(path)
    if not file.is_file():
        raise HelmError(f"path {path!r} not found (chart archives are read relative to {Path.cwd()})")
    data = file.read_bytes()
    try:
        return load_packaged(data, path), data
    except ConfigError as exc:
        raise HelmError(str(exc)) from None


def cmd_upgrade(state: StateDir, args: argparse.Namespace) -> str:
    namespace, release = args.namespace, args.release
    _check_names(namespace, release)
    chart, chart_bytes = _read_chart(args.chart)
    overrides: dict[str, Any] = {}
    for expr in args.set or []:
        overrides = deep_merge(overrides, parse_set(expr))
    deadline = _deadline(args.timeout)
    with state.locked(namespace, release):
        rel = state.load(namespace, release)
        if rel is None:
            if not args.install:
                raise HelmError(f'UPGRADE FAILED: "{release}" has no deployed releases')
            if not state.namespace_file(namespace).exists():
                if not args.create_namespace:
                    raise HelmError(f'create: failed to create: namespaces "{namespace}" not found')
                state.namespace_file(namespace).parent.mkdir(parents=True, exist_ok=True)
                state.namespace_file(namespace).touch()
            config = overrides
            rel = ReleaseState(namespace=namespace, release=release, revision=0, history=[])
            description = "Install complete"
        else:
            previous = rel.current.config
            if args.reuse_values or (not overrides and not args.reset_values):
                config = deep_merge(previous, overrides)
            else:
                config = overrides
            description = "Upgrade complete"
        work = workload_of(chart, config, release=release, namespace=namespace)
        if args.local_service_port is not None:
            rel.service_port = args.local_service_port
        revision = rel.revision + 1
        _write_atomic_bytes(state.chart_file(namespace, release, revision), chart_bytes)
        old_revision = rel.revision
        rel.revision = revision
        rel.history.append(
            Revision(
                revision=revision,
                config=config,
                chart=f"{chart.meta.name}-{chart.meta.version}",
                description=description,
                updated=_now(),
            )
        )
        verb = "INSTALLATION" if old_revision == 0 else "UPGRADE"
        _apply_or_record_failure(state, rel, work, wait=args.wait, deadline=deadline, verb=verb)
        return _summary(rel, work)


def _apply_or_record_failure(
    state: StateDir, rel: ReleaseState, work: Workload, *, wait: bool, deadline: float, verb: str
) -> None:
    """Like Helm, a failed change stays in the history as a failed revision; the processes
    that do run stay recorded, so `uninstall` and `cleanup` still find them."""
    try:
        _apply(state, rel, work, wait=wait, deadline=deadline)
    except HelmError as exc:
        rel.history[-1].description = f"{verb.capitalize()} failed: {exc}"
        state.save(rel)
        raise HelmError(f"{verb} FAILED: {exc}") from None


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _summary(rel: ReleaseState, work: Workload) -> str:
    where = f" behind {rel.service_url}" if rel.service_url else ""
    return (
        f'Release "{rel.release}" in namespace "{rel.namespace}": revision {rel.revision} '
        f"({rel.current.description.lower()}), {work.replicas} replica(s) of {work.image}{where}"
    )


def cmd_rollback(state: StateDir, args: argparse.Namespace) -> str:
    namespace, release = args.namespace, args.release
    _check_names(namespace, release)
    deadline = _deadline(args.timeout)
    with state.locked(namespace, release):
        rel = state.load(namespace, release)
        if rel is None:
            raise HelmError(f'release: not found ("{release}" in namespace "{namespace}")')
        target = args.revision or rel.revision - 1
        source = next((r for r in rel.history if r.revision == target), None)
        if source is None or target < 1:
            raise HelmError(
                f'release has no {target} version (history of "{release}" has {len(rel.history)})'
            )
        chart, chart_bytes = _read_chart(str(state.chart_file(namespace, release, target)))
        work = workload_of(chart, source.config, release=release, namespace=namespace)
        revision = rel.revision + 1
        _write_atomic_bytes(state.chart_file(namespace, release, revision), chart_bytes)
        rel.revision = revision
        rel.history.append(
            Revision(
                revision=revision,
                config=source.config,
                chart=source.chart,
                description=f"Rollback to {target}",
                updated=_now(),
            )
        )
        _apply_or_record_failure(state, rel, work, wait=args.wait, deadline=deadline, verb="ROLLBACK")
        return _summary(rel, work)


def _uninstall(state: StateDir, namespace: str, release: str) -> bool:
    with state.locked(namespace, release):
        rel = state.load(namespace, release)
        if rel is None:
            return False
        procs: list[Proc] = [*rel.replicas, *([rel.service] if rel.service else [])]
        state.targets_file(namespace, release).unlink(missing_ok=True)
        _stop(procs)
        for old in state.release_file(namespace, release).parent.glob(f"{release}.r*.tgz"):
            old.unlink(missing_ok=True)
        state.release_file(namespace, release).unlink(missing_ok=True)
        return True


def cmd_uninstall(state: StateDir, args: argparse.Namespace) -> str:
    _check_names(args.namespace, args.release)
    if not _uninstall(state, args.namespace, args.release):
        raise HelmError(f"uninstall: Release not loaded: {args.release}: release: not found")
    return f'release "{args.release}" uninstalled'


def cmd_status(state: StateDir, args: argparse.Namespace) -> str:
    rel = state.load(args.namespace, args.release)
    if rel is None:
        raise HelmError("release: not found")
    return json.dumps(
        {
            "namespace": rel.namespace,
            "release": rel.release,
            "revision": rel.revision,
            "config": rel.current.config,
            "replicas": [
                {"image": r.image, "port": r.port, "pid": r.pid, "running": _alive(r)} for r in rel.replicas
            ],
            "service_url": rel.service_url,
            "targets_file": str(state.targets_file(rel.namespace, rel.release)),
        },
        indent=2,
    )


def cmd_history(state: StateDir, args: argparse.Namespace) -> str:
    rel = state.load(args.namespace, args.release)
    if rel is None:
        raise HelmError("release: not found")
    return json.dumps([r.model_dump() for r in rel.history], indent=2)


def cleanup(state_dir: Path | str) -> int:
    """Uninstall every release and stop stray processes of this state dir; returns how many stopped."""
    state = StateDir(Path(state_dir))
    count = 0
    for namespace, release in state.releases():
        rel = state.load(namespace, release)
        if rel is not None:
            count += len(rel.replicas) + (1 if rel.service else 0)
        _uninstall(state, namespace, release)
    marker = str(state.run_dir) + os.sep
    strays: list[Proc] = []
    for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
        cmdline = p.info.get("cmdline") or []
        if p.pid != os.getpid() and any(marker in part for part in cmdline):
            strays.append(Proc(pid=p.pid, create_time=p.info["create_time"], port=0, log=""))
    _stop(strays)
    return count + len(strays)


def cmd_cleanup(state: StateDir, args: argparse.Namespace) -> str:
    return f"stopped {cleanup(state.root)} process(es)"


# --- Python helpers for the demo ------------------------------------------------------------


def release_state(state_dir: Path | str, namespace: str, release: str) -> ReleaseState | None:
    return StateDir(Path(state_dir)).load(namespace, release)


def service_url(state_dir: Path | str, namespace: str, release: str) -> str | None:
    rel = release_state(state_dir, namespace, release)
    return rel.service_url if rel else None


def prometheus_scrape_config(state_dir: Path | str, scrape_interval: str = "5s") -> dict[str, Any]:
    """One `scrape_configs` entry reading localhelm's file_sd targets (their `job` label wins).

    Creates the file_sd directory: Prometheus watches it only if it exists when the
    config loads; otherwise a new release is found by the 5 s re-read plus the
    discovery manager's own 5 s batching, long enough to miss most of a short load test.
    """
    file_sd = StateDir(Path(state_dir)).root / "file_sd"
    file_sd.mkdir(parents=True, exist_ok=True)
    return {
        "job_name": "localhelm",
        "scrape_interval": scrape_interval,
        "file_sd_configs": [{"files": [str(file_sd / "*.json")], "refresh_interval": "5s"}],
    }


# --- the Service proxy ------------------------------------------------------------------------


class _Backends:
    """Backend ports read from the release file, re-read when it changes."""

    def __init__(self, release_file: Path) -> None:
        self.release_file = release_file
        self.stamp: int | None = None
        self.ports: list[int] = []
        self.turn = itertools.count()

    def current(self) -> list[int] | None:
        try:
            stamp = self.release_file.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if stamp != self.stamp:
            try:
                rel = ReleaseState.model_validate_json(self.release_file.read_bytes())
                self.ports = [r.port for r in rel.replicas]
                self.stamp = stamp
            except (ValidationError, OSError):
                pass
        return self.ports

    def order(self) -> list[int]:
        ports = self.current() or []
        if not ports:
            return []
        start = next(self.turn) % len(ports)
        return ports[start:] + ports[:start]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _proxy(release_file: Path, port: int, port_file: Path) -> None:
    backends = _Backends(release_file)
    stop = asyncio.Event()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for backend in backends.order():
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, backend), 2.0)
                break
            except (OSError, TimeoutError):
                continue
        if upstream is None:
            client_w.close()
            return
        up_r, up_w = upstream
        try:
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        finally:
            for w in (up_w, client_w):
                w.close()

    server = await asyncio.start_server(handle, LOOPBACK, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _write_atomic(port_file, json.dumps({"port": bound, "pid": os.getpid()}))
    print(f"service proxy on {LOOPBACK}:{bound} for {release_file}", flush=True)
    async with server:
        while not stop.is_set():
            if backends.current() is None:  # release uninstalled behind our back
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


# --- entry point ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localhelm", description="A local stand-in for helm (see module docs)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def release_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("release")

    up = sub.add_parser("upgrade")
    release_args(up)
    up.add_argument("chart")
    up.add_argument("-i", "--install", action="store_true")
    up.add_argument("--create-namespace", action="store_true")
    up.add_argument("--set", action="append")
    up.add_argument("--reuse-values", action="store_true")
    up.add_argument("--reset-values", action="store_true")
    up.add_argument("--wait", action="store_true")
    up.add_argument("--timeout", default=DEFAULT_TIMEOUT)
    up.add_argument(
        "--local-service-port", type=int, help="localhelm only: fixed 127.0.0.1 port of the Service"
    )
    up.set_defaults(run=cmd_upgrade)

    rb = sub.add_parser("rollback")
    release_args(rb)
    rb.add_argument("revision", nargs="?", type=int, default=0)
    rb.add_argument("--wait", action="store_true")
    rb.add_argument("--timeout", default=DEFAULT_TIMEOUT)
    rb.set_defaults(run=cmd_rollback)

    for name in ("uninstall", "delete"):
        un = sub.add_parser(name)
        release_args(un)
        un.add_argument("--wait", action="store_true")
        un.set_defaults(run=cmd_uninstall)

    st = sub.add_parser("status")
    release_args(st)
    st.set_defaults(run=cmd_status)

    hi = sub.add_parser("history")
    release_args(hi)
    hi.set_defaults(run=cmd_history)

    cl = sub.add_parser("cleanup")
    cl.set_defaults(run=cmd_cleanup)

    px = sub.add_parser("_proxy")
    px.add_argument("--release-file", type=Path, required=True)
    px.add_argument("--port", type=int, default=0)
    px.add_argument("--port-file", type=Path, required=True)
    return parser


def state_dir_from(environ: Mapping[str, str], cwd: Path) -> Path | None:
    """`$RECONCILER_LOCALHELM_DIR`, else the nearest `localhelm/` directory at or above `cwd`.

    The local job runner gives its processes a minimal environment, so a job cannot be
    told the directory through the environment; it finds `<data_dir>/localhelm/` from its
    working directory under `<data_dir>/jobs/`, the way git finds `.git`.
    """
    if environ.get(ENV_DIR):
        return Path(environ[ENV_DIR])
    for directory in (cwd, *cwd.parents):
        if (directory / STATE_DIR_NAME).is_dir():
            return directory / STATE_DIR_NAME
    return None


def _record(root: Path, argv: Sequence[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "time": _now()})
    with (root / "argv.jsonl").open("a") as out:
        fcntl.flock(out, fcntl.LOCK_EX)
        out.write(line + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["_proxy"]:
        ns = _parser().parse_args(args_list)
        try:
            asyncio.run(_proxy(ns.release_file, ns.port, ns.port_file))
        except OSError as exc:
            print(f"Error: cannot serve on {LOOPBACK}:{ns.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        return 0
    root = state_dir_from(os.environ, Path.cwd())
    if root is None:
        print(
            f"Error: no state directory: set {ENV_DIR}, or create a `{STATE_DIR_NAME}/` directory "
            "above the working directory",
            file=sys.stderr,
        )
        return 1
    state = StateDir(root)
    _record(state.root, args_list)
    mode = os.environ.get(ENV_MODE, "run")
    if mode == "record":
        print(f"localhelm: recorded {' '.join(args_list)}")
        return 0
    if mode != "run":
        print(f"Error: {ENV_MODE}={mode!r} is not supported; expected 'run' or 'record'", file=sys.stderr)
        return 1
    args = _parser().parse_args(args_list)
    try:
        print(args.run(state, args))
    except HelmError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
