"""`<service>/job/config.yaml` (job-executor-service apiVersion v2).

job-executor-service parsed this file strictly (an unknown key made the whole file
unusable), so we do too, but report every unknown key with its line instead of
failing later at run time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.formats import goregex
from reconciler.formats.yamldoc import parse_model

DEFAULT_MAX_POLL_SECONDS = 300
DEFAULT_TTL_SECONDS = 21600
MIN_TTL_SECONDS = 60
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


MAX_JSONPATH_DESCENTS = 1
"""Recursive descents (`..`) per JSONPath. Each one multiplies the work by the event's size:
`$..*..*..*` over a 200-level event of 1.4 KB took 10 s, one more `..` minutes."""


def jsonpath_problem(expr: str) -> str | None:
    """Why a JSONPath could explode on a hostile event, or None."""
    descents = expr.count("..")
    if descents > MAX_JSONPATH_DESCENTS:
        return (
            f"JSONPath {expr!r} has {descents} recursive descents ('..'); expected at most "
            f"{MAX_JSONPATH_DESCENTS} (each one multiplies the work by the size of the event)"
        )
    return None


def _bounded_jsonpath(expr: str) -> str:
    problem = jsonpath_problem(expr)
    if problem:
        raise ValueError(problem)
    return expr


class JsonPathMatch(_Strict):
    property: Annotated[str, AfterValidator(_bounded_jsonpath)] = ""
    match: str = ""


class EventMatcher(_Strict):
    name: str
    jsonpath: JsonPathMatch | None = None

    @field_validator("name")
    @classmethod
    def _regex(cls, value: str) -> str:
        # JES uses Go's RE2; an invalid expression never matches there. We reject it up front.
        try:
            goregex.compile_pattern(value)
        except goregex.PatternError as exc:
            raise ValueError(f"event name {value!r}: {exc}") from None
        return value


class EnvVar(_Strict):
    name: str
    value: str = ""
    value_from: Literal["event", "secret", "string"] = Field(alias="valueFrom")
    # Keptn: json | yaml | (default %v). Ours adds `env` (the default, spelled out) and
    # `file` (the value is written to a file under /keptn/env and the variable holds its path).
    as_: Literal["", "string", "json", "yaml", "env", "file"] = Field(default="", alias="as")

    @field_validator("value", mode="before")
    @classmethod
    def _str(cls, value: Any) -> Any:
        if isinstance(value, bool | int | float):
            return str(value).lower() if isinstance(value, bool) else str(value)
        return "" if value is None else value

    @model_validator(mode="after")
    def _checks(self) -> EnvVar:
        if self.value_from != "secret" and not ENV_NAME.match(self.name):
            raise ValueError(f"env name {self.name!r} is not a valid environment variable name")
        if self.value_from == "event" and not self.value.startswith("$"):
            raise ValueError(
                f"env {self.name!r}: valueFrom event needs a JSONPath starting with '$' in value"
            )
        if self.value_from == "event" and (problem := jsonpath_problem(self.value)):
            raise ValueError(f"env {self.name!r}: {problem}")
        return self


class Quantities(_Strict):
    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _str(cls, value: Any) -> Any:
        return None if value is None else str(value)


class Resources(_Strict):
    limits: Quantities | None = None
    requests: Quantities | None = None


class Capabilities(_Strict):
    add: list[str] | None = None
    drop: list[str] | None = None


class SeccompProfile(_Strict):
    type: str
    localhost_profile: str | None = Field(default=None, alias="localhostProfile")


class SecurityContext(_Strict):
    run_as_user: int | None = Field(default=None, alias="runAsUser")
    run_as_group: int | None = Field(default=None, alias="runAsGroup")
    run_as_non_root: bool | None = Field(default=None, alias="runAsNonRoot")
    read_only_root_filesystem: bool | None = Field(default=None, alias="readOnlyRootFilesystem")
    privileged: bool | None = None
    allow_privilege_escalation: bool | None = Field(default=None, alias="allowPrivilegeEscalation")
    capabilities: Capabilities | None = None
    proc_mount: str | None = Field(default=None, alias="procMount")
    seccomp_profile: SeccompProfile | None = Field(default=None, alias="seccompProfile")


def _file_entry(entry: str) -> str:
    problem = file_entry_problem(entry)
    if problem:
        raise ValueError(problem)
    return entry


FileEntry = Annotated[str, AfterValidator(_file_entry)]
"""A `files` entry, checked one by one so a problem names the entry's index and line."""


class JobTask(_Strict):
    name: str
    files: list[FileEntry] = Field(default_factory=list)
    image: str
    image_pull_policy: str | None = Field(default=None, alias="imagePullPolicy")
    cmd: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[EnvVar] = Field(default_factory=list)
    resources: Resources | None = None
    working_dir: str | None = Field(default=None, alias="workingDir")
    max_poll_duration: int | None = Field(default=None, alias="maxPollDuration", ge=1)
    namespace: str | None = None
    ttl_seconds_after_finished: int | None = Field(default=None, alias="ttlSecondsAfterFinished", ge=0)
    security_context: SecurityContext | None = Field(default=None, alias="securityContext")
    service_account: str | None = Field(default=None, alias="serviceAccount")
    annotations: dict[str, str] | None = None

    @field_validator("files", "cmd", "args", "env", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("cmd", "args", mode="before")
    @classmethod
    def _strs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [
                str(v).lower() if isinstance(v, bool) else (str(v) if isinstance(v, int | float) else v)
                for v in value
            ]
        return value

    @property
    def effective_ttl(self) -> int:
        ttl = (
            DEFAULT_TTL_SECONDS
            if self.ttl_seconds_after_finished is None
            else self.ttl_seconds_after_finished
        )
        return max(ttl, MIN_TTL_SECONDS)

    @property
    def effective_max_poll(self) -> int:
        return self.max_poll_duration or DEFAULT_MAX_POLL_SECONDS


def file_entry_problem(entry: str) -> str | None:
    """Why a `files` entry would escape the service directory, or None when it stays inside."""
    if not isinstance(entry, str) or not entry.strip("/"):
        return f"file entry {entry!r} is empty; expected a path inside the service directory"
    if "\\" in entry or "\x00" in entry:
        return f"file entry {entry!r} contains a backslash or NUL; expected a plain relative path"
    parts = entry.strip("/").split("/")
    if any(p in ("..", ".") for p in parts):
        return f"file entry {entry!r} leaves the service directory; '..' and '.' are not allowed"
    return None


class JobAction(_Strict):
    name: str
    events: list[EventMatcher]
    tasks: list[JobTask]
    silent: bool = False

    @model_validator(mode="after")
    def _unique(self) -> JobAction:
        names = [t.name for t in self.tasks]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"task name {sorted(dup)[0]!r} is used twice in action {self.name!r}")
        if not self.tasks:
            raise ValueError(f"action {self.name!r} has no tasks")
        if not self.events:
            raise ValueError(f"action {self.name!r} has no events")
        return self


class JobConfig(_Strict):
    api_version: str = Field(alias="apiVersion")
    actions: list[JobAction] = Field(default_factory=list)

    @field_validator("api_version", mode="before")
    @classmethod
    def _api(cls, value: Any) -> Any:
        if value in (None, ""):
            raise ValueError("apiVersion must be specified")
        if value != "v2":
            raise ValueError(f"apiVersion {value} is not supported, use v2")
        return value

    @field_validator("actions", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _unique(self) -> JobConfig:
        names = [a.name for a in self.actions]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"action name {sorted(dup)[0]!r} is used twice")
        return self


def load_jobconfig(data: bytes | str, file: str = "job/config.yaml") -> JobConfig:
    return parse_model(JobConfig, data, file)
