"""Crash trials: the tutorial's delivery run by a real `reconciler run` that is SIGKILLed and restarted.

A trial builds a private upstream from `example-upstream/` with its `_local/` profile
(localhelm for helm, locust for the load test), starts `python -m reconciler run
--runner local` on a fresh data directory, commits the good build to qa once the
upstream is accepted, and kills the process with SIGKILL according to a plan of
kills, restarting it on the same data directory after each, until the qa and
production deliveries have finished. Then the last process is stopped with SIGTERM
and everything the trial started (job supervisors, locust, helloservice replicas,
proxies) is stopped and checked gone.

Kinds of kill (`Kill`): after a random delay from the start of a process; as soon as
the process's k-th ledger commit is seen; as soon as the process records the next
event of a given type (e.g. `je-test.started`: the load test is being launched); or
inside the process at a named crash point (`RECONCILER_CRASH_AT`, e.g. between
writing a commit and moving the ledger ref). The harness watches the ledger every
5 ms, so its kills land a few milliseconds after what it saw, wherever the process is.

What is compared (`compare`): the upstream and every commit id are deterministic
(fixed signatures, fixed ports within a session), so every event id derives to the
same value in every run. A trial must equal an uninterrupted run of the same variant
in the ordered list of `(id, type, source, triggeredid, context, stage, result,
status)` of the ledger, the image of every `.triggered`, the evaluation verdict, and
the state `replay` folds from the ledger (each sequence's state and result, each task's
name, result, status and executors). Not compared: `time`, messages (they hold job
logs), evaluation windows and measured values — they legitimately differ.

`check` finds what must never happen in any run: a commit whose event id is recorded
twice, a logical event recorded twice (same type, source, triggeredid, context and
stage, or the same upstream record for the same branch and commit), a job launched
twice (`<data_dir>/jobs/launches.jsonl`) or a helm command run twice (localhelm's
`argv.jsonl`), a ledger git would call corrupt.

Fixtures: `crash_prometheus` (session): a real Prometheus scraping the two fixed
service ports of the session, for the trials that evaluate an SLO.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
import pygit2
import pytest
import yaml
from pygit2.enums import FileMode, SortMode

from reconciler.core.engine_state import replay
from reconciler.demo import localhelm, scenario
from reconciler.demo.prometheus import PrometheusServer, start_prometheus
from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import DEFAULT_BRANCH, event_id_of, event_path
from reconciler.upstream.init import init_upstream, signature

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = REPO_ROOT / "example-upstream"
SERVICE = scenario.SERVICE
GOOD = scenario.GOOD
LEDGER_REF = f"refs/heads/{DEFAULT_BRANCH}"
DONE = "sh.keptn.event.production.delivery.finished"
QA_DONE = "sh.keptn.event.qa.delivery.finished"
TRIAL_DEADLINE = 240.0
"""Seconds a trial may take, all restarts included, before it fails as hung."""
STOP_DEADLINE = 40.0
"""Seconds the last process gets to stop on SIGTERM (its own grace is 25 s)."""
SETTLE_SECONDS = 1.0
"""After the delivery finished, how long the last process keeps running before it is stopped
(anything it records then would be a duplicate or a stray)."""
WATCH_EVERY = 0.005

CRASH_POINTS = (
    "ledger.after-blob",
    "ledger.after-commit-objects",
    "ledger.after-ref",
    "poll.after-fetch",
    "poll.after-handler",
)
"""Named points (`reconciler.base.crashpoints`) a trial may die at, inside the process."""

KILL_EVENTS = (
    "sh.keptn.event.qa.delivery.triggered",
    "sh.keptn.event.je-deployment.started",
    "sh.keptn.event.je-test.started",
    "sh.keptn.event.je-test.finished",
    "sh.keptn.event.evaluation.started",
    "sh.keptn.event.get-sli.triggered",
    "sh.keptn.event.approval.triggered",
    "sh.keptn.event.qa.delivery.finished",
)
"""Ledger events after which a kill is interesting: a job running, an evaluation mid-way..."""

PROMETHEUS_SLO = """\
spec_version: "1.0"
comparison:
  compare_with: single_result
  include_result_with_score: pass
  aggregate_function: avg
objectives:
  - sli: python_threads
    displayName: Python Threads
    pass:
      - criteria:
          - "<=30"
    key_sli: true
  - sli: failing_request
    displayName: Failing Requests
    pass:
      - criteria:
          - "<10"
total_score:
  pass: "90%"
  warning: "75%"
"""
"""A gate a crash cannot tilt: two instant gauges/counters, no rate() that needs two samples
of a replica that may be seconds old."""


# ----------------------------------------------------------------------------- variants, upstream


@dataclass(frozen=True)
class Variant:
    """What the delivery evaluates: no SLO (Keptn's "no SLO configured" pass) or an SLO on Prometheus."""

    name: str
    slo: str | None
    load_time: str


NO_SLO = Variant("no-slo", None, "1s")
PROMETHEUS = Variant("prometheus", PROMETHEUS_SLO, "2s")


@dataclass(frozen=True)
class Ports:
    qa: int
    production: int


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def session_ports(rng: random.Random | None = None) -> Ports:
    """Two free ports below Linux's ephemeral range (32768+), so no kernel-assigned port of a
    concurrently running test takes them between trials; fixed for the session so the
    upstream, and with it every commit and event id, is the same in every trial."""
    rng = rng or random.Random()
    found: list[int] = []
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if port not in found and _free(port):
            found.append(port)
        if len(found) == 2:
            return Ports(found[0], found[1])
    raise RuntimeError("no two free ports in 20000-32000 on 127.0.0.1")


def build_upstream(dest: Path, variant: Variant, ports: Ports) -> dict[str, str]:
    """The local profile of the tutorial with the session's ports and the variant's SLO."""
    source = scenario.build_source(
        EXAMPLE, dest.with_name(dest.name + "-source"), locust_run_time=variant.load_time
    )
    for stage, port, local in (("qa", ports.qa, "18091"), ("production", ports.production, "18092")):
        config = source / stage / SERVICE / "job" / "config.yaml"
        text = config.read_text()
        assert local in text, f"{config}: expected the local profile's port {local}"
        config.write_text(text.replace(local, str(port)))
        slo = source / stage / SERVICE / "slo.yaml"
        if variant.slo is None:
            slo.unlink()
        else:
            slo.write_text(variant.slo)
    return init_upstream(source, dest).branches


def commit_build(upstream: Path, image: str = GOOD) -> str:
    """The developer's commit of qa's values.yaml, with a fixed signature: the same SHA every time."""
    repo = pygit2.Repository(str(upstream))
    parent = repo.lookup_reference("refs/heads/qa").peel(pygit2.Commit)
    index = pygit2.Index()
    index.read_tree(parent.tree)
    data = f"image: {image}\n".encode()
    index.add(pygit2.IndexEntry(f"{SERVICE}/values.yaml", repo.create_blob(data), FileMode.BLOB))
    tree = index.write_tree(repo)
    sig = signature()
    return str(repo.create_commit("refs/heads/qa", sig, sig, f"Deploy {image}", tree, [parent.id]))


# ----------------------------------------------------------------------------- kills


@dataclass(frozen=True)
class Kill:
    """When to SIGKILL one process of a trial."""

    how: Literal["delay", "commits", "event", "crashpoint"]
    delay: float = 0.0
    commits: int = 0
    event: str = ""
    point: str = ""

    def describe(self) -> str:
        if self.how == "delay":
            return f"after {self.delay:.2f}s"
        if self.how == "commits":
            return f"after its ledger commit #{self.commits}"
        if self.how == "event":
            return f"once it records {self.event.removeprefix('sh.keptn.event.')}"
        return f"at crash point {self.point}"


def random_kills(rng: random.Random, *, most: int = 5) -> list[Kill]:
    """1..`most` kills of mixed kinds, drawn so that most land within a delivery of ~6-10 s
    of work plus ~1 s of start-up per process (later ones find the delivery done)."""
    kills: list[Kill] = []
    for _ in range(rng.randint(1, most)):
        kind = rng.choice(("delay", "delay", "commits", "event", "crashpoint"))
        if kind == "delay":
            kills.append(Kill("delay", delay=round(rng.uniform(0.3, 4.5), 2)))
        elif kind == "commits":
            kills.append(Kill("commits", commits=rng.randint(1, 20)))
        elif kind == "event":
            kills.append(Kill("event", event=rng.choice(KILL_EVENTS)))
        else:
            point = rng.choice(CRASH_POINTS)
            times = rng.randint(1, 4) if point.startswith("poll.") else rng.randint(1, 12)
            kills.append(Kill("crashpoint", point=f"{point}:{times}"))
    return kills


# ----------------------------------------------------------------------------- reading the ledger


@dataclass(frozen=True)
class Recorded:
    commit: str
    event_id: str | None
    event: KeptnEvent | None


def ledger_records(data_dir: Path) -> list[Recorded]:
    """Every commit of the ledger branch, oldest first, read without the Ledger's id index
    (which would hide an event recorded twice)."""
    path = data_dir / "ledger.git"
    if not (path / "HEAD").exists():
        return []
    repo = pygit2.Repository(str(path))
    ref = repo.references.get(LEDGER_REF)
    if ref is None:
        return []
    out: list[Recorded] = []
    for commit in repo.walk(ref.target, SortMode.TOPOLOGICAL | SortMode.REVERSE):
        event_id = event_id_of(commit.message)
        event = None
        if event_id is not None:
            with contextlib.suppress(KeyError):
                event = KeptnEvent.from_json(
                    repo[commit.tree[event_path(event_id)].id].peel(pygit2.Blob).data
                )
        out.append(Recorded(str(commit.id), event_id, event))
    return out


def ledger_events(data_dir: Path) -> list[KeptnEvent]:
    """The events of `ledger_records`, oldest first (commits without one left out)."""
    return [r.event for r in ledger_records(data_dir) if r.event is not None]


class LedgerWatch:
    """Cheap polling of a ledger from outside: commit count and events, re-read only when the tip moves."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._repo: pygit2.Repository | None = None
        self._tip: str | None = None
        self._records: list[Recorded] = []

    def _ref_target(self) -> str | None:
        if self._repo is None:
            if not (self.data_dir / "ledger.git" / "HEAD").exists():
                return None
            with contextlib.suppress(pygit2.GitError):
                self._repo = pygit2.Repository(str(self.data_dir / "ledger.git"))
            if self._repo is None:
                return None
        try:
            ref = self._repo.references.get(LEDGER_REF)
        except pygit2.GitError:
            return self._tip
        return str(ref.target) if ref is not None else None

    def records(self) -> list[Recorded]:
        tip = self._ref_target()
        if tip != self._tip:
            try:
                self._records = ledger_records(self.data_dir)
                self._tip = tip
            except (pygit2.GitError, KeyError, ValueError):  # mid-write: read again next time
                pass
        return self._records

    def count(self) -> int:
        return len(self.records())

    def number(self, type_: str) -> int:
        return sum(1 for r in self.records() if r.event is not None and r.event.type == type_)

    def has(self, type_: str, **data: str) -> bool:
        for r in self.records():
            e = r.event
            if e is not None and e.type == type_ and all(e.data.get(k) == v for k, v in data.items()):
                return True
        return False


# ----------------------------------------------------------------------------- processes


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any RECONCILER_* setting the test process may carry (but who local
    jobs run as: see tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    if "RECONCILER_LOCAL_JOB_USER" in os.environ:
        env["RECONCILER_LOCAL_JOB_USER"] = os.environ["RECONCILER_LOCAL_JOB_USER"]
    env.update(extra or {})
    return env


def start_reconciler(
    upstream: Path,
    data_dir: Path,
    log: Path,
    *,
    prometheus_url: str | None = None,
    crash_at: str | None = None,
    api_listen: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m reconciler run --runner local` on `data_dir`, output appended to `log`."""
    extra = {"RECONCILER_LOG_FORMAT": "json", **(env or {})}
    if prometheus_url:
        extra["RECONCILER_PROMETHEUS_URL"] = prometheus_url
    if crash_at:
        extra["RECONCILER_CRASH_AT"] = crash_at
    with log.open("ab") as out:
        out.write(f"\n=== start {time.strftime('%H:%M:%S')} crash_at={crash_at}\n".encode())
        out.flush()
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "run",
                "--upstream",
                str(upstream),
                "--data-dir",
                str(data_dir),
                "--runner",
                "local",
                "--poll-interval",
                "1",
                "--api-listen",
                api_listen,
            ],
            env=child_environment(extra),
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_running(proc: subprocess.Popen[bytes], data_dir: Path, deadline: float) -> bool:
    """Until this process runs its loop (it then writes status.json with its pid): a SIGTERM
    before it has installed its handlers would end it the default way, not the graceful one."""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status = json.loads((data_dir / "status.json").read_text())
        except (OSError, ValueError):
            status = {}
        if status.get("pid") == proc.pid:
            return True
        time.sleep(0.05)
    return False


def stop_gracefully(proc: subprocess.Popen[bytes], timeout: float = STOP_DEADLINE) -> int:
    """SIGTERM and wait; SIGKILL (and an AssertionError) when it does not stop in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise AssertionError(
            f"reconciler pid {proc.pid} did not stop within {timeout:.0f}s of SIGTERM"
        ) from None


def leftovers(data_dir: Path) -> list[str]:
    """Live processes whose command line names this data directory (jobs, replicas, proxies)."""
    marker = str(data_dir)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info.get("cmdline") or [])
            if marker in cmdline:
                found.append(f"{proc.pid}: {cmdline[:200]}")
    return found


def stop_everything(data_dir: Path) -> list[str]:
    """Stop what a trial's jobs left running; returns what was still alive afterwards."""
    helm = data_dir / "localhelm"
    if helm.is_dir():
        with contextlib.suppress(Exception):
            localhelm.cleanup(helm)
    scenario.stop_jobs(data_dir)
    deadline = time.monotonic() + 10
    left = leftovers(data_dir)
    while left and time.monotonic() < deadline:
        scenario.stop_jobs(data_dir)
        time.sleep(0.2)
        left = leftovers(data_dir)
    return left


# ----------------------------------------------------------------------------- a trial


@dataclass
class Trial:
    """Everything a trial leaves to look at."""

    name: str
    variant: str
    kills: list[Kill]
    data_dir: Path
    log: Path
    kills_done: list[str] = field(default_factory=list)
    lives: int = 0
    seconds: float = 0.0
    exit_code: int | None = None
    records: list[Recorded] = field(default_factory=list)
    launches: list[dict[str, Any]] = field(default_factory=list)
    helm_calls: list[dict[str, Any]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    fsck: str = ""

    @property
    def events(self) -> list[KeptnEvent]:
        return [r.event for r in self.records if r.event is not None]

    def describe(self) -> str:
        return (
            f"trial {self.name} ({self.variant}): plan [{'; '.join(k.describe() for k in self.kills)}], "
            f"killed {len(self.kills_done)}x ({'; '.join(self.kills_done)}), {self.lives} processes, "
            f"{self.seconds:.1f}s; log {self.log}"
        )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _life(
    proc: subprocess.Popen[bytes],
    watch: LedgerWatch,
    kill: Kill | None,
    upstream: Path,
    started: dict[str, bool],
    deadline: float,
) -> str:
    """Watch one process until it is killed as planned, dies, or the delivery is done."""
    begin = time.monotonic()
    base = watch.count()
    seen = watch.number(kill.event) if kill is not None and kill.how == "event" else 0
    while True:
        if time.monotonic() > deadline:
            return "deadline"
        if not started["build"] and watch.has("reconciler.upstream.accepted", branch="qa"):
            commit_build(upstream)
            started["build"] = True
        if watch.has(DONE) or watch.has(QA_DONE, result="fail"):
            return "done"
        if proc.poll() is not None:
            return "died"
        if kill is not None:
            due = (
                (kill.how == "delay" and time.monotonic() - begin >= kill.delay)
                or (kill.how == "commits" and watch.count() - base >= kill.commits)
                or (kill.how == "event" and watch.number(kill.event) > seen)
            )
            if due:
                _kill(proc)
                return "killed"
        time.sleep(WATCH_EVERY)


def run_trial(
    root: Path,
    name: str,
    variant: Variant,
    ports: Ports,
    kills: Sequence[Kill] = (),
    *,
    prometheus_url: str | None = None,
    deadline: float = TRIAL_DEADLINE,
) -> Trial:
    """One delivery from a fresh data directory, killed as planned; cleans up all it started."""
    work = root / name
    work.mkdir(parents=True)
    upstream = work / "upstream"
    build_upstream(upstream, variant, ports)
    data_dir = (work / "data").resolve()
    (data_dir / "localhelm").mkdir(parents=True)
    trial = Trial(name, variant.name, list(kills), data_dir, work / "reconciler.log")
    watch = LedgerWatch(data_dir)
    started = {"build": False}
    plan = list(kills)
    begin = time.monotonic()
    end = begin + deadline
    proc: subprocess.Popen[bytes] | None = None
    try:
        while True:
            kill = plan.pop(0) if plan else None
            crash_at = kill.point if kill is not None and kill.how == "crashpoint" else None
            proc = start_reconciler(
                upstream, data_dir, trial.log, prometheus_url=prometheus_url, crash_at=crash_at
            )
            trial.lives += 1
            outcome = _life(proc, watch, kill, upstream, started, end)
            if outcome == "killed":
                assert kill is not None
                trial.kills_done.append(kill.describe())
                continue
            if outcome == "died":
                code = proc.returncode
                if crash_at is not None and code == -signal.SIGKILL:
                    trial.kills_done.append(f"at crash point {crash_at}")
                    continue
                raise AssertionError(f"reconciler exited with {code} on its own; {trial.describe()}")
            if outcome == "deadline":
                raise AssertionError(f"delivery not finished within {deadline:.0f}s; {trial.describe()}")
            # done: let the process settle (it must record nothing more), then stop it the way
            # an operator does. A crash point may still fire (polls go on): then restart once
            # more, which also shows that a restart after the end adds nothing.
            wait_running(proc, data_dir, min(end, time.monotonic() + 60))
            time.sleep(SETTLE_SECONDS)
            if proc.poll() is not None and crash_at is not None and proc.returncode == -signal.SIGKILL:
                trial.kills_done.append(f"at crash point {crash_at} (after the end)")
                continue
            try:
                trial.exit_code = stop_gracefully(proc)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; {trial.describe()}") from None
            break
    finally:
        if proc is not None and proc.poll() is None:
            _kill(proc)
        trial.seconds = time.monotonic() - begin
        trial.leftovers = stop_everything(data_dir)
    trial.records = ledger_records(data_dir)
    trial.launches = _read_jsonl(data_dir / "jobs" / "launches.jsonl")
    trial.helm_calls = _read_jsonl(data_dir / "localhelm" / "argv.jsonl")
    trial.fsck = git_fsck(data_dir / "ledger.git")
    return trial


def git_fsck(repo: Path) -> str:
    """git's own verdict on the ledger repository ('' when sound)."""
    done = subprocess.run(
        ["git", "--git-dir", str(repo), "fsck", "--no-progress", "--no-dangling"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "" if done.returncode == 0 else (done.stdout + done.stderr).strip()


# ----------------------------------------------------------------------------- what must hold


def logical_key(event: KeptnEvent) -> tuple[str, ...]:
    """What makes two records the same happening, whatever their ids."""
    if event.type.startswith("reconciler.upstream."):
        return (event.type, str(event.data.get("branch")), str(event.data.get("commit")))
    return (event.type, event.source, event.triggeredid or "", event.shkeptncontext, event.stage or "")


def duplicates(records: Sequence[Recorded]) -> list[str]:
    """Commits without a readable event, ids recorded twice, logical events recorded twice."""
    problems: list[str] = []
    unreadable = [r.commit[:12] for r in records if r.event is None]
    if unreadable:
        problems.append(f"ledger commits without a readable event: {unreadable}")
    ids = Counter(r.event_id for r in records)
    twice = sorted(str(i) for i, n in ids.items() if n > 1)
    if twice:
        problems.append(f"event ids recorded more than once: {twice}")
    logical = Counter(logical_key(r.event) for r in records if r.event is not None)
    repeated = sorted(k for k, n in logical.items() if n > 1)
    if repeated:
        problems.append(f"the same event recorded more than once under different ids: {repeated}")
    return problems


def check(trial: Trial) -> list[str]:
    """Problems no run may have, interrupted or not."""
    problems = duplicates(trial.records)
    jobs = Counter(str(line.get("job")) for line in trial.launches)
    relaunched = sorted(j for j, n in jobs.items() if n > 1)
    if relaunched:
        problems.append(f"jobs launched more than once: {relaunched}")
    upgrades = Counter(tuple(call["argv"]) for call in trial.helm_calls)
    rerun = sorted(" ".join(a) for a, n in upgrades.items() if n > 1)
    if rerun:
        problems.append(f"helm commands run more than once: {rerun}")
    if trial.fsck:
        problems.append(f"git fsck of the ledger: {trial.fsck}")
    if trial.leftovers:
        problems.append(f"processes left running: {trial.leftovers}")
    if trial.exit_code != 0:
        problems.append(f"the last process exited with {trial.exit_code} on SIGTERM")
    done = [e for e in trial.events if e.type == DONE]
    if not done:
        problems.append("production delivery never finished")
    return problems


def _image(event: KeptnEvent) -> Any:
    change = event.data.get("configurationChange")
    values = change.get("values") if isinstance(change, dict) else None
    return values.get("image") if isinstance(values, dict) else None


def comparable(events: Sequence[KeptnEvent]) -> list[tuple[Any, ...]]:
    """The ledger as far as two runs of the same delivery must agree (see the module docstring)."""
    rows: list[tuple[Any, ...]] = []
    for e in events:
        verdict: Any = None
        evaluation = e.data.get("evaluation")
        if isinstance(evaluation, dict):
            verdict = (
                evaluation.get("result"),
                tuple(
                    (str((ir.get("value") or {}).get("metric")), ir.get("status"))
                    for ir in evaluation.get("indicatorResults") or []
                ),
            )
        rows.append(
            (
                e.id,
                e.type,
                e.source,
                e.triggeredid,
                e.shkeptncontext,
                e.stage,
                e.data.get("result"),
                e.data.get("status"),
                _image(e) if e.type.endswith(".triggered") else None,
                verdict,
            )
        )
    return rows


def folded_state(events: Sequence[KeptnEvent]) -> list[tuple[Any, ...]]:
    state = replay(events)
    return [
        (
            ex.stage,
            ex.sequence,
            ex.context,
            ex.state,
            ex.result,
            ex.status,
            ex.commit,
            tuple((t.name, t.result, t.status, tuple(t.executors)) for t in ex.tasks),
        )
        for ex in (state.executions[t] for t in state.order)
    ]


def executions(trial: Trial) -> tuple[list[str], list[list[str]]]:
    """What ran: launched job names and helm command lines (the data directory as `<data>`), sorted."""
    jobs = sorted(str(x.get("job")) for x in trial.launches)
    here = str(trial.data_dir)
    helm = sorted([str(a).replace(here, "<data>") for a in c["argv"]] for c in trial.helm_calls)
    return jobs, helm


def compare(reference: Trial, trial: Trial) -> list[str]:
    """Differences between a trial and the uninterrupted run that matter."""
    problems: list[str] = []
    ref_rows, rows = comparable(reference.events), comparable(trial.events)
    if ref_rows != rows:
        ref_ids = {r[0] for r in ref_rows}
        ids = {r[0] for r in rows}
        lost = [r[1:3] for r in ref_rows if r[0] not in ids]
        extra = [r[1:3] for r in rows if r[0] not in ref_ids]
        changed = [
            (a[1:3], a[6:], b[6:]) for a, b in zip(ref_rows, rows, strict=False) if a[0] == b[0] and a != b
        ]
        order = [a[1] for a in ref_rows if a[0] in ids] != [b[1] for b in rows if b[0] in ref_ids]
        problems.append(
            f"ledger differs from the uninterrupted run: lost {lost}, extra {extra}, changed {changed[:5]}, "
            f"order differs: {order}"
        )
    if folded_state(reference.events) != folded_state(trial.events):
        problems.append(
            f"folded state differs: {folded_state(reference.events)} != {folded_state(trial.events)}"
        )
    if executions(reference) != executions(trial):
        problems.append(f"executions differ: {executions(reference)} != {executions(trial)}")
    return problems


# ----------------------------------------------------------------------------- Prometheus


def prometheus_config(ports: Ports) -> str:
    """Static targets on the session's service ports; the job label is the tutorial's
    `$SERVICE-$PROJECT-$STAGE`, so the local profile's sli.yaml queries work unchanged."""
    jobs = []
    for stage, port in (("qa", ports.qa), ("production", ports.production)):
        jobs.append(
            {
                "job_name": f"{SERVICE}-{scenario.PROJECT}-{stage}",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }
        )
    return yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}, sort_keys=False)


@pytest.fixture(scope="session")
def crash_ports() -> Ports:
    return session_ports()


@pytest.fixture(scope="session")
def crash_prometheus(
    tmp_path_factory: pytest.TempPathFactory, crash_ports: Ports
) -> Iterator[PrometheusServer]:
    server = start_prometheus(tmp_path_factory.mktemp("crash-prometheus"), prometheus_config(crash_ports))
    try:
        # scraping has begun (the targets are down until a trial deploys): from now on a
        # deployed replica is scraped within a second
        server.wait_for(f'up{{job="{SERVICE}-{scenario.PROJECT}-qa"}}', deadline=30)
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
