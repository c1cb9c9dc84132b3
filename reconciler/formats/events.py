"""Keptn CloudEvents: the envelope, the type grammar and the common data block.

Every event the reconciler receives, emits or records is a `KeptnEvent`. The
envelope follows CloudEvents 1.0 with Keptn's extension attributes
(`shkeptncontext`, `triggeredid`, `gitcommitid`, `shkeptnspecversion`); the data
block stays a plain dict because executors add task payloads under arbitrary keys
(Keptn's merge rules need the raw JSON), while `CommonData` gives typed access to
the fields every event shares.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reconciler.formats.gotime import forget_parsed_timestamps, parse_timestamp

KEPTN_PREFIX = "sh.keptn.event."
SPEC_VERSION = "0.2.4"
MAX_EVENT_BYTES = 512 * 1024
"""Largest event we accept from any ingress; Keptn's optional limit was 64 KB, but
an evaluation.finished with sloFileContent and many SLIs can exceed that."""

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
MAX_EVENT_DEPTH = 64
"""Deepest nesting of objects and arrays we accept in an event. Keptn's payloads nest a few
levels; an event nested ~200 levels deep was written to the ledger but could not be read
back (pydantic's JSON parser stops at its recursion limit), which stopped the reconciler."""


class Result(StrEnum):
    PASS = "pass"
    WARNING = "warning"
    FAIL = "fail"


class Status(StrEnum):
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    ABORTED = "aborted"
    UNKNOWN = "unknown"


class Kind(StrEnum):
    TRIGGERED = "triggered"
    STARTED = "started"
    FINISHED = "finished"
    CHANGED = "changed"  # `<task>.status.changed` parses as a 6-part type (spec 1.2)
    INVALIDATED = "invalidated"


@dataclass(frozen=True)
class EventType:
    """A parsed Keptn event type.

    Five parts make a task event (`sh.keptn.event.<task>.<kind>`), six a sequence
    event (`sh.keptn.event.<stage>.<sequence>.<kind>`), exactly as Keptn splits them.
    """

    kind: str
    task: str | None = None
    stage: str | None = None
    sequence: str | None = None

    @property
    def is_task(self) -> bool:
        return self.task is not None

    @property
    def is_sequence(self) -> bool:
        return self.sequence is not None

    @staticmethod
    def parse(type_: str) -> EventType | None:
        return _parse_type(type_)


@lru_cache(maxsize=1024)
def _parse_type(type_: str) -> EventType | None:
    """Remembered (an `EventType` is frozen): the loop asks `etype` of the same few types
    tens of thousands of times a round."""
    if not type_.startswith(KEPTN_PREFIX):
        return None
    parts = type_.split(".")
    if any(not p for p in parts):
        return None
    if len(parts) == 5:
        return EventType(kind=parts[4], task=parts[3])
    if len(parts) == 6:
        return EventType(kind=parts[5], stage=parts[3], sequence=parts[4])
    return None


def forget_parsed() -> None:
    """Empty the memos of parsed event types and timestamps. Filled by a bulk read (a replay
    decodes every event), they keep its last 1,024 timestamp strings and datetimes alive, each
    in a different memory pool among the read's freed temporaries, so those pools and their
    arenas could not go back to the system when the read's memory is trimmed."""
    _parse_type.cache_clear()
    forget_parsed_timestamps()


def task_type(task: str, kind: str) -> str:
    return f"{KEPTN_PREFIX}{task}.{kind}"


def sequence_type(stage: str, sequence: str, kind: str) -> str:
    return f"{KEPTN_PREFIX}{stage}.{sequence}.{kind}"


def format_time(ts: datetime) -> str:
    """Keptn's wire format: milliseconds and a literal Z."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def context_from_string(value: str) -> str:
    """Keptn API's shkeptncontext rule: a UUID stays, any other non-empty string maps
    deterministically (an empty one gets a new context from the caller, see `admission.stamp`)."""
    if not value:
        raise ValueError("an empty shkeptncontext has no mapping; the caller gives a new one")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raw = value.ljust(16).encode()[:16]
        return str(uuid.UUID(bytes=raw, version=4))


def derived_id(*parts: str) -> str:
    """A deterministic event id, so re-emitting a decision after a crash dedups in the ledger."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "reconciler:" + "/".join(parts)))


class KeptnEvent(BaseModel):
    """CloudEvents 1.0 envelope with Keptn's extensions. Unknown extensions are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1, max_length=512)
    time: str
    """RFC 3339; required: the caller says when (a time is an argument, never read here)."""
    datacontenttype: str = "application/json"
    shkeptncontext: str = ""
    triggeredid: str | None = None
    gitcommitid: str | None = None
    shkeptnspecversion: str = SPEC_VERSION
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _keptn_type(cls, value: str) -> str:
        if value.startswith(KEPTN_PREFIX) and EventType.parse(value) is None:
            raise ValueError(
                f"invalid Keptn event type {value!r}; expected sh.keptn.event.<task>.<kind> "
                "or sh.keptn.event.<stage>.<sequence>.<kind> with non-empty parts"
            )
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_timestamp(value)
        return value

    @property
    def etype(self) -> EventType | None:
        return EventType.parse(self.type)

    @property
    def project(self) -> str:
        return str(self.data.get("project") or "")

    @property
    def stage(self) -> str:
        return str(self.data.get("stage") or "")

    @property
    def service(self) -> str:
        return str(self.data.get("service") or "")

    @property
    def result(self) -> str:
        return str(self.data.get("result") or "")

    @property
    def status(self) -> str:
        return str(self.data.get("status") or "")

    @property
    def timestamp(self) -> datetime:
        return parse_timestamp(self.time)

    def to_json(self) -> str:
        """Canonical JSON: the exact bytes stored in the ledger."""
        return json.dumps(
            self.model_dump(mode="json", exclude_none=True),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> KeptnEvent:
        return cls.model_validate_json(text)


class IncomingEvent(KeptnEvent):
    """An event as it arrives from outside, before Keptn API's stamping gives it an id and a
    time (`core.admission.stamp`): both may be missing here, and only here."""

    id: str = Field(default="", max_length=256)
    time: str = ""

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        if value:
            parse_timestamp(value)
        return value

    def stamped(self, *, id_: str, time: str, **update: Any) -> KeptnEvent:
        """The recorded event: this one with its id and time (and any `update`) set."""
        fields = {**self.model_dump(), **update, "id": id_, "time": time}
        return KeptnEvent.model_validate(fields)


class CommonData(BaseModel):
    """Fields every Keptn event's data may carry (spec 1.3)."""

    model_config = ConfigDict(extra="allow")

    project: str = ""
    stage: str = ""
    service: str = ""
    labels: dict[str, str] | None = None
    status: str = ""
    result: str = ""
    message: str = ""


def common_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The common part of a data block, as Keptn's responders copy it."""
    out: dict[str, Any] = {}
    for key in ("project", "stage", "service", "labels", "status", "result", "message"):
        if key in data and data[key] is not None:
            out[key] = data[key]
    return out


class EventError(ValueError):
    """An event that cannot be accepted; the message says which field and why."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def load_json(raw: str | bytes) -> Any:
    """Strict JSON from outside: no NaN/Infinity (not JSON; they would be stored as null).

    Raises ValueError for anything that is not JSON, including numbers too long to
    convert and nesting beyond the parser's recursion limit.
    """
    try:
        obj = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    _check_unicode(obj)
    return obj


def _check_unicode(obj: Any) -> None:
    """JSON's `\\ud800` escapes decode to lone surrogates, which no UTF-8 file, log or terminal takes."""
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"a string holds an unpaired surrogate (U+{ord(value[exc.start]):04X}); expected valid Unicode"
                ) from None


def load_event_json(raw: str | bytes, *, origin: str = "event") -> Any:
    """The JSON of an incoming event, bounded in size; every problem is an `EventError`."""
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"{origin}: event is {len(raw)} bytes; expected at most {MAX_EVENT_BYTES}")
    try:
        return load_json(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long numbers, NaN
        raise EventError(f"{origin}: not valid JSON: {exc}") from None


def parse_event(
    raw: str | bytes, *, origin: str = "event", default_source: str | None = None
) -> IncomingEvent:
    """Validate incoming JSON into an event with a message a person can act on.

    `default_source` fills a missing `source`, as Keptn's API did for what it was sent."""
    return event_from_obj(load_event_json(raw, origin=origin), origin=origin, default_source=default_source)


def nesting_depth(obj: Any, limit: int = MAX_EVENT_DEPTH) -> int:
    """Levels of objects/arrays in `obj` (a scalar is 0), counted up to `limit + 1` without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            break
        stack.extend((child, depth + 1) for child in (value.values() if isinstance(value, dict) else value))
    return deepest


def event_from_obj(obj: Any, *, origin: str = "event", default_source: str | None = None) -> IncomingEvent:
    if default_source and isinstance(obj, dict) and not obj.get("source"):
        obj = {**obj, "source": default_source}
    if not isinstance(obj, dict):
        raise EventError(f"{origin}: expected a JSON object (a CloudEvent), found {type(obj).__name__}")
    if nesting_depth(obj) > MAX_EVENT_DEPTH:
        raise EventError(
            f"{origin}: event is nested more than {MAX_EVENT_DEPTH} levels deep; expected a Keptn event "
            "whose data nests a few levels"
        )
    if "contenttype" in obj and "datacontenttype" not in obj:  # Keptn's Go model spelling
        obj = {**obj, "datacontenttype": obj["contenttype"]}
        obj.pop("contenttype")
    try:
        return IncomingEvent.model_validate(obj)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(event)"
            msg = "required field is missing" if err["type"] == "missing" else err["msg"]
            parts.append(f"{loc}: {msg}")
        raise EventError(f"{origin}: " + "; ".join(parts)) from None
    except RecursionError:
        raise EventError(f"{origin}: event is nested too deeply") from None
