"""The job executor: `job/config.yaml` actions answer task events, as job-executor-service did.

For a `<task>.triggered` event the job config is looked up service -> stage ->
project (spec 6.1): the service and stage levels at the event's pinned commit,
the project level on the main branch at the commit the reconciler accepted. Matching actions run in file order
(spec 6.3): silent ones without events, then the first non-silent one, whose
outcome becomes the `.finished` event. Each task of an action is a `TaskSpec`
(`reconciler.core.jobspec`) run by a `Runner` (Kubernetes Jobs, or local
processes); tasks run in order and the first failure ends the action.

Answers use Keptn's texts: `Task '<name>' finished successfully!\\n\\nLogs:\\n...`
per task on success (no labels, `test.start`/`test.end` for test events), and the
job-executor-service failure messages on error, followed here by the failed
task's log tail (Keptn left it out; a person needs it to act).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from reconciler.adapters.runner import JobOutcome, Runner, RunnerError
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.jobmatching import MatchedAction, answering_action, matching_actions
from reconciler.core.jobspec import ForbiddenImage, JobDefaults, JobSpecError, TaskSpec, build_action_specs
from reconciler.core.outcomes import (
    Failed,
    Outcome,
    PartHealth,
    Succeeded,
    bounded,
    iso_seconds,
    started_event,
)
from reconciler.executors.base import TaskAlreadyFinished, TaskContext, TaskExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.jobconfig import JobConfig, load_jobconfig
from reconciler.formats.problems import ConfigError
from reconciler.settings import Settings

SOURCE = "job-executor-service"
CONFIG_FILE = "job/config.yaml"
NO_CONFIG = "NoJobConfig"
NO_ACTION = "NoMatchingAction"
IMAGE_FORBIDDEN = "ImageForbidden"
SPEC_INVALID = "JobSpecInvalid"
RUNNER_UNAVAILABLE = "RunnerUnavailable"
ACTION_CRASHED = "ActionCrashed"
"""`Failed.reason` of a job task besides the runner's own (`JobOutcome.reason`)."""
CREATE_ERROR = "Error while creating job: "
CLAIMS_KEPT = 256
"""Lookups kept between a claim and its run (a few per worker is plenty)."""

_log = get_logger(__name__)


@dataclass(frozen=True)
class ConfigLookup:
    """Which job config applies to an event, and where we looked."""

    looked_at: list[str]
    config: JobConfig | None = None
    raw: bytes = b""
    location: str = ""
    error: str | None = None

    def describe(self) -> str:
        return ", ".join(self.looked_at)


@lru_cache(maxsize=64)
def _parse(raw: bytes, where: str) -> JobConfig:
    return load_jobconfig(raw, where)


@dataclass(frozen=True)
class ResourceLevel:
    """One place a per-service resource is read from, most specific first (see `resource_levels`)."""

    branch: str
    path: str
    commit: str | None
    where: str
    """`branch:path@commit` for messages."""


def resource_levels(event: KeptnEvent, main_branch: str, file: str) -> list[ResourceLevel]:
    """Where Keptn's resource lookup found `file` for an event: service level, then stage level (both
    on the stage branch at the pinned commit), then project level (main, at its tip)."""
    commit = event.gitcommitid or None
    pin = f"@{commit[:12]}" if commit else ""
    candidates = [
        (event.stage, f"{event.service}/{file}" if event.service else "", commit),
        (event.stage, file, commit),
        (main_branch, file, None),
    ]
    return [
        ResourceLevel(branch, path, at, f"{branch}:{path}" + (pin if at else ""))
        for branch, path, at in candidates
        if branch and path
    ]


def lookup_config(event: KeptnEvent, ctx: TaskContext) -> ConfigLookup:
    """Service level, then stage level (both at the pinned commit), then project level on main."""
    looked: list[str] = []
    for level in resource_levels(event, ctx.settings.main_branch, CONFIG_FILE):
        branch, path, at, where = level.branch, level.path, level.commit, level.where
        looked.append(where)
        raw = ctx.read_file(branch, path, at)
        if raw is None:
            continue
        try:
            config = _parse(raw, f"{branch}:{path}")
        except ConfigError as exc:
            return ConfigLookup(looked, None, raw, where, str(exc))
        return ConfigLookup(looked, config, raw, where)
    return ConfigLookup(looked, None, b"", "", None)


def job_defaults(settings: Settings, namespace: str | None = None) -> JobDefaults:
    """What every Job gets unless its task says otherwise, from the `job_*` settings."""
    return JobDefaults(
        namespace=namespace or settings.job_namespace,
        service_account=settings.job_service_account,
        allowed_images=tuple(settings.allowed_images),
        allow_privileged=settings.allow_privileged_jobs,
        task_deadline_seconds=settings.job_task_deadline,
    )


@dataclass
class ActionResult:
    succeeded: bool
    message: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    """Why it failed (`Failed.reason`); the runner's `JobOutcome.reason` when a job ran."""
    logs: str = ""
    """The failed task's output tail."""


def _outcome(event: KeptnEvent, result: ActionResult) -> Outcome:
    if not result.succeeded:
        return Failed(result.reason or ACTION_CRASHED, redact(result.message), log_tail=redact(result.logs))
    data: dict[str, Any] = {}
    if event.type == "sh.keptn.event.test.triggered":
        test: dict[str, Any] = {}
        if result.started_at is not None:
            test["start"] = iso_seconds(result.started_at)
        if result.finished_at is not None:
            test["end"] = iso_seconds(result.finished_at)
        test.update(result.artifacts)
        data["test"] = test
    return Succeeded(result="pass", message=redact(bounded(result.message)), data=data, labels=False)


def _create_error(text: str) -> str:
    return text if text.startswith(CREATE_ERROR) else CREATE_ERROR + text


class JobExecutor(TaskExecutor):
    """Answers task events with the actions of job/config.yaml (source `job-executor-service`)."""

    name = SOURCE

    def __init__(self, runner: Runner | None = None, *, connect: Callable[[], Runner] | None = None) -> None:
        """`runner`, or `connect` to build it on first use (the wiring passes the one runner
        `runtime.environment` chose, so a cluster that cannot be configured fails a job, not the start)."""
        if runner is None and connect is None:
            raise ValueError("JobExecutor needs a runner or a way to connect one")
        self._runner = runner
        self._connect = connect
        self._lock = threading.Lock()
        self._claimed: OrderedDict[str, ConfigLookup] = OrderedDict()
        """The lookup `claims` made, by triggered id, so the task's run reads the same config once."""

    def runner(self) -> Runner:
        with self._lock:
            if self._runner is None:
                assert self._connect is not None
                self._runner = self._connect()
            return self._runner

    def runner_health(self) -> PartHealth | None:
        """How the runner's backend is doing (the Kubernetes API), once a runner exists."""
        with self._lock:
            runner = self._runner
        return runner.health() if runner is not None else None

    # --- claiming --------------------------------------------------------------------------------

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        etype = event.etype
        if etype is None or not etype.is_task or etype.kind != "triggered":
            return False
        found = self._lookup(event, ctx)
        return found.config is not None and answering_action(found.config, event) is not None

    def _lookup(self, event: KeptnEvent, ctx: TaskContext, *, reuse: bool = False) -> ConfigLookup:
        """`claims` looks the config up and keeps it; the run of the same task takes it back
        (`reuse`), so one task reads and parses its job config once."""
        with self._lock:
            kept = self._claimed.pop(event.id, None) if reuse else None
        if kept is not None:
            return kept
        found = lookup_config(event, ctx)
        if not reuse:
            with self._lock:
                self._claimed[event.id] = found
                while len(self._claimed) > CLAIMS_KEPT:
                    self._claimed.popitem(last=False)
        return found

    def explain_unclaimed(self, event: KeptnEvent, ctx: TaskContext) -> str:
        """Why no job action answers `event`, for the message of a task nobody handles."""
        return self._explain(event, lookup_config(event, ctx))

    def _explain(self, event: KeptnEvent, found: ConfigLookup) -> str:
        task = event.etype.task if event.etype and event.etype.task else event.type
        head = f"no executor handles task '{task}' ({event.type}): it is not a built-in task and"
        if found.error:
            return f"{head} the job config {found.location} is invalid: {found.error}"
        if found.config is None:
            return f"{head} no job config exists (looked at {found.describe()})"
        silent = [m for m in matching_actions(found.config, event) if m.action.silent]
        extra = f"; only silent actions match ({', '.join(m.action.name for m in silent)})" if silent else ""
        return f"{head} no action of {found.location} matches it{extra}"

    # --- running -----------------------------------------------------------------------------------

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        """`.started` just before the first job is launched (or with an error that comes first);
        the answering action's result is the outcome."""
        log = _log.bind(
            event_type=event.type,
            context=event.shkeptncontext,
            project=event.project,
            stage=event.stage,
            service=event.service,
        )
        answered = {"started": started}

        def start() -> None:
            if not answered["started"]:
                ctx.emit(started_event(event, SOURCE, now=ctx.now()))
                answered["started"] = True

        found = self._lookup(event, ctx, reuse=True)
        if found.config is None:
            reason = found.error or f"no {CONFIG_FILE} found (looked at {found.describe()})"
            start()
            return Failed(NO_CONFIG, redact(f"could not retrieve config for job-executor-service: {reason}"))
        for matched in matching_actions(found.config, event):
            try:
                result = self._run_action(event, ctx, found, matched, start)
            except TaskAlreadyFinished:
                raise  # the engine ended the task before it started: launch nothing, answer nothing
            except Exception as exc:  # a terminal event even for the unforeseen
                log.exception("job action crashed", action=matched.action.name)
                result = ActionResult(
                    False, _create_error(f"{type(exc).__name__}: {exc}"), reason=ACTION_CRASHED
                )
            if matched.action.silent:
                log.info(
                    "silent action ended",
                    action=matched.action.name,
                    succeeded=result.succeeded,
                    message=redact(result.message[:500]),
                )
                continue
            start()
            return _outcome(event, result)
        start()
        return Failed(NO_ACTION, redact(self._explain(event, found)))

    def specs(
        self,
        event: KeptnEvent,
        ctx: TaskContext,
        found: ConfigLookup,
        matched: MatchedAction,
        runner: Runner | None,
    ) -> list[TaskSpec]:
        """TaskSpecs of an action, files read at the pinned commit (raises JobSpecError).

        Built by `build_action_specs`, the function `reconciler job render` prints, so
        the preview is what runs (the image allow-list included)."""
        commit = event.gitcommitid or None
        return build_action_specs(
            event=event,
            matched=matched,
            defaults=job_defaults(ctx.settings),
            read=lambda source: ctx.read_file(event.stage, source, commit),
            listing=lambda: ctx.list_files(event.stage, f"{event.service}/", commit),
            secret_keys=runner.secret_keys if runner is not None else None,
            raw_config=found.raw,
        )

    def _run_action(
        self,
        event: KeptnEvent,
        ctx: TaskContext,
        found: ConfigLookup,
        matched: MatchedAction,
        before_launch: Callable[[], None],
    ) -> ActionResult:
        runner = self.runner()
        try:
            specs = self.specs(event, ctx, found, matched, runner)
        except ForbiddenImage as exc:  # job-executor-service's own words, without the prefix
            return ActionResult(False, str(exc), reason=IMAGE_FORBIDDEN)
        except JobSpecError as exc:
            return ActionResult(False, _create_error(str(exc)), reason=SPEC_INVALID)
        except RunnerError as exc:
            return ActionResult(False, str(exc), reason=RUNNER_UNAVAILABLE)
        blocks: list[str] = []
        first: datetime | None = None
        last: datetime | None = None
        artifacts: dict[str, str] = {}
        for spec in specs:
            before_launch()
            try:
                handle = runner.launch(spec)
            except JobSpecError as exc:
                return ActionResult(False, _create_error(str(exc)), first, last, reason=SPEC_INVALID)
            except RunnerError as exc:
                return ActionResult(False, str(exc), first, last, reason=RUNNER_UNAVAILABLE)
            first = first or handle.started_at
            outcome: JobOutcome = runner.wait(handle, spec)
            last = outcome.finished_at
            if not outcome.succeeded:  # the runner's reason travels (DeadlineExceeded, NeverRan, ...)
                message = _create_error(outcome.message)
                return ActionResult(False, message, first, last, reason=outcome.reason, logs=outcome.logs)
            artifacts.update(outcome.artifacts)
            blocks.append(f"Task '{spec.task_name}' finished successfully!\n\nLogs:\n{outcome.logs}\n\n")
        return ActionResult(True, "".join(blocks), first, last, artifacts)
