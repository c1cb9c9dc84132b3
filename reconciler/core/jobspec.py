"""From a job/config.yaml task and a `.triggered` event to what runs, and to its Kubernetes Job.

job-executor-service (spec 6.4-6.7) turns each task of a matching action into a
Kubernetes Job: the task's image, command and args, environment values taken
from the event by JSONPath, the project/stage/service variables, files from the
service directory under `/keptn`. Building that description is pure: the runner
adapters (Kubernetes, local processes) only execute a `TaskSpec`, and
`reconciler job render` prints the same `TaskSpec` and manifest without running
anything, so what a user previews is what runs.

Event values only ever become env values or files; cmd and args keep `$(VAR)`
references that Kubernetes (or `expand` for the local runner) resolves the way
the kubelet does. Nothing here goes through a shell or a template engine. Env
values taken from the event (and every other field a sender controls: project,
stage, service, labels) are *literal*: the kubelet expands `$(VAR)` in env values
too, so an event value `$(DB_PASSWORD)` listed after a Secret-backed variable
would reach the job as the Secret's value. Literal values are escaped in the Job
manifest (`$` -> `$$`, which the kubelet turns back into `$`) and never expanded
by the local runner; only strings the job config's author wrote are expanded.

Files are read at the event's pinned `gitcommitid` (Keptn read them at the
branch's latest commit, see docs/keptn-differences.md) and delivered through a
ConfigMap mounted file by file into an `emptyDir` at `/keptn`: no init container
needs credentials for, or network access to, the upstream, and `/keptn` stays
writable for the task's own output. A ConfigMap holds at most 1 MiB, which
bounds the file set of one task.

May import: stdlib, `reconciler.formats`, `reconciler.core`, PyYAML.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from reconciler.core.jobmatching import JsonPathError, MatchedAction, evaluate, event_object
from reconciler.core.merge import deep_merge
from reconciler.formats.events import KeptnEvent
from reconciler.formats.gotime import go_float
from reconciler.formats.jobconfig import EnvVar, JobTask, file_entry_problem

KEPTN_DIR = "/keptn"
ENV_FILE_DIR = "env"
"""`as: file` values land in /keptn/env/<NAME>; the variable holds that path."""
SECRET_FILE_DIR = "secrets"
"""`as: file` secrets are mounted at /keptn/secrets/<secret>/<key>."""

MAX_CONFIGMAP_BYTES = 1024 * 1024
"""Kubernetes refuses ConfigMaps whose data exceeds 1 MiB."""
MAX_FILES = 256
"""Each file is one volume mount; a few hundred keeps the pod spec reviewable."""

MANAGED_BY = "job-executor-service"
"""Kept from job-executor-service so label selectors Keptn users wrote keep working."""

DEFAULT_LIMITS = {"cpu": "1", "memory": "512Mi"}
DEFAULT_REQUESTS = {"cpu": "50m", "memory": "128Mi"}
DEFAULT_SECURITY_CONTEXT: dict[str, Any] = {
    "privileged": False,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 2000,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""job-executor-service's chart default for job containers; a task's securityContext
is merged over it field by field."""
DEFAULT_POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsUser": 1000,
    "runAsGroup": 2000,
    "runAsNonRoot": True,
    "fsGroup": 2000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
KEPTN_VOLUME_SIZE = "20Mi"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_LABEL_BAD = re.compile(r"[^-A-Za-z0-9_.]+")


class JobSpecError(ValueError):
    """A task that cannot become a job; the message says which task and what to change."""


class JobDefaults(BaseModel):
    """Installation-level choices (from Settings) that tasks inherit or are checked against."""

    model_config = ConfigDict(frozen=True)

    namespace: str = "keptn-jobs"
    service_account: str = ""
    allowed_images: tuple[str, ...] = ()
    allow_privileged: bool = False
    limits: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_LIMITS))
    requests: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_REQUESTS))
    security_context: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SECURITY_CONTEXT))
    pod_security_context: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_POD_SECURITY_CONTEXT))
    labels: dict[str, str] = Field(default_factory=dict)
    task_deadline_seconds: int = 0
    """Installation cap on a task's run time (0: only maxPollDuration applies)."""


class SecretKeyRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    key: str


def escape_references(value: str) -> str:
    """A string the kubelet's `$(VAR)` expansion leaves exactly as it is: every `$` doubled.

    Escaping only `$(` (as `$$(`) is not enough: a value `$$(X)` would become
    `$$$(X)`, whose `$$` the kubelet reads as `$` and whose `$(X)` it then expands."""
    return value.replace("$", "$$")


class EnvEntry(BaseModel):
    """One variable of the job container: a value or a reference to a Secret key."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: str | None = None
    secret_key_ref: SecretKeyRef | None = None
    literal: bool = False
    """The value came from the event (or another field its sender controls): the job gets it
    exactly as it is, never with `$(VAR)` references expanded (see the module docstring)."""

    def manifest(self) -> dict[str, Any]:
        """The container's env entry as the kubelet will read it (literal values escaped)."""
        if self.secret_key_ref is not None:
            return {
                "name": self.name,
                "valueFrom": {
                    "secretKeyRef": {"name": self.secret_key_ref.name, "key": self.secret_key_ref.key}
                },
            }
        value = self.value or ""
        return {"name": self.name, "value": escape_references(value) if self.literal else value}

    def render(self) -> dict[str, Any]:
        if self.secret_key_ref is not None:
            return {"name": self.name, "secretKeyRef": self.secret_key_ref.model_dump()}
        if self.literal:
            return {"name": self.name, "value": self.value or "", "literal": True}
        return {"name": self.name, "value": self.value or ""}


class StagedFile(BaseModel):
    """A file placed at /keptn/<path> before the task starts."""

    model_config = ConfigDict(frozen=True)

    path: str
    """Relative to /keptn, e.g. `charts/helloservice.tgz` or `env/EVENT`."""
    source: str
    """Where it came from: an upstream path (`helloservice/charts/helloservice.tgz`) or `env:NAME`."""
    data: bytes = Field(repr=False, exclude=True)

    @property
    def size(self) -> int:
        return len(self.data)

    def render(self) -> dict[str, Any]:
        return {
            "path": f"{KEPTN_DIR}/{self.path}",
            "source": self.source,
            "bytes": self.size,
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }


class SecretMount(BaseModel):
    """All keys of a Secret: as env vars (keys unknown at build time) or as files."""

    model_config = ConfigDict(frozen=True)

    secret: str
    as_file: bool = False

    @property
    def mount_path(self) -> str:
        return f"{KEPTN_DIR}/{SECRET_FILE_DIR}/{self.secret}"


class TaskSpec(BaseModel):
    """Everything a runner needs to run one task of one action for one event."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    namespace: str
    event_id: str
    event_type: str
    context: str
    project: str
    stage: str
    service: str
    commit: str
    action_name: str
    action_index: int
    task_name: str
    task_index: int
    silent: bool = False
    image: str
    image_pull_policy: str | None = None
    cmd: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    env: list[EnvEntry] = Field(default_factory=list)
    secrets: list[SecretMount] = Field(default_factory=list)
    """Secrets whose keys were not known when building: envFrom / whole-Secret volumes."""
    files: list[StagedFile] = Field(default_factory=list)
    service_account: str = ""
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)
    security_context: dict[str, Any] = Field(default_factory=dict)
    pod_security_context: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int = 21600
    max_poll_seconds: int = 300
    active_deadline_seconds: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def is_test(self) -> bool:
        return self.event_type == "sh.keptn.event.test.triggered"

    def render(self) -> dict[str, Any]:
        """The `reconciler job render` view of this task (without the manifest)."""
        cmd, args = expand_command(self.cmd, self.args, literal_env(self.env))
        return {
            "name": self.task_name,
            "image": self.image,
            "cmd": list(self.cmd),
            "args": list(self.args),
            "expanded": {"cmd": cmd, "args": args},
            "workingDir": self.working_dir,
            "env": [e.render() for e in self.env]
            + [{"secretRef": {"name": s.secret}, "asFile": s.as_file} for s in self.secrets],
            "files": [f.render() for f in self.files],
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "maxPollDuration": self.max_poll_seconds,
            "ttlSecondsAfterFinished": self.ttl_seconds,
        }


# --- names and labels ------------------------------------------------------------------------


def job_name(event_id: str, action_index: int, task_index: int) -> str:
    """The deterministic Job name, so a restarted reconciler finds the Job it created.

    job-executor-service's scheme (first 24 characters of the event id) is kept for
    UUID ids; other ids are hashed, because any string is a valid CloudEvent id but
    not a valid Kubernetes name (and JES crashed on ids shorter than 24 characters).
    """
    head = event_id[:24].lower()
    if len(head) < 24 or not re.fullmatch(r"[a-z0-9][-a-z0-9]{23}", head):
        head = hashlib.sha256(event_id.encode()).hexdigest()[:24]
    return f"job-executor-service-job-{head}-{action_index:03d}-{task_index + 1:03d}"


def label_value(value: str) -> str:
    """A valid label value as job-executor-service makes it: each run of characters outside
    `[-A-Za-z0-9_.]` becomes one `_`, then at most 63 characters, then `-_.` trimmed from
    both ends (`--NameThat's not Compatible with k8s []{}///// a....` ->
    `NameThat_s_not_Compatible_with_k8s_a`), so `kubectl -l` selects what JES users wrote."""
    return _LABEL_BAD.sub("_", value)[:63].strip("-_.")


def config_hash(raw: bytes) -> str:
    """SHA3-224 of the config file, as job-executor-service labels its Jobs."""
    return hashlib.sha3_224(raw).hexdigest()


# --- images and security ------------------------------------------------------------------------


def _normalised_image(image: str) -> str:
    """`alpine/helm:3` -> `docker.io/alpine/helm:3`, `busybox` -> `docker.io/library/busybox`."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    if not rest:
        return f"docker.io/library/{image}"
    return f"docker.io/{image}"


def image_allowed(image: str, patterns: Sequence[str]) -> bool:
    """Allow-list check: no patterns or `*` allow all; globs match the image as written or normalised."""
    if not patterns or "*" in patterns:
        return True
    candidates = {image, _normalised_image(image)}
    return any(fnmatch.fnmatchcase(c, p) for p in patterns for c in candidates)


def forbidden_image(tasks: Sequence[JobTask], defaults: JobDefaults) -> str | None:
    """The first image of an action that is not allowed (all are checked before any job starts)."""
    for task in tasks:
        if not image_allowed(task.image, defaults.allowed_images):
            return task.image
    return None


class ForbiddenImage(JobSpecError):
    """An image off the operator's allow-list (`allowed_images`): refused before any Job starts."""


def forbidden_image_message(image: str) -> str:
    return f"Forbidden: Image {image} does not match configured image allowlist.\n"


def security_context(task: JobTask, defaults: JobDefaults) -> dict[str, Any]:
    own = task.security_context.model_dump(by_alias=True, exclude_none=True) if task.security_context else {}
    merged = deep_merge(defaults.security_context, own)
    if merged.get("privileged") and not defaults.allow_privileged:
        raise JobSpecError(
            f"task {task.name!r}: privileged containers are not allowed "
            "(set allow_privileged_jobs to run them)"
        )
    return merged


def resources(task: JobTask, defaults: JobDefaults) -> dict[str, dict[str, str]]:
    """Defaults unless the task has `resources` at all; then only what the task says (JES rule)."""
    if task.resources is None:
        return {"limits": dict(defaults.limits), "requests": dict(defaults.requests)}
    out: dict[str, dict[str, str]] = {}
    for part in ("limits", "requests"):
        quantities = getattr(task.resources, part)
        if quantities is None:
            continue
        values = {k: v for k, v in quantities.model_dump(exclude_none=True).items()}
        for kind, value in values.items():
            if not _QUANTITY.match(value):
                raise JobSpecError(
                    f"task {task.name!r}: resources.{part}.{kind} {value!r} is not a Kubernetes "
                    "quantity; expected e.g. '500m', '1', '128Mi', '1Gi'"
                )
        if values:
            out[part] = values
    return out


# --- environment -----------------------------------------------------------------------------------


def go_value(value: Any) -> str:
    """Go's `%v` of a JSON value as job-executor-service put it into an env var (spec 6.5)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return go_float(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _go_json_number(value: float) -> str:
    """A float64 as encoding/json writes it: fixed notation in [1e-6, 1e21), else exponent form."""
    if math.isnan(value) or math.isinf(value):
        raise JobSpecError(f"value {value!r} cannot be encoded as JSON")
    absval = abs(value)
    if absval != 0 and (absval < 1e-6 or absval >= 1e21):
        return re.sub(r"e-0(\d)$", r"e-\1", repr(value))
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _go_json(value: Any) -> str:
    """Compact JSON as Go's encoding/json writes it: sorted keys, HTML-safe, no spaces."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_go_json(str(k))}:{_go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return _go_json_number(value)
    if isinstance(value, int):
        return str(value)
    text = json.dumps(str(value), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def format_event_value(value: Any, as_: str) -> str:
    """`as: yaml` -> YAML; `as: json` or an object -> compact JSON; else Go `%v` (spec 6.5)."""
    if as_ == "yaml":
        return yaml.safe_dump(value, default_flow_style=False, sort_keys=True, allow_unicode=True)
    if as_ == "json" or isinstance(value, dict):
        return _go_json(value)
    return go_value(value)


def _label_env_name(key: str) -> str:
    return "LABELS_" + re.sub(r"[^A-Z0-9_]", "_", key.upper())


def go_duration(seconds: float) -> str:
    """Go's `time.Duration.String()`: `5m0s`, `1h0m0s`, `3s`, `1.5s` (used in timeout messages)."""
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec = go_float(round(secs, 9))
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec}s"
    if minutes:
        return f"{int(minutes)}m{sec}s"
    return f"{sec}s"


def timeout_message(job: str, seconds: float) -> str:
    return f"polling for job {job} timing out after {go_duration(seconds)}: max poll count reached for job"


def literal_env(env: Sequence[EnvEntry]) -> dict[str, str]:
    """Values of the non-Secret variables as the container gets them: the kubelet's `$(VAR)`
    expansion in definition order for the job config's own strings, event values as they are."""
    resolved: dict[str, str] = {}
    for entry in env:
        if entry.secret_key_ref is not None:
            continue
        value = entry.value or ""
        resolved[entry.name] = value if entry.literal else expand(value, resolved)
    return resolved


# --- $(VAR) expansion ---------------------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names are replaced, unknown ones stay verbatim,
    `$$` is a literal `$` (so `$$(VAR)` yields `$(VAR)`), a lone `$` or an unclosed `$(` stays."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(env.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def expand_command(
    cmd: Sequence[str], args: Sequence[str], env: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    return [expand(c, env) for c in cmd], [expand(a, env) for a in args]


# --- files ----------------------------------------------------------------------------------------------


def file_sources(task: JobTask, service: str, listing: Sequence[str]) -> list[tuple[str, str]]:
    """(upstream path, path under /keptn) for each file the task asks for (spec 6.6).

    An entry names a file of the service directory, or a directory whose files are
    all taken; nothing outside `<service>/` is reachable.
    """
    prefix = f"{service}/"
    available = sorted({p for p in listing if p.startswith(prefix)})
    out: dict[str, str] = {}
    for entry in task.files:
        problem = file_entry_problem(entry)
        if problem:
            raise JobSpecError(f"task {task.name!r}: {problem}")
        rel = entry.strip("/")
        exact = prefix + rel
        if exact in available:
            out[exact] = rel
            continue
        found = [p for p in available if p.startswith(exact + "/")]
        if not found:
            raise JobSpecError(f"could not find file or directory {entry} for task {task.name}")
        for path in found:
            out[path] = path[len(prefix) :]
    if len(out) > MAX_FILES:
        raise JobSpecError(
            f"task {task.name!r} asks for {len(out)} files; at most {MAX_FILES} can be staged under {KEPTN_DIR}"
        )
    return sorted(out.items(), key=lambda item: item[1])


def _check_size(task: JobTask, files: Sequence[StagedFile]) -> None:
    total = sum(f.size for f in files)
    if total > MAX_CONFIGMAP_BYTES:
        biggest = max(files, key=lambda f: f.size)
        raise JobSpecError(
            f"task {task.name!r}: its files are {total} bytes, more than the {MAX_CONFIGMAP_BYTES} bytes "
            f"(1 MiB) a ConfigMap can carry to the job (largest: {biggest.source}, {biggest.size} bytes); "
            "stage fewer files or fetch large ones from inside the task"
        )


# --- the task spec -------------------------------------------------------------------------------------------


def _name_check(value: str, what: str, task: str, pattern: re.Pattern[str], limit: int) -> str:
    if not pattern.match(value) or len(value) > limit:
        raise JobSpecError(
            f"task {task!r}: {what} {value!r} is not a valid Kubernetes name "
            f"(lower-case letters, digits and '-', at most {limit} characters)"
        )
    return value


def _user_env(
    task: JobTask,
    job: str,
    obj: dict[str, Any],
    secret_keys: Mapping[str, Sequence[str]],
    namespace: str,
) -> tuple[list[EnvEntry], list[StagedFile], list[SecretMount]]:
    env: list[EnvEntry] = []
    files: list[StagedFile] = []
    secrets: list[SecretMount] = []
    for var in task.env:
        as_file = var.as_ == "file"
        if var.value_from == "secret":
            keys = secret_keys.get(var.name)
            mount = SecretMount(secret=var.name, as_file=as_file)
            if as_file:
                secrets.append(mount)
            if keys is None:
                if not as_file:
                    secrets.append(mount)
                continue
            for key in sorted(keys):
                if not _ENV_NAME.match(key):
                    raise JobSpecError(
                        f"Error while creating job: could not prepare env for job {job}: key {key!r} of "
                        f"secret {var.name!r} in namespace {namespace!r} is not a valid environment "
                        "variable name"
                    )
                if as_file:
                    env.append(EnvEntry(name=key, value=f"{mount.mount_path}/{key}"))
                else:
                    env.append(EnvEntry(name=key, secret_key_ref=SecretKeyRef(name=var.name, key=key)))
            continue
        value = _env_value(var, job, obj)
        if as_file:
            rel = f"{ENV_FILE_DIR}/{var.name}"
            files.append(StagedFile(path=rel, source=f"env:{var.name}", data=value.encode()))
            env.append(EnvEntry(name=var.name, value=f"{KEPTN_DIR}/{rel}"))
        else:
            env.append(EnvEntry(name=var.name, value=value, literal=var.value_from == "event"))
    return env, files, secrets


def _env_value(var: EnvVar, job: str, obj: dict[str, Any]) -> str:
    if var.value_from == "string":
        return var.value
    try:
        found = evaluate(var.value, obj)
    except JsonPathError as exc:
        raise JobSpecError(
            f"Error while creating job: could not prepare env for job {job}: could not add env with "
            f"name '{var.name}', value '{var.value}', valueFrom 'event': {exc}"
        ) from None
    return format_event_value(found, var.as_)


def _standard_env(event: KeptnEvent) -> list[EnvEntry]:
    env = [
        EnvEntry(name="KEPTN_PROJECT", value=event.project, literal=True),
        EnvEntry(name="KEPTN_STAGE", value=event.stage, literal=True),
        EnvEntry(name="KEPTN_SERVICE", value=event.service, literal=True),
    ]
    labels = event.data.get("labels")
    if isinstance(labels, dict):
        for key in sorted(labels):
            env.append(EnvEntry(name=_label_env_name(str(key)), value=go_value(labels[key]), literal=True))
    return env


def _last_wins(env: Sequence[EnvEntry]) -> list[EnvEntry]:
    """Drop earlier definitions of a name; the kubelet lets the last one win anyway."""
    last = {e.name: i for i, e in enumerate(env)}
    return [e for i, e in enumerate(env) if last[e.name] == i]


def build_task_spec(
    *,
    event: KeptnEvent,
    matched: MatchedAction,
    task_index: int,
    defaults: JobDefaults,
    file_data: Mapping[str, bytes],
    secret_keys: Mapping[str, Sequence[str]] | None = None,
    raw_config: bytes = b"",
) -> TaskSpec:
    """The TaskSpec of `matched.action.tasks[task_index]` for `event`.

    `file_data` maps upstream paths (from `file_sources`) to their bytes at the
    pinned commit; `secret_keys` maps Secret names to their keys when the runner
    could list them (then each key becomes a secretKeyRef, as in JES), otherwise
    the whole Secret is referenced (`envFrom`).
    """
    action = matched.action
    task = action.tasks[task_index]
    name = job_name(event.id, matched.index, task_index)
    namespace = _name_check(task.namespace or defaults.namespace, "namespace", task.name, _DNS_LABEL, 63)
    account = task.service_account if task.service_account is not None else defaults.service_account
    if account:
        _name_check(account, "serviceAccount", task.name, _DNS_SUBDOMAIN, 253)
    if task.image_pull_policy is not None and task.image_pull_policy not in _PULL_POLICIES:
        raise JobSpecError(
            f"task {task.name!r}: imagePullPolicy {task.image_pull_policy!r} is not one of "
            + ", ".join(_PULL_POLICIES)
        )
    obj = event_object(event)
    env, env_files, secrets = _user_env(task, name, obj, secret_keys or {}, namespace)
    env = _last_wins(env + _standard_env(event))

    staged = _staged_files(task, event.service, file_data, env_files)

    deadline = task.effective_max_poll
    if defaults.task_deadline_seconds > 0:
        deadline = min(deadline, defaults.task_deadline_seconds)
    return TaskSpec(
        job_name=name,
        namespace=namespace,
        event_id=event.id,
        event_type=event.type,
        context=event.shkeptncontext,
        project=event.project,
        stage=event.stage,
        service=event.service,
        commit=event.gitcommitid or "",
        action_name=action.name,
        action_index=matched.index,
        task_name=task.name,
        task_index=task_index,
        silent=action.silent,
        image=task.image,
        image_pull_policy=task.image_pull_policy,
        cmd=list(task.cmd),
        args=list(task.args),
        working_dir=task.working_dir,
        env=env,
        secrets=secrets,
        files=staged,
        service_account=account,
        resources=resources(task, defaults),
        security_context=security_context(task, defaults),
        pod_security_context=dict(defaults.pod_security_context),
        ttl_seconds=task.effective_ttl,
        max_poll_seconds=task.effective_max_poll,
        active_deadline_seconds=deadline,
        annotations=dict(task.annotations or {}),
        labels=_job_labels(event, matched, task_index, defaults, raw_config),
    )


def _staged_files(
    task: JobTask, service: str, file_data: Mapping[str, bytes], env_files: Sequence[StagedFile]
) -> list[StagedFile]:
    """The task's `files` (from the service directory) and its env-as-file entries, which may
    not overwrite one another, within the size limit."""
    staged = [
        StagedFile(path=rel, source=source, data=file_data[source])
        for source, rel in file_sources(task, service, list(file_data))
    ]
    taken = {f.path for f in staged}
    for extra in env_files:
        if extra.path in taken:
            raise JobSpecError(
                f"task {task.name!r}: env {extra.source[4:]!r} as file would overwrite "
                f"{KEPTN_DIR}/{extra.path} from the service directory"
            )
    staged.extend(env_files)
    _check_size(task, staged)
    return staged


def _job_labels(
    event: KeptnEvent, matched: MatchedAction, task_index: int, defaults: JobDefaults, raw_config: bytes
) -> dict[str, str]:
    """JES's labels plus project, stage and service (keptn-differences J17)."""
    action = matched.action
    task = action.tasks[task_index]
    return {
        **{k: label_value(v) for k, v in defaults.labels.items()},
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "keptn.sh/project": label_value(event.project),
        "keptn.sh/stage": label_value(event.stage),
        "keptn.sh/service": label_value(event.service),
        "keptn.sh/context": label_value(event.shkeptncontext),
        "keptn.sh/event-id": label_value(event.id),
        "keptn.sh/commitid": label_value(event.gitcommitid or ""),
        "keptn.sh/jes-action": label_value(action.name),
        "keptn.sh/jes-task": label_value(task.name),
        "keptn.sh/jes-job-confighash": config_hash(raw_config),
        "keptn.sh/jes-action-index": str(matched.index),
        "keptn.sh/jes-task-index": str(task_index),
    }


SecretKeys = Callable[[str, str], Sequence[str] | None]
"""(namespace, Secret name) -> its keys, None when they cannot be listed; raises JobSpecError when
the Secret does not exist (the runner's `secret_keys`)."""


def _secret_keys_of(
    task: JobTask, namespace: str, lookup: SecretKeys | Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if lookup is None:
        return out
    for var in task.env:
        if var.value_from != "secret":
            continue
        keys = lookup(namespace, var.name) if callable(lookup) else lookup.get(var.name)
        if keys is not None:
            out[var.name] = list(keys)
    return out


def build_action_specs(
    *,
    event: KeptnEvent,
    matched: MatchedAction,
    defaults: JobDefaults,
    read: Callable[[str], bytes | None],
    listing: Sequence[str] | Callable[[], Sequence[str]],
    secret_keys: SecretKeys | Mapping[str, Sequence[str]] | None = None,
    raw_config: bytes = b"",
) -> list[TaskSpec]:
    """Specs of every task of an action, after the image allow-list check for all of them.

    The one builder: the job executor runs what it returns and `reconciler job render`
    prints it, so a preview cannot drift from a run. `read` and `listing` give the
    service directory at the pinned commit (`listing` may be a callable, called once and
    only when a task has files); `secret_keys` lists a Secret's keys, as the runner's
    `secret_keys(namespace, secret)` or a fixed mapping (render's `--secret-keys`).
    These are the only inputs from outside, so callers decide where they come from.
    """
    image = forbidden_image(matched.action.tasks, defaults)
    if image is not None:
        raise ForbiddenImage(forbidden_image_message(image))
    listed: list[str] | None = None
    specs = []
    for index, task in enumerate(matched.action.tasks):
        data: dict[str, bytes] = {}
        if task.files:
            if listed is None:
                listed = list(listing() if callable(listing) else listing)
            for source, _ in file_sources(task, event.service, listed):
                content = read(source)
                if content is None:
                    raise JobSpecError(f"could not find file or directory {source} for task {task.name}")
                data[source] = content
        namespace = task.namespace or defaults.namespace
        specs.append(
            build_task_spec(
                event=event,
                matched=matched,
                task_index=index,
                defaults=defaults,
                file_data=data,
                secret_keys=_secret_keys_of(task, namespace, secret_keys),
                raw_config=raw_config,
            )
        )
    return specs


# --- Kubernetes objects -----------------------------------------------------------------------------------------


def _file_key(index: int) -> str:
    return f"f{index:03d}"


def files_configmap(spec: TaskSpec) -> dict[str, Any] | None:
    """The ConfigMap carrying the task's files (None when it has none); named like the Job."""
    if not spec.files:
        return None
    text: dict[str, str] = {}
    binary: dict[str, str] = {}
    for index, staged in enumerate(spec.files):
        try:
            text[_file_key(index)] = staged.data.decode("utf-8")
        except UnicodeDecodeError:
            binary[_file_key(index)] = base64.b64encode(staged.data).decode("ascii")
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": spec.job_name, "namespace": spec.namespace, "labels": dict(spec.labels)},
        "immutable": True,
    }
    if text:
        body["data"] = text
    if binary:
        body["binaryData"] = binary
    return body


def job_manifest(spec: TaskSpec) -> dict[str, Any]:
    """The batch/v1 Job for a task: no retries, never restarted, cleaned up by TTL."""
    mounts: list[dict[str, Any]] = [{"name": "keptn", "mountPath": KEPTN_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "keptn", "emptyDir": {"sizeLimit": KEPTN_VOLUME_SIZE}}]
    if spec.files:
        volumes.append({"name": "files", "configMap": {"name": spec.job_name}})
        for index, staged in enumerate(spec.files):
            mounts.append(
                {
                    "name": "files",
                    "mountPath": f"{KEPTN_DIR}/{staged.path}",
                    "subPath": _file_key(index),
                    "readOnly": True,
                }
            )
    env_from: list[dict[str, Any]] = []
    for index, secret in enumerate(spec.secrets):
        if secret.as_file:
            volumes.append({"name": f"secret-{index}", "secret": {"secretName": secret.secret}})
            mounts.append({"name": f"secret-{index}", "mountPath": secret.mount_path, "readOnly": True})
        else:
            env_from.append({"secretRef": {"name": secret.secret}})
    container: dict[str, Any] = {"name": "job", "image": spec.image}
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.cmd:
        container["command"] = list(spec.cmd)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    if env_from:
        container["envFrom"] = env_from
    container["env"] = [e.manifest() for e in spec.env]
    if spec.resources:
        container["resources"] = {k: dict(v) for k, v in spec.resources.items()}
    if spec.security_context:
        container["securityContext"] = spec.security_context
    container["volumeMounts"] = mounts
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "volumes": volumes}
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    if spec.pod_security_context:
        pod["securityContext"] = spec.pod_security_context
    template_meta: dict[str, Any] = {"labels": dict(spec.labels)}
    if spec.annotations:
        template_meta["annotations"] = dict(spec.annotations)
    metadata: dict[str, Any] = {
        "name": spec.job_name,
        "namespace": spec.namespace,
        "labels": dict(spec.labels),
    }
    if spec.annotations:
        metadata["annotations"] = dict(spec.annotations)
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": spec.ttl_seconds,
        "template": {"metadata": template_meta, "spec": pod},
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
