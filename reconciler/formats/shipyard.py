"""`shipyard.yaml` (spec.keptn.sh/0.2.0 to 0.2.4): stages, their sequences and tasks.

Keptn parsed shipyards leniently and failed only when a sequence ran; we keep the
lenient field handling (unknown keys are ignored, as Keptn users' files carry
them) but check names, durations and the apiVersion up front.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.formats.gotime import parse_go_duration
from reconciler.formats.yamldoc import parse_model

API_PREFIX = "spec.keptn.sh/"
SUPPORTED_API_VERSIONS = "spec.keptn.sh/0.2.0 to spec.keptn.sh/0.2.4"
_SUPPORTED_API = re.compile(re.escape(API_PREFIX) + r"v?0\.2(?:\.[0-4])?")
"""The shipyard versions Keptn 1.x's files use. Keptn's own check was `>= 0.2`, written while
newer versions might still come; Keptn 1 reached its end of life (December 2023) at 0.2.4."""
STAGE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SELECTOR_VALUES = ("pass", "warning", "fail")

# Tasks the reconciler answers itself; every other task needs a job action.
BUILTIN_TASKS = frozenset({"approval", "evaluation", "get-action"})


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Selector(_Lenient):
    match: dict[str, str] | None = None

    @field_validator("match", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): (v if not isinstance(v, bool | int | float) else str(v)) for k, v in value.items()
            }
        return value


class Trigger(_Lenient):
    event: str
    selector: Selector | None = None

    @field_validator("event")
    @classmethod
    def _event_shape(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 3 or parts[2] != "finished" or not all(parts):
            raise ValueError(f"invalid triggeredOn event {value!r}; expected '<stage>.<sequence>.finished'")
        return value

    @property
    def source_stage(self) -> str:
        return self.event.split(".")[0]

    @property
    def source_sequence(self) -> str:
        return self.event.split(".")[1]


class Task(_Lenient):
    name: str
    triggered_after: str | None = Field(default=None, alias="triggeredAfter")
    properties: dict[str, Any] | None = None
    # Our extension (Keptn has one global 10 minute wait and no run deadline): per-task
    # deadlines as Go durations; documented in docs/keptn-differences.md.
    start_deadline: str | None = Field(default=None, alias="startDeadline")
    run_deadline: str | None = Field(default=None, alias="runDeadline")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TASK_NAME.match(value) or "." in value:
            raise ValueError(f"invalid task name {value!r}; expected letters, digits, '-' or '_' (no '.')")
        return value

    @field_validator("triggered_after", "start_deadline", "run_deadline")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_go_duration(str(value))
        return value


class Sequence(_Lenient):
    name: str
    triggered_on: list[Trigger] | None = Field(default=None, alias="triggeredOn")
    tasks: list[Task] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TASK_NAME.match(value) or "." in value:
            raise ValueError(
                f"invalid sequence name {value!r}; expected letters, digits, '-' or '_' (no '.')"
            )
        return value

    @field_validator("tasks", mode="before")
    @classmethod
    def _null_tasks(cls, value: Any) -> Any:
        return [] if value is None else value


class Stage(_Lenient):
    name: str
    sequences: list[Sequence] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not STAGE_NAME.match(value):
            raise ValueError(f"invalid stage name {value!r}; expected a lower-case letter, then [a-z0-9-]")
        return value

    @field_validator("sequences", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("sequences")
    @classmethod
    def _unique_sequences(cls, value: list[Sequence]) -> list[Sequence]:
        # A field validator (not a model validator) so the problem points at this stage's sequences.
        names: set[str] = set()
        for seq in value:
            if seq.name in names:
                raise ValueError(f"sequence {seq.name!r} is defined twice in this stage")
            names.add(seq.name)
        return value

    def sequence(self, name: str) -> Sequence | None:
        for seq in self.sequences:
            if seq.name == name:
                return seq
        if name == "evaluation":  # spec 2.1: built-in evaluation sequence
            return Sequence(name="evaluation", tasks=[Task(name="evaluation")])
        return None


class ShipyardSpec(_Lenient):
    stages: list[Stage]

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, value: list[Stage]) -> list[Stage]:
        seen: set[str] = set()
        for stage in value:
            if stage.name in seen:
                raise ValueError(f"stage {stage.name!r} is defined twice")
            seen.add(stage.name)
        return value


class Metadata(_Lenient):
    name: str | None = None


class Shipyard(_Lenient):
    api_version: str = Field(alias="apiVersion")
    kind: str | None = "Shipyard"
    metadata: Metadata | None = None
    spec: ShipyardSpec

    @field_validator("api_version")
    @classmethod
    def _api(cls, value: str) -> str:
        """Only the versions Keptn 1.x published: fields are read leniently (unknown keys are
        ignored, as Keptn did), so a format we have never seen would lose its new fields
        without a word; refusing it says so instead (docs/keptn-differences.md, V10)."""
        if not _SUPPORTED_API.fullmatch(value):
            raise ValueError(f"unsupported apiVersion {value!r}; expected {SUPPORTED_API_VERSIONS}")
        return value

    @property
    def project(self) -> str:
        return self.metadata.name if self.metadata and self.metadata.name else ""

    def stage(self, name: str) -> Stage | None:
        for stage in self.spec.stages:
            if stage.name == name:
                return stage
        return None

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.spec.stages]


def load_shipyard(data: bytes | str, file: str = "shipyard.yaml") -> Shipyard:
    return parse_model(Shipyard, data, file)
