"""`reconciler demo`: the tutorial end to end on one machine, no cluster.

What it does, in order (each step waits, bounded, for the ledger to say it happened):

1. Builds a local upstream from `example-upstream/` with the `_local/` profile laid over
   it (local job commands, 1-minute evaluation windows, 30 s load tests, the local
   SLI/SLO variant) and without qa's `helloservice/values.yaml`, so the first build is
   a real commit-to-deploy.
2. Starts a real Prometheus (Debian package) scraping what `localhelm` deploys
   (file_sd) and the reconciler's own `/metrics`.
3. Starts the reconciler in this process: local runner, the local upstream watched,
   the HTTP API on 127.0.0.1 with a random token.
4. Plays the tutorial: commits a good build (v0.1.1) to qa -> qa delivery -> production
   delivery; commits a slow build (v0.1.2) -> the qa gate fails, production untouched;
   posts the tutorial's fake problem -> remediation scales production to 2 replicas,
   load-tests and evaluates.
5. Sends the tutorial's optional Slack notification to a local stand-in receiver
   (`newsreceiver`, 127.0.0.1, a free port), which prints each message as it arrives.
6. Prints a live line per event while it runs, then a summary: each sequence's result,
   the evaluation table, and the ledger as `git log --oneline`.

Everything it starts (Prometheus, the helloservice replicas and proxies, job processes)
is stopped at the end, unless `--keep`, which leaves the reconciler, Prometheus and the
services running until Ctrl-C, with instructions printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pygit2
import requests
import yaml
from pygit2.enums import FileMode

from reconciler.demo import localhelm
from reconciler.demo.newsreceiver import NewsReceiver, enable_chat
from reconciler.demo.prometheus import PrometheusServer, free_port, start_prometheus
from reconciler.formats.events import KeptnEvent
from reconciler.formats.gotime import parse_timestamp
from reconciler.settings import Settings

PROJECT = "fulltour"
SERVICE = "helloservice"
GOOD = "ghcr.io/podtato-head/podtatoserver:v0.1.1"
SLOW = "ghcr.io/podtato-head/podtatoserver:v0.1.2"
BRANCHES = ("main", "qa", "production")
STEP_TIMEOUT = 420.0
"""Seconds a step may take (a delivery is about 40 s locally); bounded so a broken demo ends."""
QUIET_WINDOW = 65.0
"""The slow build's qa evaluation must not see the good build's load (1-minute window)."""

FAKE_PROBLEM = {
    "type": "sh.keptn.event.production.remediation.triggered",
    "specversion": "1.0",
    "source": "https://github.com/keptn/keptn/fake-problem",
    "contenttype": "application/json",
    "data": {
        "project": PROJECT,
        "stage": "production",
        "service": SERVICE,
        "problem": {"problemTitle": "http_response_time_seconds_main_page_sum"},
    },
}


class DemoError(RuntimeError):
    pass


@dataclass
class DemoOptions:
    workdir: Path
    example: Path
    keep: bool = False
    out: TextIO = sys.stdout
    locust_run_time: str | None = None
    """Override the local profile's load duration (the acceptance test shortens it)."""
    step_timeout: float = STEP_TIMEOUT
    quiet_window: float = QUIET_WINDOW


@dataclass
class DemoResult:
    workdir: Path
    data_dir: Path
    upstream: Path
    contexts: dict[str, str] = field(default_factory=dict)
    production_replicas: int | None = None
    notifications: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- upstream


def build_source(example: Path, target: Path, *, locust_run_time: str | None = None) -> Path:
    """example-upstream's branch directories with `_local/` laid over them."""
    if target.exists():
        shutil.rmtree(target)
    for branch in BRANCHES:
        shutil.copytree(example / branch, target / branch)
        overlay = example / "_local" / branch
        if overlay.is_dir():
            shutil.copytree(overlay, target / branch, dirs_exist_ok=True)
    (target / "qa" / SERVICE / "values.yaml").unlink(missing_ok=True)
    if locust_run_time:
        for conf in target.glob(f"*/{SERVICE}/locust/locust.conf"):
            lines = [
                f"run-time = {locust_run_time}" if line.startswith("run-time") else line
                for line in conf.read_text().splitlines()
            ]
            conf.write_text("\n".join(lines) + "\n")
    return target


_PINNED_PORT = re.compile(r'"--local-service-port",\s*"(\d+)"')


def use_free_service_ports(source: Path) -> dict[str, int]:
    """Swap each stage's pinned Service port in the built upstream for a free one.

    The local profile pins 18091 (qa) and 18092 (production) so its job configs read like a
    user's would; a second demo, a test run or anyone else on the machine may hold those.
    The pinned port appears as `--local-service-port "P"` for localhelm and as
    `127.0.0.1:P` in the load test's `--host`; both are rewritten. Ports come from below
    the kernel's ephemeral range, so no outgoing connection (locust makes many) takes one
    in the minute before the stage's first deploy binds it."""
    chosen: dict[str, int] = {}
    for config in sorted(source.glob(f"*/{SERVICE}/job/config.yaml")):
        stage = config.relative_to(source).parts[0]
        text = config.read_text()
        pinned = set(_PINNED_PORT.findall(text))
        if not pinned:
            continue
        if len(pinned) > 1:
            raise DemoError(f"{config}: more than one --local-service-port ({', '.join(sorted(pinned))})")
        old = pinned.pop()
        new = stable_free_port(avoid=set(chosen.values()))
        text = _PINNED_PORT.sub(f'"--local-service-port", "{new}"', text)
        config.write_text(text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}"))
        chosen[stage] = new
    return chosen


def stable_free_port(avoid: Collection[int] = (), tries: int = 200) -> int:
    """A port free now on 127.0.0.1 and outside the ephemeral range (a random start, bounded)."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = max(low, 10001)
    rng = secrets.SystemRandom()
    for _ in range(tries):
        port = rng.randrange(10000, top)
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    while (port := free_port()) in avoid:  # a machine with every low port taken: the kernel's pick
        pass
    return port


def commit_file(repo_path: Path, branch: str, path: str, content: str, message: str) -> str:
    """Commit one file on a branch of the (non-bare) demo upstream, as a developer would push."""
    repo = pygit2.Repository(str(repo_path))
    ref = repo.lookup_reference(f"refs/heads/{branch}")
    parent = ref.peel(pygit2.Commit)
    index = pygit2.Index()
    index.read_tree(parent.tree)
    index.add(pygit2.IndexEntry(path, repo.create_blob(content.encode()), FileMode.BLOB))
    tree = index.write_tree(repo)
    sig = pygit2.Signature("Demo Developer", "developer@example.com")
    oid = repo.create_commit(f"refs/heads/{branch}", sig, sig, message, tree, [parent.id])
    return str(oid)


# ----------------------------------------------------------------------------- live view


def _short(ts: str) -> str:
    return ts[11:19] if len(ts) >= 19 else ts


_MARK = {"pass": "✓", "warning": "!", "fail": "✗"}


def describe(event: KeptnEvent, started: dict[str, str]) -> str | None:
    """One line a person can follow, or None for events not worth a line."""
    etype = event.etype
    if event.type.startswith("reconciler.upstream."):
        data = event.data
        return f"{_short(event.time)}  upstream {data.get('branch')}@{str(data.get('commit', ''))[:8]} {event.type.rsplit('.', 1)[1]}"
    if etype is None:
        return None
    ctx = event.shkeptncontext[:8]
    if etype.is_sequence:
        name = f"{etype.stage}.{etype.sequence}"
        if etype.kind == "triggered":
            return f"{_short(event.time)}  ▶ {name:24} triggered     context {ctx}  ({event.source})"
        if etype.kind == "started":
            return (
                f"{_short(event.time)}  ▶ {name:24} started       commit {str(event.gitcommitid or '')[:8]}"
            )
        if etype.kind == "finished":
            mark = _MARK.get(event.result, "?")
            msg = str(event.data.get("message") or "").splitlines()[0:1]
            tail = f"  {msg[0][:100]}" if msg and event.result != "pass" else ""
            return f"{_short(event.time)}  {mark} {name:24} {event.result:8} {event.status}{tail}"
        return None
    task = etype.task or ""
    if task == "get-sli":
        return None
    if etype.kind == "triggered" and event.source == "shipyard-controller":
        started[event.id] = event.time
        return f"{_short(event.time)}      {task:20} …"
    if etype.kind == "finished":
        begun = started.get(event.triggeredid or "")
        took = ""
        if begun:
            secs = (parse_timestamp(event.time) - parse_timestamp(begun)).total_seconds()
            took = f"{secs:6.1f}s"
        extra = ""
        evaluation = event.data.get("evaluation")
        if task == "evaluation" and isinstance(evaluation, dict) and "score" in evaluation:
            extra = f"  score {evaluation.get('score'):.4g}"
        action = event.data.get("action")
        if task == "get-action" and isinstance(action, dict):
            extra = f"  action {action.get('action')} value {action.get('value')}"
        if event.result != "pass" and not extra:
            extra = (
                "  " + str(event.data.get("message") or "").strip().splitlines()[0][:110]
                if event.data.get("message")
                else ""
            )
        mark = _MARK.get(event.result, "?")
        return f"{_short(event.time)}      {task:20} {mark} {event.result:8}{took}  {event.source}{extra}"
    return None


class LiveView:
    """Prints a line for each new ledger event, from a background thread."""

    def __init__(self, events: Callable[[], list[KeptnEvent]], out: TextIO) -> None:
        self.events = events
        self.out = out
        self.seen = 0
        self.started: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-live-view", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def flush(self) -> None:
        with self._lock:
            events = self.events()
            for event in events[self.seen :]:
                line = describe(event, self.started)
                if line:
                    print(line, file=self.out, flush=True)
            self.seen = len(events)

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            with contextlib.suppress(Exception):
                self.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()


# ----------------------------------------------------------------------------- the run


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.o = options
        self.workdir = options.workdir.resolve()
        self.data_dir = self.workdir / "data"
        self.upstream = self.workdir / "upstream"
        self.helm_dir = self.data_dir / "localhelm"
        self.prometheus: PrometheusServer | None = None
        self.app: Any = None
        self.view: LiveView | None = None
        self.token = secrets.token_urlsafe(24)
        self.api_port = free_port()
        self.result = DemoResult(self.workdir, self.data_dir, self.upstream)
        self.news: NewsReceiver | None = None

    def say(self, text: str = "") -> None:
        if self.view is not None:
            self.view.flush()  # the live lines of what already happened come first
        print(text, file=self.o.out, flush=True)

    # -- set up ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        if self.workdir.exists():
            self.say(f"removing the previous demo in {self.workdir}")
            stop_previous(self.workdir)
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.helm_dir.mkdir(parents=True)
        source = build_source(self.o.example, self.workdir / "source", locust_run_time=self.o.locust_run_time)
        ports = use_free_service_ports(source)
        self.say("services   " + ", ".join(f"{stage} 127.0.0.1:{port}" for stage, port in ports.items()))
        self.start_news(source)
        from reconciler.upstream.init import init_upstream

        result = init_upstream(source, self.upstream)
        self.say(
            f"upstream   {self.upstream}  ({', '.join(f'{b} {s[:8]}' for b, s in result.branches.items())})"
        )

    def start_news(self, source: Path) -> None:
        """The team chat: the example's Slack target, enabled and pointed at a local receiver."""
        self.news = NewsReceiver(self.say).start()
        path = source / "main" / "notifications.yaml"
        if path.exists():
            path.write_text(enable_chat(path.read_text(), self.news.url))
        self.say(f"chat       {self.news.url} (the Slack target of main/notifications.yaml)")

    def start_prometheus(self) -> None:
        scrape = localhelm.prometheus_scrape_config(self.helm_dir, scrape_interval="1s")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "5s"},
            "scrape_configs": [
                scrape,
                {
                    "job_name": "reconciler",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.api_port}"]}],
                },
            ],
        }
        self.prometheus = start_prometheus(
            self.workdir / "prometheus", yaml.safe_dump(config, sort_keys=False), retention="1d"
        )
        (self.workdir / "prometheus.pid").write_text(str(self.prometheus.process.pid))
        self.say(f"prometheus {self.prometheus.url}")

    def start_reconciler(self) -> None:
        from reconciler.app import App

        settings = Settings(
            upstream=str(self.upstream),
            data_dir=self.data_dir,
            runner="local",
            poll_interval=5.0,
            api_listen=f"127.0.0.1:{self.api_port}",
            api_token=self.token,
            prometheus_url=self.prometheus.url if self.prometheus else "http://127.0.0.1:9090",
            ledger_push="auto",
            log_format="json",
            webhook_allow_hosts=["127.0.0.1"],  # the chat stand-in listens on this machine
            web_url=f"http://127.0.0.1:{self.api_port}",
        )
        settings = self._job_user(settings)
        os.environ["RECONCILER_LOCALHELM_DIR"] = str(self.helm_dir)
        self.app = App(settings).start()
        threading.Thread(target=self.app.run_forever, name="controller", daemon=True).start()
        self.view = LiveView(lambda: list(self.app.ledger.events()), self.o.out)
        self.view.start()
        self.say(f"reconciler API http://127.0.0.1:{self.api_port}  data {self.data_dir}")

    def _job_user(self, settings: Settings) -> Settings:
        """As root the demo's jobs run as `local_job_user` (nobody), with localhelm's state handed
        to it; where that user cannot reach this installation (a Python under /root, a checkout in a
        private home) they run as root instead, saying so: the demo runs only its own example."""
        from reconciler.adapters.local_runner import job_identity, reachability_problems

        user = job_identity(settings.local_job_user)
        if user is None:
            return settings
        problems = reachability_problems(user, self.data_dir)
        if problems:
            self.say(f"jobs       run as root: {problems[0]}")
            return settings.model_copy(update={"local_job_user": "root"})
        for path in (self.helm_dir, *self.helm_dir.rglob("*")):
            os.chown(path, user.uid, user.gid, follow_symlinks=False)
        self.say(f"jobs       run as {user}")
        return settings

    # -- waiting --------------------------------------------------------------------------------

    def events(self) -> list[KeptnEvent]:
        return list(self.app.ledger.events())

    def wait_for(self, predicate: Callable[[list[KeptnEvent]], KeptnEvent | None], what: str) -> KeptnEvent:
        deadline = time.monotonic() + self.o.step_timeout
        while time.monotonic() < deadline:
            found = predicate(self.events())
            if found is not None:
                return found
            time.sleep(0.5)
        raise DemoError(f"timed out after {self.o.step_timeout:.0f}s waiting for {what}")

    def finished(
        self, stage: str, sequence: str, *, context: str | None = None, after: int = 0
    ) -> KeptnEvent:
        type_ = f"sh.keptn.event.{stage}.{sequence}.finished"

        def find(events: list[KeptnEvent]) -> KeptnEvent | None:
            for e in events[after:]:
                if e.type == type_ and (context is None or e.shkeptncontext == context):
                    return e
            return None

        return self.wait_for(find, f"{stage}.{sequence} to finish")

    def triggered_context(self, stage: str, sequence: str, after: int) -> str:
        type_ = f"sh.keptn.event.{stage}.{sequence}.triggered"
        event = self.wait_for(
            lambda evs: next((e for e in evs[after:] if e.type == type_), None),
            f"{stage}.{sequence} to be triggered",
        )
        return event.shkeptncontext

    # -- the tutorial ---------------------------------------------------------------------------

    def deliver(self, image: str, label: str) -> tuple[str, KeptnEvent]:
        mark = len(self.events())
        self.say("")
        self.say(f"── commit {label} ({image}) to qa: helloservice/values.yaml")
        commit_file(
            self.upstream, "qa", f"{SERVICE}/values.yaml", f"image: {image}\n", f"Deploy {label}: {image}"
        )
        context = self.triggered_context("qa", "delivery", mark)
        done = self.finished("qa", "delivery", context=context, after=mark)
        return context, done

    def play(self) -> None:
        context, qa = self.deliver(GOOD, "a good build v0.1.1")
        qa_done_at = time.monotonic()
        self.result.contexts["good"] = context
        if qa.result not in ("pass", "warning"):
            raise DemoError(f"the good build failed its qa gate: {qa.data.get('message')}")
        prod = self.finished("production", "delivery", context=context)
        self.say(f"── good build: qa {qa.result}, production {prod.result}")

        wait = self.o.quiet_window - (time.monotonic() - qa_done_at)
        if wait > 0:
            self.say(
                f"   (waiting {wait:.0f}s so the next qa evaluation window holds only the next build's load)"
            )
            time.sleep(wait)
        prod_count = self._count("sh.keptn.event.production.delivery.triggered")
        context, qa = self.deliver(SLOW, "a slow build v0.1.2")
        self.result.contexts["slow"] = context
        time.sleep(3.0)  # give a (wrong) chained production delivery the chance to appear
        touched = self._count("sh.keptn.event.production.delivery.triggered") != prod_count
        self.say(f"── slow build: qa {qa.result}; production {'TOUCHED' if touched else 'untouched'}")

        self.say("")
        self.say("── send the tutorial's fake problem (POST /v1/event): response time degraded in production")
        mark = len(self.events())
        response = requests.post(
            f"http://127.0.0.1:{self.api_port}/v1/event",
            json=FAKE_PROBLEM,
            headers={"x-token": self.token},
            timeout=10,
        )
        response.raise_for_status()
        context = str(response.json().get("keptnContext"))
        self.result.contexts["remediation"] = context
        done = self.finished("production", "remediation", context=context, after=mark)
        state = localhelm.release_state(self.helm_dir, f"{PROJECT}-production", SERVICE)
        self.result.production_replicas = len(state.replicas) if state else None
        self.say(f"── remediation: {done.result}; production replicas now {self.result.production_replicas}")
        (self.workdir / "result.json").write_text(dump(self.result))

    def _count(self, type_: str) -> int:
        return sum(1 for e in self.events() if e.type == type_)

    # -- summary and cleanup --------------------------------------------------------------------

    def summary(self) -> None:
        from reconciler.base.clock import utcnow
        from reconciler.core.engine_state import replay
        from reconciler.runtime.statusview import render_table, sequences

        if self.view:
            self.view.stop()
        self.say("")
        self.say("═══ Sequences")
        self.say(render_table(sequences(replay(self.events()), utcnow())))
        self.say("")
        self.say("═══ Notifications (the team chat's stand-in received)")
        self.say(self.notifications())
        self.say("")
        self.say("═══ Evaluations")
        self.say(evaluation_table(self.events()))
        self.say("")
        self.say(
            f"═══ The ledger: git --git-dir {self.data_dir / 'ledger.git'} log --oneline reconciler-ledger"
        )
        log = subprocess.run(
            ["git", "--git-dir", str(self.data_dir / "ledger.git"), "log", "--oneline", "reconciler-ledger"],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = log.stdout.splitlines()
        self.say("\n".join(reversed(lines)))
        self.say(f"({len(lines)} commits, oldest first; the same branch is in {self.upstream})")

    def notifications(self) -> str:
        """What the chat received; waits a little (bounded) for news still on its way."""
        notifier = getattr(self.app, "notifier", None)
        deadline = time.monotonic() + 10.0
        while notifier is not None and not notifier.idle() and time.monotonic() < deadline:
            time.sleep(0.2)
        texts = self.news.texts() if self.news is not None else []
        self.result.notifications = texts
        with contextlib.suppress(OSError):
            (self.workdir / "result.json").write_text(dump(self.result))
        if not texts:
            return "(none)"
        return "\n".join(f"  {text}" for text in texts)

    def stop(self) -> None:
        if self.view:
            self.view.stop()
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.app.stop(grace=10)
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.news is not None:
            self.news.stop()
        localhelm.cleanup(self.helm_dir)
        stop_jobs(self.data_dir)
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "prometheus.pid").unlink()

    def keep(self) -> None:
        self.say("")
        self.say("The demo keeps running (Ctrl-C to stop everything it started). Explore:")
        self.say(f"  web view: http://127.0.0.1:{self.api_port}/ui/  (sign in with the API token below)")
        self.say(f"  reconciler status --data-dir {self.data_dir}")
        self.say(f"  reconciler get sequences --data-dir {self.data_dir} --watch")
        self.say(f"  reconciler events --data-dir {self.data_dir}")
        self.say(f"  git --git-dir {self.data_dir / 'ledger.git'} log --stat reconciler-ledger")
        self.say(f"  Prometheus: {self.prometheus.url if self.prometheus else '-'}")
        for stage in ("qa", "production"):
            url = localhelm.service_url(self.helm_dir, f"{PROJECT}-{stage}", SERVICE)
            self.say(f"  helloservice in {stage}: {url}")
        self.say(f"  deliver another build: commit helloservice/values.yaml on branch qa of {self.upstream}")
        self.say(f"  API token (x-token header): {self.token}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def evaluation_table(events: list[KeptnEvent]) -> str:
    rows = []
    for e in events:
        if e.type != "sh.keptn.event.evaluation.finished":
            continue
        ev = e.data.get("evaluation") if isinstance(e.data.get("evaluation"), dict) else {}
        assert isinstance(ev, dict)
        score = ev.get("score")
        rows.append(
            f"{e.stage:11} {e.shkeptncontext[:8]}  {e.result:8} score {score if score is not None else '-'}"
            f"  {str(e.data.get('message') or '')[:90]}"
        )
        for ir in ev.get("indicatorResults") or []:
            value = ir.get("value") or {}
            targets = ", ".join(t.get("criteria", "") for t in ir.get("passTargets") or [])
            shown = value.get("value")
            shown_text = f"{shown:.4g}" if isinstance(shown, int | float) else str(shown)
            rows.append(
                f"    {str(value.get('metric', ''))[:42]:42} {shown_text:>10}  pass {targets:14} "
                f"{ir.get('status', ''):8}{' key' if ir.get('keySli') else ''}"
            )
    return "\n".join(rows) or "no evaluations"


def stop_previous(workdir: Path) -> None:
    """Stop what an earlier `--keep` (or crashed) demo left in `workdir`."""
    pid_file = workdir / "prometheus.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text())
        os.kill(pid, 15)
    helm_dir = workdir / "data" / "localhelm"
    if helm_dir.is_dir():
        localhelm.cleanup(helm_dir)
    stop_jobs(workdir / "data")


def stop_jobs(data_dir: Path) -> None:
    """Kill local job supervisors still running under `data_dir` (a demo leaves nothing behind)."""
    import psutil

    marker = str(data_dir / "jobs")
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info.get("cmdline") or [])
            if marker in cmdline and proc.pid != os.getpid():
                proc.kill()


def run_demo(options: DemoOptions) -> DemoResult:
    demo = Demo(options)
    try:
        demo.prepare()
        demo.start_prometheus()
        demo.start_reconciler()
        demo.play()
        demo.summary()
        if options.keep:
            demo.keep()
    finally:
        demo.stop()
    return demo.result


def dump(result: DemoResult) -> str:
    return json.dumps(
        {
            "workdir": str(result.workdir),
            "contexts": result.contexts,
            "production_replicas": result.production_replicas,
            "notifications": result.notifications,
        }
    )
