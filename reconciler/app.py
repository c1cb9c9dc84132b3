"""Wiring: settings -> data dir -> ledger -> upstream -> engine -> executors -> HTTP API.

`App.start()` brings the parts up in the order that keeps the write-ahead promise:
the ledger is opened, compared with the upstream's copy (recovered from it when empty,
fast-forwarded to it when it extends ours; either only after verification, see
`Ledger.sync`), checked against the data directory's tip mark, and replayed before
anything acts; the upstream is fetched once (its snapshot rebuilt from the ledger first, so
a crash mid-poll yields the same records with the same ids); then the control loop
and the HTTP API start, and the poller keeps the snapshot current. `App.stop()`
stops taking work, lets executors finish their current step, pushes the ledger,
and releases the data-dir lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from reconciler.adapters.runner import Runner
from reconciler.appcontext import AppContext
from reconciler.base.clock import utcnow
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact, register_secrets
from reconciler.controller.loop import Controller, policy_from
from reconciler.controller.source import SourceLoop
from reconciler.executors.approval import ApprovalExecutor
from reconciler.executors.base import Executor
from reconciler.executors.evaluation import EvaluationExecutor
from reconciler.executors.jobs import JobExecutor
from reconciler.executors.remediation import GetActionExecutor
from reconciler.executors.webhook import (
    ResultObserver,
    WebhookExecutor,
    notification_webhooks,
    webhook_sender,
)
from reconciler.formats.events import KeptnEvent
from reconciler.formats.webhook import Webhook
from reconciler.ledger.enginecheckpoint import EngineCheckpoint
from reconciler.ledger.errors import LedgerError, LedgerRefused
from reconciler.ledger.gitledger import Ledger
from reconciler.ledger.heap import BULK_EVENTS
from reconciler.runtime import health
from reconciler.runtime.datalock import DataDirLock
from reconciler.runtime.environment import Environment, RunnerChoice
from reconciler.runtime.leadership import LeaseElector, elector_from_settings
from reconciler.runtime.lifecycle import Heartbeat, readiness
from reconciler.runtime.metrics import Metrics
from reconciler.settings import Settings
from reconciler.upstream.credentials import Upstream, resolve_upstream
from reconciler.upstream.mirror import Mirror
from reconciler.upstream.poll import Poller
from reconciler.upstream.snapshot import Current, SnapshotStore

log = get_logger("reconciler.app")

STATUS_EVERY = 2.0


@dataclass
class App:
    settings: Settings
    executors: list[Executor] | None = None
    clock: Callable[[], datetime] = utcnow
    serve_api: bool = True
    ledger: Ledger = field(init=False)
    controller: Controller = field(init=False)
    phase: str = "starting"
    _threads: list[threading.Thread] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    metrics: Metrics = field(default_factory=Metrics)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    elector: LeaseElector | None = None
    _leading: threading.Event = field(default_factory=threading.Event)
    ledger_start_over: bool = False
    """`reconciler run --ledger-start-over`: use the ledger branch as it is even though the data
    directory's tip mark says history is missing, or the upstream's copy was refused."""

    # ------------------------------------------------------------------ start

    def start(self) -> App:
        s = self.settings
        register_secrets(s.secret_values())
        health.reset()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.environment = Environment.detect(s)
        if self.environment.election:
            self.elector = elector_from_settings(
                s,
                self.environment.kube_client(),
                on_started_leading=self._leading.set,
                on_stopped_leading=self._lost_lease,
            )
            self.metrics.set_leader(False)
            self.phase = "standby"
            self._start_standby_api()
            self.elector.start()
            return self
        self.lock = DataDirLock(s.data_dir).acquire()
        self.metrics.set_leader(True)
        try:
            return self._start_leading()
        except BaseException:
            self.release_lock()  # a start refused (a damaged ledger, say) leaves the data directory free
            raise

    def _lost_lease(self) -> None:
        if self.elector is not None and self.elector.stopped:
            return
        log.error("leadership_lost", reason="exiting so a fresh process replays the ledger")
        os._exit(3)

    def _start_leading(self) -> App:
        s = self.settings
        self.upstream: Upstream = resolve_upstream(s)
        self.ledger = cast(Ledger, self.metrics.timed_ledger(self._open_ledger()))
        # the mirror first: it bounds libgit2's network time and sets up ssh host keys, which
        # the ledger's comparison with the upstream's copy needs as much as a fetch does
        self.mirror = Mirror.in_data_dir(s.data_dir, self.upstream)
        self.mirror.fetch = self.metrics.timed_fetch(self.mirror.fetch)  # type: ignore[method-assign]
        self._sync_ledger()
        self.files = self.mirror.files()
        self._choose_runner()
        local = self.runner_choice is not None and self.runner_choice.name == "local"
        self.store = SnapshotStore(
            self.files,
            main_branch=s.main_branch,
            project=s.project,
            local_commands=s.local_commands if local else None,
        )
        self.store.restore(self.ledger.events())
        self.view = Current(self.store.current)
        self.context = AppContext(
            s, self.ledger, self.files, clock=self.clock, accepted=lambda: self.store.current().accepted
        )
        self.controller = Controller(
            ledger=self.ledger,
            config=self.store.current(),
            snapshots=self.store,
            executors=list(self.executors or []),
            context_factory=lambda: self.context,
            policy=policy_from(s),
            clock=self.clock,
            pool_sizes={JobExecutor.name: s.job_workers},
            checkpoint=EngineCheckpoint(self.ledger.path, s.ledger_branch),
            checkpoint_parts={"metrics": self.metrics.checkpoint_part()},
        )
        self.context.on_emit = self.controller.kick
        # a .started is checked against the ledger under the guard the engine records deadlines in
        self.context.start_lock = self.controller.start_lock
        self.context.between_steps = lambda: self.controller.wait_between_steps(0.1)
        self.controller.on_cycle.append(self.metrics.on_cycle)
        self.controller.on_cycle.append(self.heartbeat.beat)
        self.source = SourceLoop(s, self.store, self.ledger, self.files, engine=self.controller)
        self.controller.on_cycle.append(self.source.on_engine_cycle)
        replayed = self.controller.replay()
        report = self.controller.replay_report
        log.info(
            "ledger_replayed",
            events=replayed,
            folded=report.folded if report else replayed,
            from_checkpoint=report.from_checkpoint if report else 0,
            seconds=report.seconds if report else None,
            open_tasks=len(self.controller.state.open_tasks()),
        )
        if report is not None and report.folded >= BULK_EVENTS:
            self._resume_from_own_checkpoint()
        self.poller = Poller(
            self.mirror,
            self.source.fetched,
            baseline=self.store.baseline(),
            interval=s.poll_interval,
            jitter=s.poll_jitter,
            backoff_max=s.backoff_max,
            ignore_branches={s.ledger_branch},
        )
        self.poller.poll_once()  # one synchronous fetch, so the first step sees the upstream
        # the first poll validated every service cold; what libgit2 cached for it (every tree
        # of every branch: ~35 MiB at 10,000 services) goes before anything else reads files
        self.files.shed_memory()
        self.mirror.shed_memory()
        self._start_notifier()
        self._start_ingress()
        self.poller.start()
        self._start_watch()
        self._spawn("status", self._status_loop)
        from reconciler.ledger.push import LedgerPusher

        self.pusher = LedgerPusher(
            self.ledger,
            self.upstream.url,
            self.upstream.credentials,
            mode="never" if not self._push_enabled() else s.ledger_push,
            interval=s.ledger_push_interval,
        )
        if self._push_enabled():
            self._spawn("ledger-push", self._push_loop)
        self.ledger.shed_memory()  # start-up's reads are done: what libgit2 and the heap kept goes
        self._spawn("shed-memory", self._shed_after_checkpoints)
        self.phase = "running"
        return self

    def _resume_from_own_checkpoint(self) -> None:
        """After folding a long ledger (a fresh data directory, a stale checkpoint): take the state
        from the checkpoint just written, as a restart would (`Controller.resume_from_own_checkpoint`
        says why); the counters go with the folded state and come back from the checkpoint."""
        began = time.monotonic()
        controller = self.controller
        problem = controller.resume_from_own_checkpoint(
            forget=self.metrics.forget_engine, shed=self.ledger.shed_memory
        )
        if problem == "not written":
            return
        self.metrics.observe_engine(controller.state)
        if problem is not None:
            log.warning("engine_checkpoint_not_resumed", reason=problem, action="folding the whole ledger")
            return
        log.info(
            "engine_state_resumed",
            events=controller.cursor,
            executions=len(controller.state.executions),
            seconds=round(time.monotonic() - began, 3),
        )

    def _shed_after_checkpoints(self) -> None:
        """Once more after the start-up's background checkpoint writes: each reads the ledger's
        tip, which is loose, so libgit2 first searched every pack index for it (18 MiB resident
        again at 100,000 events), and its JSON left heap behind."""
        checkpoint = self.controller.checkpoint
        if checkpoint is not None:
            checkpoint.wait(120.0)
        self.ledger.wait_for_checkpoint(120.0)
        self.ledger.shed_memory()

    def project(self) -> str:
        return self.source.project()

    def _choose_runner(self) -> None:
        """Where jobs run, said once and loudly when it is this host (issue 20: `auto` used to
        pick the local runner without a word whenever no kubeconfig was found)."""
        self.runner_choice: RunnerChoice | None = None
        self.warnings: list[str] = []
        if self.executors is None:
            self.executors = default_executors(
                self.environment.connect(self.settings), observe_webhook=self.metrics.record_webhook
            )
        if not any(isinstance(e, JobExecutor) for e in self.executors):
            return
        self.runner_choice = self.environment.runner
        self.warnings = self.environment.warnings(self.settings)
        for warning in self.warnings:
            log.warning("local_jobs", warning=warning)

    def _open_ledger(self) -> Ledger:
        """The data directory's ledger, with its signing key resolved now: a configured key file
        that is missing fails the start, not the first append."""
        s = self.settings
        ledger = Ledger.in_data_dir(s.data_dir, s.ledger_branch, key_file=s.ledger_key_file)
        register_secrets([ledger.signing_key().secret.decode("utf-8", "replace")])
        return ledger

    def _sync_ledger(self) -> None:
        """Before anything replays: take what the upstream's copy has that ours lacks, verified.

        Empty here: recover theirs (refused -> do not start, unless --ledger-start-over). Theirs
        extends ours (e.g. this data directory is an older backup): adopt it. Theirs refused or
        diverged: keep ours, report it (status and log), never overwrite theirs. Unreachable:
        start on ours; the pusher compares again before every push.
        """
        from reconciler.ledger.push import PART, diverged_message

        ledger = self.ledger
        if self._push_enabled():
            try:
                result = ledger.sync(self.upstream.url, self.upstream.credentials)
            except LedgerRefused as exc:
                if ledger.tip is None and not self.ledger_start_over:
                    raise
                log.error("ledger_copy_refused", commit=exc.commit, problem=exc.problem, error=str(exc))
                health.report(PART, str(exc))
            except LedgerError as exc:  # nothing there yet, or unreachable: start on what we have
                log.info("ledger_not_synced", reason=redact(str(exc)))
            else:
                if result.state == "adopted":
                    log.info(
                        "ledger_recovered" if result.ours is None else "ledger_adopted",
                        events=result.events,
                        remote=redact(self.upstream.url),
                        tip=(result.theirs or "")[:12],
                    )
                elif result.state == "diverged":
                    message = diverged_message(ledger, result)
                    log.error("ledger_copy_diverged", ours=result.ours, theirs=result.theirs, error=message)
                    health.report(PART, message)
        if self.ledger_start_over and ledger.start_over("reconciler run --ledger-start-over") is None:
            log.info(
                "ledger_start_over_unneeded", reason="the ledger holds every commit the data directory saw"
            )
        len(ledger)  # loads it: a damaged ledger or a vanished branch stops the start here, saying why

    def _push_enabled(self) -> bool:
        mode = self.settings.ledger_push
        if mode == "never":
            return False
        if mode == "always":
            return True
        # auto: local upstreams and upstreams with credentials can take our branch
        return self.upstream.transport in ("local", "file") or self.upstream.credentials.has_secret

    def _start_notifier(self) -> None:
        """Delivery news (notifications.yaml): follows the ledger on its own threads, kicked after
        every control-loop cycle and upstream change; see `runtime.notifier`."""
        from reconciler.runtime.notifier import Notifier
        from reconciler.ui.commits import CommitIndex

        store, ledger = self.store, self.ledger

        def config() -> Any:
            snap = store.current()
            return snap.config.notifications if snap.config is not None else None

        commits = CommitIndex(ledger.path, ledger.ref_name)
        main_branch, context = self.settings.main_branch, self.context

        def webhooks(event: KeptnEvent, main_commit: str | None) -> tuple[Webhook, ...]:
            return notification_webhooks(event, context.read_file, main_branch, main_commit)

        self.notifier = Notifier.from_settings(
            self.settings,
            ledger.events,
            config,
            commit_of=commits.commit_of,
            clock=self.clock,
            event_by_id=ledger.get,
            webhooks=webhooks,
            main_commit=lambda: store.current().accepted.get(main_branch),
            stage_commit=lambda stage: store.current().accepted.get(stage),
            observe=self.metrics.record_webhook,
            sender=webhook_sender(self.settings),
        ).start()
        self.controller.on_cycle.append(self.notifier.kick)

    def _start_standby_api(self) -> None:
        """A standby serves probes, /metrics and the ingress API too.

        Its writes go to the shared ledger exactly as the CLI's do (compare-and-swap makes a
        second writer safe; the leader's loop picks them up), validated against the config the
        leader accepted; so a Service may route to either replica. Before any leader has
        polled (no mirror yet) it can only refuse writes.
        """
        self.api = None
        if not (self.serve_api and self.settings.api_listen):
            return
        from reconciler.api import ServerLimits, app_from_settings, serve, standby_app

        s = self.settings
        mirror, ledger_path = s.data_dir / "upstream.git", s.data_dir / "ledger.git"
        if not (mirror.exists() and ledger_path.exists()):
            self.api = serve(
                standby_app(ready=self.readiness, metrics=self.metrics),
                s.api_listen,
                ServerLimits.from_settings(s),
            )
            return
        from reconciler.ingress.submit import Ingress
        from reconciler.upstream.files import open_files
        from reconciler.upstream.snapshot import Followed

        ledger = Ledger.in_data_dir(s.data_dir, s.ledger_branch, key_file=s.ledger_key_file)
        view = Current(Followed(open_files(mirror), s.main_branch, ledger).snapshot)
        ingress = Ingress(ledger=ledger, view=view, project=view.project or s.project)
        app = app_from_settings(
            ingress, s, ready=self.readiness, status=self._standby_status, metrics=self.metrics
        )
        self.api = serve(app, s.api_listen, ServerLimits.from_settings(s))

    def _standby_status(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "pid": os.getpid(),
            "leader": "standby",
            "lease_holder": getattr(self.elector, "holder", None),
            "updated_at": self.clock().isoformat(),
        }

    def _start_ingress(self) -> None:
        standby = getattr(self, "api", None)
        if standby is not None:  # hand the port over from the standby API to the full one
            standby.stop()
        from reconciler.ingress.submit import Ingress

        self.ingress = Ingress(self.ledger, self.view, project=self.project(), on_record=self.controller.kick)
        self.source.ingress = self.ingress
        self.api = None
        if self.serve_api and self.settings.api_listen:
            from reconciler.api import ServerLimits, app_from_settings, serve

            app = app_from_settings(
                self.ingress, self.settings, ready=self.readiness, status=self.status, metrics=self.metrics
            )
            self.api = serve(app, self.settings.api_listen, ServerLimits.from_settings(self.settings))
        from reconciler.ingress.inbox import Inbox

        self.inbox = Inbox(self.ingress, self.settings.data_dir / "inbox")
        self.inbox.start()

    def _start_watch(self) -> None:
        self.watcher = None
        path = self.upstream.local_path
        if path is None or not self.settings.watch:
            return
        from reconciler.upstream.watch import LocalWatcher

        try:
            self.watcher = LocalWatcher(path, self.poller.poke)
            self.watcher.start()
            self.poller.set_watching(True)
        except Exception as exc:  # a path we cannot watch is still polled
            log.warning("upstream_watch_unavailable", error=redact(str(exc)))

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ status

    def readiness(self) -> tuple[bool, list[str]]:
        role = "single" if self.elector is None else self.elector.role
        store = getattr(self, "store", None)
        return readiness(
            role,
            ledger_replayed=self.phase == "running",
            upstream_fetched=bool(store is not None and store.current().ready),
            stopping=self._stopping.is_set(),
        ).as_tuple()

    def status(self) -> dict[str, Any]:
        for executor in self.executors or []:  # adapters report health as data; the board keeps it
            if isinstance(executor, JobExecutor):
                health.note(executor.runner_health())
        pusher = getattr(self, "pusher", None)
        if pusher is not None:
            health.note(pusher.health())
        upstream_health = self.poller.health().model_dump(mode="json")
        snap = self.store.current()
        rejected = {
            b: {"commit": r.commit, "problems": [str(p) for p in r.problems[:10]]}
            for b, r in snap.rejected.items()
        }
        choice = getattr(self, "runner_choice", None)
        runner = choice.status() if choice is not None else None
        return {
            "phase": self.phase,
            "pid": os.getpid(),
            "updated_at": self.clock().isoformat(),
            "project": self.project(),
            "leader": "single" if self.elector is None else self.elector.role,
            "runner": runner["runner"] if runner else None,
            "runner_reason": runner["reason"] if runner else None,
            "upstream": {**upstream_health, "accepted": dict(snap.accepted), "rejected": rejected},
            "ledger": {
                "events": len(self.ledger),
                "tip": self.ledger.tip,
                "branch": self.settings.ledger_branch,
            },
            "executors_running": len(self.controller.running),
            "engine": {"replay": report.as_dict() if (report := self.controller.replay_report) else None},
            "problems": health.snapshot(),
            "warnings": list(getattr(self, "warnings", [])),
        }

    def write_status(self) -> None:
        path = self.settings.data_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=2, sort_keys=True, default=str))
        tmp.replace(path)

    def _status_loop(self) -> None:
        watch = health.ClockWatch()
        watch.observe(self.clock(), time.monotonic())
        while not self._stopping.wait(STATUS_EVERY):
            watch.observe(self.clock(), time.monotonic())
            try:
                self.write_status()
            except Exception as exc:
                error = redact(str(exc))
                log.warning("status_write_failed", error=error)
                health.report("data directory", f"cannot write status.json: {error}")
            else:
                health.clear("data directory")

    def _push_loop(self) -> None:
        while not self._stopping.wait(1.0):
            try:
                self.pusher.push_if_due()
            except Exception as exc:  # never let the copy stop the loop; the ledger itself is safe
                log.warning("ledger_push_failed", error=redact(f"{type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------ run / stop

    def run_forever(self) -> None:
        if self.elector is not None:  # a standby waits here until it leads (or is stopped)
            while not self._leading.wait(0.2):
                if self._stopping.is_set():
                    return
            self.lock = DataDirLock(self.settings.data_dir).acquire(timeout=60)
            self.metrics.set_leader(True)
            self._start_leading()
        with contextlib.suppress(OSError):
            self.write_status()
        self.controller.run_forever()

    def stop(self, grace: float = 25.0) -> None:
        if self.phase == "stopped":
            return
        self.phase = "stopping"
        self._stopping.set()
        if not hasattr(self, "controller"):  # a standby that never led
            self.release_lease(grace)
            self.phase = "stopped"
            return
        for part in ("watcher", "inbox"):
            obj = getattr(self, part, None)
            if obj is not None:
                try:
                    obj.stop()
                except Exception as exc:
                    log.warning("stop_failed", part=part, error=redact(str(exc)))
        if getattr(self, "poller", None) is not None:
            self.poller.stop()
        api = getattr(self, "api", None)
        if api is not None:
            api.stop()
        self.controller.shutdown(wait=False)  # running tasks are adopted by the next leader
        try:  # the next start folds only what comes after (a cache: failing costs time only)
            self.controller.save_checkpoint()
        except Exception as exc:
            log.warning("engine_checkpoint_not_written", error=redact(f"{type(exc).__name__}: {exc}"))
        notifier = getattr(self, "notifier", None)
        if notifier is not None:
            notifier.stop(timeout=2.0)  # what is not sent yet stays pending in notifications.json
        if self._push_enabled():
            result = self.pusher.push_if_due(force=True)
            if result is not None and not result.pushed:
                log.warning("ledger_push_failed", error=result.error)
        with contextlib.suppress(LedgerError, OSError):
            self.ledger.flush_mark()
        self.phase = "stopped"
        with contextlib.suppress(OSError):
            self.write_status()
        self.release_lease(5.0)
        self.release_lock()

    def request_stop(self) -> None:
        """From the signal handler: stop taking work now; `stop()` does the rest."""
        self._stopping.set()
        controller = getattr(self, "controller", None)
        if controller is not None:
            controller.stop()

    def release_lease(self, budget: float) -> None:
        if self.elector is not None:
            self.elector.stop(timeout=budget)

    def release_lock(self) -> None:
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()


def default_executors(
    connect: Callable[[], Runner], *, observe_webhook: ResultObserver | None = None
) -> list[Executor]:
    """The built-in executors; jobs run on the runner `connect` builds on first use. A task both a job
    action and a webhook answer gets both (each sends its `.started` and `.finished`, as Keptn's two
    services did); the engine completes it when the last one finishes."""
    return [
        ApprovalExecutor(),
        EvaluationExecutor(),
        GetActionExecutor(),
        JobExecutor(connect=connect),
        WebhookExecutor(observe=observe_webhook),
    ]


def data_path(settings: Settings, *parts: str) -> Path:
    return settings.data_dir.joinpath(*parts)
