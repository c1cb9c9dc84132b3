"""Validating a whole upstream: every file on `main` and on each stage branch, and the links between them.

A Keptn user found most mistakes in these files only when a sequence ran into them
(a task nobody answers times out after ten minutes; a selector spelled `failed`
never fires; an SLO naming an unknown SLI fails the gate). Checking the links up
front turns those into one located error per mistake: branch, file, line, column,
field path, and what was expected.

Pure: it reads through `UpstreamFiles` (this module declares the protocol; the shell
passes a git repository, a directory, or `PinnedFiles` holding each branch at one
commit, whose content never changes) and returns a `ValidationResult` holding the
parsed configuration set and the problems. Admission calls it for every proposal, so
each file is parsed once per distinct content: pass the previous result and files
whose bytes did not change are not parsed again.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from reconciler.core import deploytrigger
from reconciler.core.jobmatching import answering_action, name_matches
from reconciler.core.localcommands import env_refusal, refusal
from reconciler.core.webhookrender import select_webhooks
from reconciler.formats.events import KeptnEvent, task_type
from reconciler.formats.jobconfig import JobConfig, file_entry_problem
from reconciler.formats.layout import SERVICE_NAME_RULE, is_service, not_a_service_dir
from reconciler.formats.metadata import ProjectMetadata
from reconciler.formats.notifications import NOTIFICATIONS_FILE, NotificationsConfig, load_notifications
from reconciler.formats.problems import ConfigError, Problem
from reconciler.formats.remediation import Remediation
from reconciler.formats.shipyard import BUILTIN_TASKS, SELECTOR_VALUES, Shipyard
from reconciler.formats.sli import SLIConfig, merge_sli
from reconciler.formats.slo import SLO, CriteriaError, parse_criterion
from reconciler.formats.webhook import WEBHOOK_FILE, WebhookConfig, load_webhook_config
from reconciler.formats.yamldoc import YamlDoc, load_yaml, validate_doc

SHIPYARD = "shipyard.yaml"
METADATA = "metadata.yaml"
SLI_FILE = "prometheus/sli.yaml"
JOB_CONFIG = "job/config.yaml"
SLO_FILE = "slo.yaml"
REMEDIATION_FILE = "remediation.yaml"

BUILTIN_SLIS = frozenset(
    {"throughput", "error_rate", "response_time_p50", "response_time_p90", "response_time_p95"}
)
"""prometheus-service's default queries (spec 7.3): usable without an sli.yaml entry."""

VALIDATOR_SOURCE = "reconciler-validate"

M = TypeVar("M", bound=BaseModel)
Severity = Literal["error", "warning"]

MAX_BLOB_BYTES = 64 * 1024 * 1024


class UpstreamFiles(Protocol):
    """Files of an upstream, per branch (optionally at a given commit of that branch)."""

    def branches(self) -> dict[str, str]:
        """Branch name -> revision id (a commit SHA, or a content hash for directories)."""
        ...

    def read(self, branch: str, path: str, commit: str | None = None) -> bytes | None:
        """Bytes of `path` on `branch` (at `commit` when given), or None when absent."""
        ...

    def list(self, branch: str, prefix: str = "", commit: str | None = None) -> list[str]:
        """Every file path under `prefix` (recursively), sorted."""
        ...


@runtime_checkable
class TreeFiles(Protocol):
    """What a content-addressed upstream (git) adds: ids that change exactly when content does.

    With them, validation re-checks only the service directories whose tree changed since
    the previous result (`ValidationResult.services`) and lists only those: one service's
    commit at 1,000 services re-checks one service, not 1,000."""

    def dirs(self, branch: str, commit: str | None = None) -> dict[str, str] | None:
        """Top-level directory name -> its tree id; None when that cannot be said."""
        ...

    def tree_id(self, branch: str, path: str, commit: str | None = None) -> str | None:
        """Id of the tree (or blob) at `path` (`""`: the branch's root tree); None when absent."""
        ...


# --- the parsed configuration set ------------------------------------------------------------


@lru_cache(maxsize=32)
def _located(data: bytes, path: str) -> YamlDoc | None:
    """A file's YAML document with positions, parsed again for its problems (see `ParsedFile`)."""
    try:
        return load_yaml(data, path)
    except ConfigError:
        return None


@dataclass(frozen=True, slots=True)
class ParsedFile(Generic[M]):
    """One file as read: its model when it parsed, its problems when it did not.

    It keeps the file's bytes, not its parsed YAML document: the document (every node with
    its line and column) is only needed to locate a problem, and kept for every file of a
    1,000-service upstream it was 77 of the validated upstream's 133 MiB. `doc` parses the
    bytes again the first time a problem needs a location (a file with problems is rare)."""

    branch: str
    path: str
    digest: str
    data: bytes | None
    model: M | None
    problems: tuple[Problem, ...] = ()
    kind: str = ""
    """The model's class name it was parsed as (part of `key`)."""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What `_Validation.parse` looks a parse up by: model, branch, path, content digest."""
        return (self.kind, self.branch, self.path, self.digest)

    @property
    def doc(self) -> YamlDoc | None:
        """The YAML document with positions; None when the bytes are not YAML (the last few are
        kept by content: slots, not a per-object memo, since one is kept per file served)."""
        return None if self.data is None else _located(self.data, self.path)

    def problem(self, loc: Iterable[str | int], message: str, severity: Severity = "error") -> Problem:
        """A problem at `loc` (a path of YAML keys; matched case-insensitively where Keptn did)."""
        loc = tuple(loc)
        if self.doc is None:
            return Problem(branch=self.branch, file=self.path, message=message, severity=severity)
        real = _actual_loc(self.doc.value, loc)
        found = self.doc.problem(real, message)
        return found.model_copy(update={"branch": self.branch, "severity": severity})


@dataclass(frozen=True, slots=True)
class JobConfigRef:
    """The job config a service uses (spec 6.1 lookup: service, then stage, then project)."""

    branch: str
    path: str
    config: JobConfig | None
    """None when the file exists but is invalid (its own problems are reported separately)."""

    def where(self) -> str:
        return f"{self.branch}:{self.path}"


@dataclass(frozen=True, slots=True)
class WebhookFile:
    """A `webhook/webhook.yaml` as read at one level."""

    branch: str
    path: str
    config: WebhookConfig | None
    """None when the file exists but is invalid (its own problems are reported separately)."""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    name: str
    stage: str
    files: tuple[str, ...]
    """Every file under the service directory, relative to it."""
    slo: SLO | None = None
    sli: SLIConfig | None = None
    remediation: Remediation | None = None
    jobconfig: JobConfig | None = None
    """The service's own `job/config.yaml` (see `UpstreamConfig.job_config` for the effective one)."""


@dataclass(frozen=True)
class StageConfig:
    name: str
    revision: str
    sli: SLIConfig | None = None
    jobconfig: JobConfig | None = None
    services: Mapping[str, ServiceConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamConfig:
    """Everything the reconciler reads from the upstream, parsed; branches pinned by `revisions`."""

    main_branch: str
    revisions: Mapping[str, str]
    """Branch -> revision (commit SHA for git) of every branch that was read."""
    shipyard: Shipyard | None = None
    metadata: ProjectMetadata | None = None
    sli: SLIConfig | None = None
    jobconfig: JobConfig | None = None
    stages: Mapping[str, StageConfig] = field(default_factory=dict)
    job_configs: Mapping[tuple[str, str], JobConfigRef] = field(default_factory=dict)
    """(stage, service) -> the job config that service uses, when there is one."""
    notifications: NotificationsConfig | None = None
    """`notifications.yaml` on main, when present and valid (the targets delivery news goes to)."""

    @property
    def project(self) -> str | None:
        """`projectName` from `metadata.yaml` on main; callers fall back to `Settings.project`."""
        return self.metadata.project_name if self.metadata else None

    def indicators(self, stage: str, service: str) -> dict[str, str]:
        """SLI queries merged project -> stage -> service (spec 7.2)."""
        st = self.stages.get(stage)
        svc = st.services.get(service) if st else None
        return merge_sli(self.sli, st.sli if st else None, svc.sli if svc else None)

    def job_config(self, stage: str, service: str) -> JobConfigRef | None:
        return self.job_configs.get((stage, service))

    def service(self, stage: str, service: str) -> ServiceConfig | None:
        st = self.stages.get(stage)
        return st.services.get(service) if st else None


@dataclass(frozen=True, slots=True)
class CheckedService:
    """One service directory, checked: its config, the job config it uses, its problems.

    A pure function of the service's files (its tree id) and of the files and settings its
    checks read besides (`_Validation.context`: the shipyard, the stage's and project's
    sli, job and webhook files, the local runner's allow-list), so when none of them
    changed the previous result is the result."""

    service: ServiceConfig
    ref: JobConfigRef | None
    problems: tuple[Problem, ...]
    tree: str = ""
    """The service directory's tree id it was checked at."""
    parsed: tuple[ParsedFile[Any], ...] = ()
    """Its files' parses, carried on so a change of what it depends on does not parse them again
    (not as (key, parse) pairs: at 10,000 services the pairs and keys alone were ~9 MiB)."""


@dataclass(frozen=True)
class CheckedStage:
    """A stage branch's services as checked under one `context` (see `CheckedService`).

    When the branch's root tree and the context are what they were, the whole stage is the
    previous result (a commit on `qa` leaves `production` untouched); otherwise each service
    whose tree id is unchanged is, and only the others are checked again."""

    context: str
    root: str | None
    services: Mapping[str, CheckedService]
    config: Mapping[str, ServiceConfig]
    job_configs: Mapping[str, JobConfigRef]
    problems: tuple[Problem, ...]
    """The services' problems (not those of the stage-level files, found again on every run)."""


@dataclass(frozen=True)
class _Levels:
    """The stage's and project's files a service's checks read besides its own."""

    shipyard: ParsedFile[Shipyard]
    index: int
    project_sli: ParsedFile[SLIConfig] | None
    project_jobs: ParsedFile[JobConfig] | None
    project_hooks: WebhookFile | None
    stage_sli: ParsedFile[SLIConfig] | None
    stage_jobs: ParsedFile[JobConfig] | None
    stage_hooks: WebhookFile | None

    @property
    def branch(self) -> str:
        assert self.shipyard.model is not None
        return self.shipyard.model.spec.stages[self.index].name


@dataclass(frozen=True)
class ValidationResult:
    config: UpstreamConfig
    problems: tuple[Problem, ...]
    parsed: Mapping[tuple[str, str, str, str], ParsedFile[Any]] = field(default_factory=dict)
    """(model name, branch, path, content digest) -> parse, reused by the next validation."""
    stages: Mapping[str, CheckedStage] = field(default_factory=dict)
    """Each stage's checked services, reused by the next validation."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


# --- entry point -----------------------------------------------------------------------------------


def validate_upstream(
    files: UpstreamFiles,
    main_branch: str = "main",
    previous: ValidationResult | None = None,
    *,
    local_commands: Sequence[str] | None = None,
    local_severity: Severity = "error",
    check_values: bool = False,
) -> ValidationResult:
    """Check every file of the upstream and the links between them; never raises on bad content.

    `check_values`: also the commit-to-deploy `values.yaml` of each service (what admission
    serves from; `reconciler validate` leaves them to the deploy trigger's own messages).

    `local_commands`: the local runner's allow-list (`local_commands` setting); when given,
    every job task a local runner would refuse (its command, or an env name that makes a
    program load other code) is a problem of `local_severity`: an error where jobs run
    locally (the snapshot), a warning for `reconciler validate`, which cannot know the runner.
    """
    return _Validation(
        files,
        main_branch,
        previous.parsed if previous else {},
        local_commands,
        local_severity,
        previous.stages if previous else {},
        check_values,
    ).run()


class _Validation:
    def __init__(
        self,
        files: UpstreamFiles,
        main: str,
        cache: Mapping[tuple[str, str, str, str], ParsedFile[Any]],
        local_commands: Sequence[str] | None = None,
        local_severity: Severity = "error",
        checked: Mapping[str, CheckedStage] | None = None,
        check_values: bool = False,
    ) -> None:
        self.check_values = check_values
        self.files = files
        self.main = main
        self.cache = cache
        self.checked_before: Mapping[str, CheckedStage] = checked or {}
        self.checked: dict[str, CheckedStage] = {}
        self.local_commands = None if local_commands is None else list(local_commands)
        self.local_severity: Severity = local_severity
        self.parsed: dict[tuple[str, str, str, str], ParsedFile[Any]] = {}
        self.parse_order: list[tuple[str, str, str, str]] = []
        self.by_content: dict[tuple[str, str, bool], ParsedFile[Any]] = {}
        """(model name, content digest, no `empty` default) -> a clean parse (`same_content`)."""
        self.problems: list[Problem] = []
        self.revisions: dict[str, str] = {}
        self.listings: dict[str, frozenset[str]] = {}

    # -- reading ------------------------------------------------------------------------------

    def parse(
        self,
        model: type[M],
        branch: str,
        path: str,
        *,
        empty: Callable[[], M] | None = None,
        blank_is_absent: bool = False,
    ) -> ParsedFile[M] | None:
        """Read and parse one file (None when absent); its problems are recorded once."""
        data = self.files.read(branch, path, None)
        if data is None and self.exists(branch, path):
            self.add(
                Problem(
                    branch=branch,
                    file=path,
                    message="file exists but could not be read (larger than the "
                    f"{MAX_BLOB_BYTES // (1024 * 1024)} MiB read limit?); expected a small YAML file",
                )
            )
            return None
        if data is None or (blank_is_absent and not data.strip()):
            return None
        # interned: services made from one template share each file's bytes, so one digest
        # string serves all their parses, keys and carried-on checks (7 MiB at 10,000 services)
        digest = sys.intern(hashlib.sha256(data).hexdigest())
        key = (model.__name__, branch, path, digest)
        hit = self.cache.get(key) or self.parsed.get(key) or self.parsed_before(branch, path, key)
        if hit is None:
            hit = self.same_content(model, branch, path, digest, empty)
        parsed: ParsedFile[M] = hit if hit is not None else _parse(model, branch, path, data, digest, empty)
        if hit is None and not parsed.problems:
            self.by_content[(model.__name__, digest, empty is None)] = parsed
        self.parsed[key] = parsed
        self.parse_order.append(key)
        self.problems.extend(parsed.problems)
        return parsed

    def parsed_before(self, branch: str, path: str, key: tuple[str, str, str, str]) -> ParsedFile[Any] | None:
        """A service file's parse from the previous check of its service (whatever its key)."""
        stage = self.checked_before.get(branch)
        before = stage.services.get(path.partition("/")[0]) if stage is not None else None
        if before is None:
            return None
        return next((parsed for parsed in before.parsed if parsed.key == key), None)

    def same_content(
        self, model: type[M], branch: str, path: str, digest: str, empty: Callable[[], M] | None
    ) -> ParsedFile[M] | None:
        """The parse of a file elsewhere with the same bytes, when it parsed cleanly.

        Services generated from one template (the job config says `$(KEPTN_SERVICE)`, so one
        file serves them all) carry identical files: parsing each content once, and sharing
        its model, is most of validating such an upstream cold and of the memory it keeps.
        A file with problems is parsed on its own (its problems name its own path)."""
        shared = self.by_content.get((model.__name__, digest, empty is None))
        if shared is None:
            return None
        return ParsedFile(branch, path, digest, shared.data, shared.model, kind=shared.kind)

    def webhook_file(self, branch: str, path: str) -> WebhookFile | None:
        """A webhook config (None when absent), checked as the webhook executor will load it; its
        problems (unknown template fields, undeclared secrets, unparsable URLs) are recorded."""
        data = self.files.read(branch, path, None)
        if data is None and self.exists(branch, path):
            self.add(Problem(branch=branch, file=path, message="file exists but could not be read"))
            return None
        if data is None:
            return None
        config, problems = _load_webhook(data, branch, path)
        self.problems.extend(problems)
        return WebhookFile(branch, path, config, hashlib.sha256(data).hexdigest())

    def listing(self, branch: str) -> frozenset[str]:
        """Every file of `branch`, listed once per run."""
        if branch not in self.listings:
            self.listings[branch] = frozenset(self.files.list(branch, "", None))
        return self.listings[branch]

    def exists(self, branch: str, path: str) -> bool:
        """Is `path` a file on `branch` (tells "absent" from "unreadable" without listing it all)?"""
        if branch in self.listings:
            return path in self.listings[branch]
        return path in self.files.list(branch, path, None)

    def service_dirs(self, branch: str) -> list[tuple[str, str | None, list[str] | None]]:
        """The stage's top-level directories (name, tree id, files when already listed), in path order.

        Where the upstream has tree ids, only the directories are listed here; a service's
        files are listed when it has to be checked again (`svc_files`)."""
        dirs = self.files.dirs(branch, None) if isinstance(self.files, TreeFiles) else None
        if dirs is None:
            return [(name, None, files) for name, files in _services(sorted(self.listing(branch))).items()]
        names = sorted((n for n in dirs if not not_a_service_dir(n)), key=lambda n: n + "/")
        return [(name, dirs[name], None) for name in names]

    def svc_files(self, branch: str, name: str) -> list[str]:
        # interned: every service has its slo.yaml, sli.yaml, job/config.yaml..., and each
        # served ServiceConfig keeps its file list (9 MiB of repeated names at 10,000 services)
        return [sys.intern(p[len(name) + 1 :]) for p in self.files.list(branch, name, None)]

    def context(self, *parts: ParsedFile[Any] | WebhookFile | int | str | None) -> str:
        """Digest of what a service's checks read besides its own files (see `CheckedService`)."""
        text = repr(
            (
                self.main,
                self.check_values,
                self.local_commands,
                self.local_severity,
                [p.digest if isinstance(p, ParsedFile | WebhookFile) else p for p in parts],
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> ValidationResult:
        branches = self.files.branches()
        if self.main not in branches:
            self.add(
                Problem(
                    branch=self.main,
                    file=SHIPYARD,
                    message=f"branch {self.main!r} does not exist (branches: {_names(branches)}); "
                    "expected the project's main branch holding shipyard.yaml",
                )
            )
            return self.result(UpstreamConfig(main_branch=self.main, revisions={}))
        self.revisions[self.main] = branches[self.main]
        shipyard = self.parse(Shipyard, self.main, SHIPYARD)
        if shipyard is None:
            self.add(
                Problem(
                    branch=self.main,
                    file=SHIPYARD,
                    message=f"file is missing; expected the shipyard (spec.keptn.sh/0.2.0 to 0.2.4) on branch {self.main!r}",
                )
            )
        metadata = self.parse(ProjectMetadata, self.main, METADATA, empty=ProjectMetadata)
        project_sli = self.parse(SLIConfig, self.main, SLI_FILE, empty=SLIConfig)
        project_jobs = self.parse(JobConfig, self.main, JOB_CONFIG)
        self.check_local(project_jobs)
        project_hooks = self.webhook_file(self.main, WEBHOOK_FILE)
        notifications = self.check_notifications()
        if shipyard is None or shipyard.model is None:
            return self.result(
                UpstreamConfig(
                    main_branch=self.main,
                    revisions=dict(self.revisions),
                    metadata=_model(metadata),
                    sli=_model(project_sli),
                    jobconfig=_model(project_jobs),
                    notifications=notifications,
                )
            )
        self.check_shipyard(shipyard, branches)
        stages: dict[str, StageConfig] = {}
        job_configs: dict[tuple[str, str], JobConfigRef] = {}
        for index, stage in enumerate(shipyard.model.spec.stages):
            if stage.name not in branches:
                continue
            self.revisions[stage.name] = branches[stage.name]
            stages[stage.name] = self.check_stage(
                shipyard, index, project_sli, project_jobs, job_configs, project_hooks
            )
        return self.result(
            UpstreamConfig(
                main_branch=self.main,
                revisions=dict(self.revisions),
                shipyard=shipyard.model,
                metadata=_model(metadata),
                sli=_model(project_sli),
                jobconfig=_model(project_jobs),
                stages=stages,
                job_configs=job_configs,
                notifications=notifications,
            )
        )

    def result(self, config: UpstreamConfig) -> ValidationResult:
        """Problems in reading order: main first, then stages as the shipyard lists them; by file, line."""
        rank = {name: i for i, name in enumerate(self.revisions)}
        unique = list({p.model_dump_json(): p for p in self.problems}.values())
        unique.sort(key=lambda p: (rank.get(p.branch or "", len(rank)), p.file, p.line or 0, p.column or 0))
        return ValidationResult(
            config=config, problems=tuple(unique), parsed=self.kept(), stages=dict(self.checked)
        )

    def kept(self) -> dict[tuple[str, str, str, str], ParsedFile[Any]]:
        """The parses the next run looks up by key: not a checked service's files, which its
        `CheckedService` carries on (`parsed_before` finds them there); a second index of them
        was a 70,000-entry dict at 10,000 services."""

        def carried(key: tuple[str, str, str, str]) -> bool:
            stage = self.checked.get(key[1])
            head, slash, _ = key[2].partition("/")
            return stage is not None and bool(slash) and head in stage.services

        return {k: v for k, v in self.parsed.items() if not carried(k)}

    def check_notifications(self) -> NotificationsConfig | None:
        """`notifications.yaml` on main (optional): its own located problems, like any other file."""
        data = self.files.read(self.main, NOTIFICATIONS_FILE, None)
        if data is None or not data.strip():
            return None
        try:
            return load_notifications(data, NOTIFICATIONS_FILE)
        except ConfigError as exc:
            self.problems.extend(exc.with_branch(self.main).problems)
            return None

    # -- shipyard links -----------------------------------------------------------------------------

    def check_shipyard(self, shipyard: ParsedFile[Shipyard], branches: Mapping[str, str]) -> None:
        model = shipyard.model
        assert model is not None
        sequences = {
            (stage.name, seq.name): [t.name for t in seq.tasks]
            for stage in model.spec.stages
            for seq in stage.sequences
        }
        for i, stage in enumerate(model.spec.stages):
            sloc: tuple[str | int, ...] = ("spec", "stages", i)
            if stage.name not in branches:
                self.add(
                    shipyard.problem(
                        (*sloc, "name"),
                        f"stage {stage.name!r} has no branch {stage.name!r} (branches: {_names(branches)}); "
                        "expected one branch per stage, named exactly like the stage",
                    )
                )
            for j, seq in enumerate(stage.sequences):
                qloc = (*sloc, "sequences", j)
                if not seq.tasks:
                    self.add(
                        shipyard.problem(
                            (*qloc, "tasks"),
                            f"sequence {stage.name}.{seq.name} has no tasks; expected at least one task "
                            "(Keptn cannot start an empty sequence)",
                        )
                    )
                for k, trigger in enumerate(seq.triggered_on or []):
                    tloc = (*qloc, "triggeredOn", k)
                    src = (trigger.source_stage, trigger.source_sequence)
                    if model.stage(src[0]) is None:
                        self.add(
                            shipyard.problem(
                                (*tloc, "event"),
                                f"triggeredOn event {trigger.event!r} names stage {src[0]!r}, which the shipyard "
                                f"does not define; expected one of: {', '.join(model.stage_names)}",
                            )
                        )
                        continue
                    if src not in sequences and src[1] != "evaluation":
                        known = sorted(q for (s, q) in sequences if s == src[0])
                        self.add(
                            shipyard.problem(
                                (*tloc, "event"),
                                f"triggeredOn event {trigger.event!r} names sequence {src[1]!r}, which stage "
                                f"{src[0]!r} does not define; expected one of: {', '.join(known) or '(none)'}",
                            )
                        )
                        continue
                    tasks = sequences.get(src, ["evaluation"])
                    if trigger.selector is not None and trigger.selector.match is not None:
                        self.check_selector(shipyard, tloc, trigger.event, trigger.selector.match, tasks)

    def check_selector(
        self,
        shipyard: ParsedFile[Shipyard],
        tloc: tuple[str | int, ...],
        event: str,
        match: Mapping[str, str],
        tasks: list[str],
    ) -> None:
        mloc = (*tloc, "selector", "match")
        if not match:
            self.add(
                shipyard.problem(
                    mloc,
                    "an empty selector never fires; expected e.g. {result: fail}, "
                    "or no selector to fire on pass and warning",
                )
            )
            return
        allowed = ["result", *dict.fromkeys(f"{t}.result" for t in tasks)]
        for key, value in match.items():
            if key not in allowed:
                self.add(
                    shipyard.problem(
                        (*mloc, key),
                        f"selector key {key!r} is never looked at; expected 'result' or '<task>.result' "
                        f"for a task of {event.rsplit('.', 1)[0]} ({', '.join(allowed)})",
                    )
                )
            if value not in SELECTOR_VALUES:
                hint = (
                    " (Keptn's result is 'fail', not 'failed')"
                    if value.lower() in ("failed", "failure")
                    else ""
                )
                self.add(
                    shipyard.problem(
                        (*mloc, key),
                        f"selector value {value!r} never matches{hint}; expected one of pass, warning, fail",
                    )
                )

    # -- one stage ------------------------------------------------------------------------------------

    def check_stage(
        self,
        shipyard: ParsedFile[Shipyard],
        index: int,
        project_sli: ParsedFile[SLIConfig] | None,
        project_jobs: ParsedFile[JobConfig] | None,
        job_configs: dict[tuple[str, str], JobConfigRef],
        project_hooks: WebhookFile | None = None,
    ) -> StageConfig:
        assert shipyard.model is not None
        stage = shipyard.model.spec.stages[index]
        branch = stage.name
        stage_sli = self.parse(SLIConfig, branch, SLI_FILE, empty=SLIConfig)
        stage_jobs = self.parse(JobConfig, branch, JOB_CONFIG)
        self.check_local(stage_jobs)
        stage_hooks = self.webhook_file(branch, WEBHOOK_FILE)
        levels = _Levels(
            shipyard, index, project_sli, project_jobs, project_hooks, stage_sli, stage_jobs, stage_hooks
        )
        context = self.context(
            shipyard, index, project_sli, project_jobs, project_hooks, stage_sli, stage_jobs, stage_hooks
        )
        root = self.files.tree_id(branch, "", None) if isinstance(self.files, TreeFiles) else None
        before = self.checked_before.get(branch)
        if before is not None and before.context == context and root is not None and before.root == root:
            self.checked[branch] = before
            self.problems.extend(before.problems)
            job_configs.update({(branch, n): ref for n, ref in before.job_configs.items()})
            return self._stage(branch, stage_sli, stage_jobs, before.config)
        same = before is not None and before.context == context
        checked: dict[str, CheckedService] = {}
        first_problem = len(self.problems)
        for name, tree, listed in self.service_dirs(branch):
            if not is_service(name):
                self.add(
                    Problem(
                        branch=branch,
                        file=f"{name}/",
                        message=f"directory {name!r} is not a valid service name and is ignored (it is never "
                        f"deployed, triggered or served); expected {SERVICE_NAME_RULE} (stage-level resources live "
                        "in job/ and prometheus/)",
                        severity="warning",
                    )
                )
                continue
            hit = before.services.get(name) if same and before is not None and tree is not None else None
            if hit is not None and hit.tree == tree:
                if hit.problems:
                    self.problems.extend(hit.problems)
                checked[name] = hit
                continue
            first, parsed_first = len(self.problems), len(self.parse_order)
            svc_files = listed if listed is not None else self.svc_files(branch, name)
            service, ref = self.check_service(levels, name, svc_files)
            parses = tuple(self.parsed[k] for k in self.parse_order[parsed_first:] if k[1] == branch)
            checked[name] = CheckedService(service, ref, tuple(self.problems[first:]), tree or "", parses)
        config = {name: c.service for name, c in checked.items()}
        refs = {name: c.ref for name, c in checked.items() if c.ref is not None}
        job_configs.update({(branch, n): ref for n, ref in refs.items()})
        if root is not None:
            self.checked[branch] = CheckedStage(
                context, root, checked, config, refs, tuple(self.problems[first_problem:])
            )
        return self._stage(branch, stage_sli, stage_jobs, config)

    def _stage(
        self,
        branch: str,
        sli: ParsedFile[SLIConfig] | None,
        jobs: ParsedFile[JobConfig] | None,
        services: Mapping[str, ServiceConfig],
    ) -> StageConfig:
        return StageConfig(
            name=branch,
            revision=self.revisions[branch],
            sli=_model(sli),
            jobconfig=_model(jobs),
            services=services,
        )

    def check_service(
        self, levels: _Levels, name: str, svc_files: list[str]
    ) -> tuple[ServiceConfig, JobConfigRef | None]:
        """One service directory's files and the links they take part in; problems are added."""
        branch = levels.branch
        slo = self.parse(SLO, branch, f"{name}/{SLO_FILE}", blank_is_absent=True)
        sli = self.parse(SLIConfig, branch, f"{name}/{SLI_FILE}", empty=SLIConfig)
        remediation = self.parse(Remediation, branch, f"{name}/{REMEDIATION_FILE}")
        jobs = self.parse(JobConfig, branch, f"{name}/{JOB_CONFIG}")
        self.check_local(jobs)
        effective = jobs or levels.stage_jobs or levels.project_jobs
        ref = _ref(effective)
        service = ServiceConfig(
            name=name,
            stage=branch,
            files=tuple(svc_files),
            slo=_model(slo),
            sli=_model(sli),
            remediation=_model(remediation),
            jobconfig=_model(jobs),
        )
        if slo is not None and slo.model is not None:
            indicators = merge_sli(_model(levels.project_sli), _model(levels.stage_sli), _model(sli))
            self.check_slo(slo, indicators, [p for p in (levels.project_sli, levels.stage_sli, sli) if p])
        hooks = (
            self.webhook_file(branch, f"{name}/{WEBHOOK_FILE}"),
            levels.stage_hooks,
            levels.project_hooks,
        )
        self.check_tasks(levels.shipyard, levels.index, name, ref, hooks)
        if effective is not None and effective.model is not None:
            self.check_files(effective, branch, name, set(svc_files))
        if remediation is not None and remediation.model is not None:
            if ref is not None and ref.config is not None:
                self.check_remediation(remediation, ref, name)
            elif ref is None and _actions(remediation.model):
                self.add(
                    remediation.problem(
                        ("spec", "remediations"),
                        f"no job config handles these actions: none of {branch}:{name}/{JOB_CONFIG}, "
                        f"{branch}:{JOB_CONFIG}, {self.main}:{JOB_CONFIG} exists; expected an action matching "
                        "sh.keptn.event.action.triggered for each remediation action",
                    )
                )
        if self.check_values and deploytrigger.VALUES_FILE in svc_files:
            path = deploytrigger.values_path(name)
            data = self.files.read(branch, path, None)
            if data is not None:
                try:
                    deploytrigger.load_values(data, path)
                except ConfigError as exc:
                    self.problems.extend(exc.with_branch(branch).problems)
        return service, ref

    def check_slo(
        self, slo: ParsedFile[SLO], indicators: Mapping[str, str], sources: list[ParsedFile[SLIConfig]]
    ) -> None:
        model = slo.model
        assert model is not None
        looked = ", ".join(f"{p.branch}:{p.path}" for p in sources) or "no sli.yaml found"
        for i, objective in enumerate(model.objectives):
            oloc: tuple[str | int, ...] = ("objectives", i)
            # Only the prometheus provider reads prometheus/sli.yaml; another provider (locust)
            # defines its own SLIs and reports an unknown one when the evaluation runs.
            prometheus = model.sli_provider == "prometheus"
            if prometheus and objective.sli not in indicators and objective.sli not in BUILTIN_SLIS:
                defined = sorted(indicators) or ["(none)"]
                self.add(
                    slo.problem(
                        (*oloc, "sli"),
                        f"SLI {objective.sli!r} is not defined ({looked}); expected one of: "
                        f"{', '.join(defined)}, or a built-in SLI ({', '.join(sorted(BUILTIN_SLIS))})",
                    )
                )
            for kind, groups in (("pass", objective.pass_), ("warning", objective.warning)):
                for g, group in enumerate(groups or []):
                    for c, text in enumerate(group.criteria):
                        try:
                            parse_criterion(text)
                        except CriteriaError as exc:
                            self.add(
                                slo.problem(
                                    (*oloc, kind, g, "criteria", c),
                                    f"{exc} {text!r}; expected an operator (<, <=, =, >=, >) and a number, "
                                    "optionally signed (+/-) or with % for a change relative to earlier results",
                                )
                            )
        score = model.total_score
        if score is None or not score.pass_:
            loc: tuple[str, ...] = ("total_score", "pass") if score is not None else ("total_score",)
            self.add(
                slo.problem(
                    loc,
                    'total_score.pass is missing; expected the pass target, e.g. total_score: {pass: "90%", '
                    'warning: "75%"} (Keptn fails every evaluation without it)',
                )
            )
            return
        passed = _percent(score.pass_)
        if passed is None:
            self.add(
                slo.problem(
                    ("total_score", "pass"),
                    f"could not parse pass target {score.pass_!r}; expected a number, optionally followed by %",
                )
            )
        if score.warning is None:
            return
        warned = _percent(score.warning)
        if warned is None:
            self.add(
                slo.problem(
                    ("total_score", "warning"),
                    f"could not parse warning target {score.warning!r}; expected a number, optionally followed by %",
                )
            )
        elif passed is not None and warned > passed:
            self.add(
                slo.problem(
                    ("total_score", "warning"),
                    f"warning target {score.warning} is above the pass target {score.pass_}; expected warning <= pass",
                )
            )

    def check_tasks(
        self,
        shipyard: ParsedFile[Shipyard],
        index: int,
        service: str,
        ref: JobConfigRef | None,
        hooks: Sequence[WebhookFile | None] = (),
    ) -> None:
        """Every task of the stage has an executor: built in, a job action, or a webhook of its type."""
        assert shipyard.model is not None
        stage = shipyard.model.spec.stages[index]
        configs = [h.config for h in hooks if h is not None and h.config is not None]
        hooks_invalid = any(h is not None and h.config is None for h in hooks)
        for j, seq in enumerate(stage.sequences):
            for k, task in enumerate(seq.tasks):
                if task.name in BUILTIN_TASKS:
                    continue
                loc = ("spec", "stages", index, "sequences", j, "tasks", k, "name")
                event_type = task_type(task.name, "triggered")
                what = f"task {task.name!r} of sequence {stage.name}.{seq.name} for service {service!r}"
                if select_webhooks(configs, event_type).executor is not None:
                    continue  # a webhook answers it (a job action may too: both would)
                if hooks_invalid:
                    continue  # a broken webhook file may be meant to answer it; its problems are reported
                if ref is None:
                    self.add(
                        shipyard.problem(
                            loc,
                            f"{what} has no executor: none of {stage.name}:{service}/{JOB_CONFIG}, "
                            f"{stage.name}:{JOB_CONFIG}, {self.main}:{JOB_CONFIG} exists and no webhook in "
                            f"{stage.name}:{service}/{WEBHOOK_FILE}, {stage.name}:{WEBHOOK_FILE} or "
                            f"{self.main}:{WEBHOOK_FILE} has type {event_type}; expected a job config with an "
                            "action for it or a webhook of that type (built-in tasks: "
                            f"{', '.join(sorted(BUILTIN_TASKS))})",
                        )
                    )
                    continue
                if ref.config is None:
                    continue  # the job config's own problems are already reported
                matching = [a for a in ref.config.actions if name_matches(a, event_type)]
                if not matching:
                    self.add(
                        shipyard.problem(
                            loc,
                            f"{what} is not handled: no action in {ref.where()} matches {event_type}; "
                            "expected an action whose events[].name matches it",
                        )
                    )
                elif all(a.silent for a in matching):
                    self.add(
                        shipyard.problem(
                            loc,
                            f"{what} is matched only by silent actions in {ref.where()} "
                            f"({', '.join(a.name for a in matching)}); silent actions never send .finished, so the "
                            "sequence would wait forever; expected a non-silent action",
                        )
                    )

    def check_local(self, jobs: ParsedFile[JobConfig] | None) -> None:
        """Tasks a local runner would refuse (see `reconciler.core.localcommands`)."""
        if self.local_commands is None or jobs is None or jobs.model is None:
            return
        for a, action in enumerate(jobs.model.actions):
            for t, task in enumerate(action.tasks):
                loc: tuple[str | int, ...] = ("actions", a, "tasks", t)
                why = refusal(task.name, [*task.cmd, *task.args], self.local_commands)
                if why is not None:
                    self.add(jobs.problem((*loc, "cmd"), why, self.local_severity))
                for e, var in enumerate(task.env):
                    why = None if var.value_from == "secret" else env_refusal(task.name, var.name)
                    if why is not None:
                        self.add(
                            jobs.problem(
                                (*loc, "env", e, "name"),
                                why,
                                self.local_severity,
                            )
                        )

    def check_files(self, jobs: ParsedFile[JobConfig], stage: str, service: str, svc_files: set[str]) -> None:
        """Every `files` entry must name a file or directory of this service on its stage (spec 6.6)."""
        assert jobs.model is not None
        for a, action in enumerate(jobs.model.actions):
            for t, task in enumerate(action.tasks):
                for f, entry in enumerate(task.files):
                    if file_entry_problem(entry):
                        continue  # reported by the model
                    rel = entry.strip("/")
                    if rel in svc_files or any(p.startswith(rel + "/") for p in svc_files):
                        continue
                    self.add(
                        jobs.problem(
                            ("actions", a, "tasks", t, "files", f),
                            f"file entry {entry!r} of task {task.name!r} does not exist for service {service!r} "
                            f"on branch {stage!r}: no file or directory {service}/{rel}; expected a path inside "
                            "the service directory (a leading '/' is relative to it)",
                        )
                    )

    def check_remediation(
        self, remediation: ParsedFile[Remediation], ref: JobConfigRef, service: str
    ) -> None:
        """Every remediation action must reach a job action, jsonpath conditions included."""
        model = remediation.model
        assert model is not None and ref.config is not None
        stage = remediation.branch
        for i, entry in enumerate(model.spec.remediations):
            for j, action in enumerate(entry.actions_on_open or []):
                data = {
                    "action": action.payload(),
                    "problem": {"problemTitle": entry.problem_type, "rootCause": entry.problem_type},
                    "get-action": {"actionIndex": j + 1},
                }
                event = _synthetic(task_type("action", "triggered"), stage, service, data)
                if answering_action(ref.config, event) is not None:
                    continue
                self.add(
                    remediation.problem(
                        ("spec", "remediations", i, "actionsOnOpen", j, "action"),
                        f"remediation action {action.action!r} (problem type {entry.problem_type!r}) is not "
                        f"handled: no non-silent action in {ref.where()} matches sh.keptn.event.action.triggered "
                        f"with data.action.action = {action.action!r}; expected an action whose jsonpath "
                        f"(e.g. $.data.action.action) matches {action.action!r}",
                    )
                )


# --- helpers -------------------------------------------------------------------------------------


def _parse(
    model: type[M], branch: str, path: str, data: bytes, digest: str, empty: Callable[[], M] | None
) -> ParsedFile[M]:
    kind = model.__name__
    try:
        doc = load_yaml(data, path)
    except ConfigError as exc:
        return ParsedFile(branch, path, digest, None, None, tuple(exc.with_branch(branch).problems), kind)
    try:
        value = validate_doc(model, doc, empty=empty)
    except ConfigError as exc:
        return ParsedFile(branch, path, digest, data, None, tuple(exc.with_branch(branch).problems), kind)
    return ParsedFile(branch, path, digest, data, value, kind=kind)


@lru_cache(maxsize=256)
def _load_webhook(data: bytes, branch: str, path: str) -> tuple[WebhookConfig | None, tuple[Problem, ...]]:
    """A webhook config and its problems (errors, or the warnings of one that loads), by content."""
    try:
        config = load_webhook_config(data, path)
    except ConfigError as exc:
        return None, tuple(exc.with_branch(branch).problems)
    return config, tuple(w.model_copy(update={"branch": w.branch or branch}) for w in config.warnings)


def _model(parsed: ParsedFile[M] | None) -> M | None:
    return parsed.model if parsed is not None else None


def _ref(parsed: ParsedFile[JobConfig] | None) -> JobConfigRef | None:
    if parsed is None:
        return None
    return JobConfigRef(parsed.branch, parsed.path, parsed.model)


def _services(paths: Iterable[str]) -> dict[str, list[str]]:
    """Top-level directories of a stage branch, except stage-level resources and hidden ones."""
    out: dict[str, list[str]] = {}
    for path in paths:
        head, sep, rest = path.partition("/")
        if not sep or not_a_service_dir(head):
            continue
        out.setdefault(head, []).append(rest)
    return out


def _actions(model: Remediation) -> bool:
    return any(entry.actions_on_open for entry in model.spec.remediations)


def _synthetic(event_type: str, stage: str, service: str, data: dict[str, Any]) -> KeptnEvent:
    return KeptnEvent(
        id="00000000-0000-4000-8000-000000000000",
        source=VALIDATOR_SOURCE,
        type=event_type,
        time="2000-01-01T00:00:00.000Z",
        data={"stage": stage, "service": service, **data},
    )


def _percent(text: str) -> float | None:
    raw = text.strip()
    raw = raw[:-1] if raw.endswith("%") else raw
    try:
        value = float(raw)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return value


def _names(branches: Mapping[str, str]) -> str:
    return ", ".join(sorted(branches)) or "(none)"


def _actual_loc(value: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Map a location onto the keys as written (remediation keys are case-insensitive in Keptn)."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and isinstance(value, dict):
            if part not in value:
                part = next((k for k in value if isinstance(k, str) and k.lower() == part.lower()), part)
            value = value.get(part)
        elif isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            value = value[part]
        else:
            value = None
        out.append(part)
    return tuple(out)


def validate_served(
    files: UpstreamFiles,
    main_branch: str,
    previous: ValidationResult | None,
    local_commands: Sequence[str] | None = None,
) -> ValidationResult:
    """The validation admission uses: the whole upstream, plus the commit-to-deploy values files.

    `local_commands`: where jobs run locally, a task the local runner would refuse is an
    error, so a commit carrying one is rejected and the last good config keeps serving."""
    return validate_upstream(
        files, main_branch=main_branch, previous=previous, local_commands=local_commands, check_values=True
    )


class PinnedFiles:
    """An `UpstreamFiles` view with each branch pinned to one commit (the candidate being judged)."""

    def __init__(self, inner: UpstreamFiles, pins: Mapping[str, str]) -> None:
        self.inner = inner
        self.pins = dict(pins)

    def branches(self) -> dict[str, str]:
        return dict(self.pins)

    def read(self, branch: str, path: str, commit: str | None = None) -> bytes | None:
        pin = commit or self.pins.get(branch)
        return self.inner.read(branch, path, pin) if pin else None

    def list(self, branch: str, prefix: str = "", commit: str | None = None) -> list[str]:
        pin = commit or self.pins.get(branch)
        return self.inner.list(branch, prefix, pin) if pin else []

    def dirs(self, branch: str, commit: str | None = None) -> dict[str, str] | None:
        pin = commit or self.pins.get(branch)
        if not pin or not isinstance(self.inner, TreeFiles):
            return None
        return self.inner.dirs(branch, pin)

    def tree_id(self, branch: str, path: str, commit: str | None = None) -> str | None:
        pin = commit or self.pins.get(branch)
        if not pin or not isinstance(self.inner, TreeFiles):
            return None
        return self.inner.tree_id(branch, path, pin)


RESULTS_KEPT = 6
"""Validation results a `Validator` remembers (least recently used goes first)."""


class Validator:
    """`validate_served` for one upstream, remembered per set of pinned commits.

    A pinned commit's files never change, so remembering a result changes nothing but the
    time: admission judges the served pins, the proposal and each round of blame, and the
    snapshot is built from the pins it accepted, often the same pins again."""

    def __init__(
        self, files: UpstreamFiles, main_branch: str, local_commands: Sequence[str] | None = None
    ) -> None:
        self.files = files
        self.main_branch = main_branch
        self.local_commands = None if local_commands is None else list(local_commands)
        self._results: OrderedDict[frozenset[tuple[str, str]], ValidationResult] = OrderedDict()
        self._last: ValidationResult | None = None

    def validate(self, pins: Mapping[str, str]) -> ValidationResult:
        key = frozenset(pins.items())
        hit = self._results.get(key)
        if hit is None:
            hit = validate_served(
                PinnedFiles(self.files, pins), self.main_branch, self._last, self.local_commands
            )
            self._last = hit
            self._results[key] = hit
            # The newest few: one poll judges the served pins, the proposal and a few rounds of
            # blame. Each result holds its own per-service maps: kept up to 17, as before, they grew
            # ~1.3 MiB a round of the scale bench at 10,000 services (tracemalloc, rounds 3 to 8).
            while len(self._results) > RESULTS_KEPT:
                self._results.popitem(last=False)
        else:
            self._results.move_to_end(key)
        return hit
