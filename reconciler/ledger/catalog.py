"""What the ledger keeps in memory per event: a few hundred bytes of metadata, not the event.

A decoded `KeptnEvent` with its nested `data` costs ~5 KB of Python objects against
~1.25 KB of JSON, and the blob is already in git. So the catalog keeps, per event,
the fields consumers filter on (id, type, context, triggeredid — the commit message
carries them) and the blob's object id; an event is decoded from git when someone
asks for it, and a small LRU keeps the recently asked ones. Type and context
indexes answer "every evaluation.finished of context C" without decoding anything else.

Decoding skips pydantic's validators (`model_construct` after a strict JSON parse):
every event was checked to read back with full validation before its commit was
written, so validating it again on every restart is pure cost (~40 % of a decode).
An object that does not look like one of our events (a commit someone else wrote)
still goes through full validation and fails with the ledger's usual error.
"""

from __future__ import annotations

import base64
import sys
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from pydantic import BaseModel, ConfigDict
from pydantic_core import from_json

from reconciler.formats.events import KeptnEvent

DECODED_KEEP = 2048
"""Decoded events kept for repeated reads (~10 MiB): what the control loop just appended
and what executors look up again (their own answers, a context's task events)."""

_STR_FIELDS = ("id", "source", "type", "time")
_OPTIONAL_STR_FIELDS = (
    "datacontenttype",
    "shkeptncontext",
    "shkeptnspecversion",
    "triggeredid",
    "gitcommitid",
)
_FIELDS = frozenset(KeptnEvent.model_fields)
_NO_DATA: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class EventMeta:
    """Per-event facts known without decoding the event (from the commit and its tree)."""

    id: str
    type: str
    context: str
    triggeredid: str | None
    scope: str
    """`project/stage/service` as the commit's first line shows it (see `subject_scope`)."""
    blob: bytes
    """Raw object id of the event's JSON blob."""


def meta_of(event: KeptnEvent, blob: bytes, scope: str) -> EventMeta:
    return EventMeta(
        id=sys.intern(event.id),
        type=sys.intern(event.type),
        context=sys.intern(event.shkeptncontext),
        triggeredid=sys.intern(event.triggeredid) if event.triggeredid else None,
        scope=sys.intern(scope),
        blob=blob,
    )


def decode_event(data: bytes | str) -> KeptnEvent:
    """The event stored in a ledger blob; ValueError when it is not one.

    `from_json` is pydantic's own parser (the one `model_validate_json` uses), so numbers
    and strings come out exactly as a validating read would produce them; repeated keys
    are shared between events (`cache_strings`), which matters for those kept in memory.
    """
    obj = from_json(data, cache_strings="keys")
    if _looks_recorded(obj):
        return _construct(obj)
    return KeptnEvent.model_validate(obj)


def _looks_recorded(obj: Any) -> bool:
    """The shape `KeptnEvent.to_json` writes; anything else is validated in full."""
    if type(obj) is not dict or obj.get("specversion") != "1.0":
        return False
    for key in _STR_FIELDS:
        value = obj.get(key)
        if type(value) is not str or not value:
            return False
    for key in _OPTIONAL_STR_FIELDS:
        value = obj.get(key)
        if value is not None and type(value) is not str:
            return False
    if type(obj.get("data", _NO_DATA)) is not dict:
        return False
    extensions = obj.keys() - _FIELDS
    return not extensions or all(key[:1] != "_" for key in extensions)  # kept, never private names


_set = object.__setattr__
_DEFAULTS: dict[str, Any] = {
    name: info.default
    for name, info in KeptnEvent.model_fields.items()
    if not info.is_required() and info.default_factory is None
}


def _construct_fast(obj: dict[str, Any]) -> KeptnEvent:
    """`KeptnEvent.model_construct(**obj)` without its per-field Python loop (a quarter of a
    decode): the same four attributes pydantic's own construct sets. `_construct` is this
    only when it agrees with a validating read at import (see below)."""
    event = KeptnEvent.__new__(KeptnEvent)
    fields = {**_DEFAULTS}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
        if key in _FIELDS:
            fields[key] = value
        else:
            extra[key] = value
    _set(event, "__dict__", fields)
    _set(event, "__pydantic_fields_set__", set(obj))
    _set(event, "__pydantic_extra__", extra)
    _set(event, "__pydantic_private__", None)
    return event


def _construct_public(obj: dict[str, Any]) -> KeptnEvent:
    return KeptnEvent.model_construct(**obj)


def _fast_agrees() -> bool:
    sample = KeptnEvent(
        id="i",
        source="s",
        type="sh.keptn.event.t.triggered",
        time="2026-01-01T00:00:00.000Z",
        shkeptncontext="c",
        data={"a": [1, {"b": None}]},
    )
    raw = sample.to_json()
    obj = from_json(raw)
    obj["extension"] = "x"
    try:
        fast, slow = _construct_fast(dict(obj)), KeptnEvent.model_validate(obj)
    except Exception:  # a pydantic that works differently inside
        return False
    return (
        fast == slow
        and fast.to_json() == slow.to_json()
        and fast.model_fields_set == slow.model_fields_set
        and fast.model_extra == slow.model_extra
        and fast.model_copy(update={"id": "j"}).to_json() == slow.model_copy(update={"id": "j"}).to_json()
    )


_construct: Callable[[dict[str, Any]], KeptnEvent] = _construct_fast if _fast_agrees() else _construct_public


class Catalog:
    """Entries in ledger order with indexes by id, type and context; append-only.

    A catalog is replaced, never edited in place, when the branch is rewritten, so a
    view holding one (and a length) stays a consistent snapshot.
    """

    def __init__(self) -> None:
        self.entries: list[EventMeta] = []
        self.positions: dict[str, int] = {}
        self.by_type: dict[str, list[int]] = {}
        self.by_context: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.positions

    def add(self, meta: EventMeta) -> None:
        position = len(self.entries)
        self.entries.append(meta)
        self.positions[meta.id] = position
        self.by_type.setdefault(meta.type, []).append(position)
        if meta.context:
            self.by_context.setdefault(meta.context, []).append(position)

    def select(
        self, types: Collection[str] | None, context: str | None, scope: str | None, length: int
    ) -> list[int]:
        """Positions below `length` of events with one of `types` (any when None), in `context`
        and `scope` (any when None)."""
        if types is not None:
            found: list[int] = []
            for type_ in types:
                found.extend(_below(self.by_type.get(type_, []), length))
            if len(types) > 1:
                found.sort()
        elif context:
            found = _below(self.by_context.get(context, []), length)
        else:
            found = list(range(length))
        entries = self.entries
        if context is not None:
            found = [i for i in found if entries[i].context == context]
        if scope is not None:
            found = [i for i in found if entries[i].scope == scope]
        return found


CHECKPOINT_KIND = "ledger-catalog"
CHECKPOINT_VERSION = 1


class CatalogCheckpoint(BaseModel):
    """The catalog saved as columns (`checkpoint`): one list per field, the repeated strings
    (types, contexts, triggered ids, scopes) once each in `strings`, referred to by index, so
    100,000 events are ~12 MB of JSON before compression instead of ~25 MB of objects."""

    model_config = ConfigDict(extra="forbid")

    strings: list[str]
    ids: list[str]
    types: list[int]
    contexts: list[int]
    triggered: list[int]
    """Index into `strings`, -1 when the event answers no trigger."""
    scopes: list[int]
    blobs: str
    """The blobs' raw object ids, 20 bytes each, concatenated, base64."""


def to_checkpoint(entries: Sequence[EventMeta]) -> CatalogCheckpoint:
    table: dict[str, int] = {}

    def ref(value: str) -> int:
        found = table.get(value)
        if found is None:
            found = table[value] = len(table)
        return found

    return CatalogCheckpoint(
        ids=[m.id for m in entries],
        types=[ref(m.type) for m in entries],
        contexts=[ref(m.context) for m in entries],
        triggered=[ref(m.triggeredid) if m.triggeredid else -1 for m in entries],
        scopes=[ref(m.scope) for m in entries],
        blobs=base64.b64encode(b"".join(m.blob for m in entries)).decode("ascii"),
        strings=list(table),
    )


def from_checkpoint(saved: CatalogCheckpoint) -> Catalog:
    """The catalog a checkpoint holds; ValueError when its columns do not fit together."""
    n = len(saved.ids)
    blobs = base64.b64decode(saved.blobs, validate=True)
    if not (len(saved.types) == len(saved.contexts) == len(saved.triggered) == len(saved.scopes) == n):
        raise ValueError("columns of different lengths")
    if len(blobs) != 20 * n:
        raise ValueError(f"{len(blobs)} bytes of blob ids for {n} events")
    if (
        min((*saved.types, *saved.contexts, *saved.scopes), default=0) < 0
        or min(saved.triggered, default=0) < -1
    ):
        raise ValueError("a negative string index")
    strings = [sys.intern(value) for value in saved.strings]
    catalog = Catalog()
    try:
        for i, event_id in enumerate(saved.ids):
            triggered = saved.triggered[i]
            catalog.add(
                EventMeta(
                    id=sys.intern(event_id),
                    type=strings[saved.types[i]],
                    context=strings[saved.contexts[i]],
                    triggeredid=strings[triggered] if triggered >= 0 else None,
                    scope=strings[saved.scopes[i]],
                    blob=blobs[20 * i : 20 * i + 20],
                )
            )
    except IndexError:
        raise ValueError("a string index out of range") from None
    if len(catalog.positions) != n:
        raise ValueError("an event id twice")
    return catalog


def _below(positions: list[int], length: int) -> list[int]:
    return positions[: bisect_left(positions, length)]


class Decoded:
    """The most recently decoded events by id, shared by every view of one ledger; thread-safe.

    First in, first out: cheaper per event than an LRU, and the events read again soon
    are the ones decoded or appended last.
    """

    def __init__(self, keep: int = DECODED_KEEP) -> None:
        self.keep = keep
        self._events: OrderedDict[str, KeptnEvent] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, event_id: str) -> KeptnEvent | None:
        return self._events.get(event_id)

    def put(self, event: KeptnEvent) -> None:
        with self._lock:
            events = self._events
            events[event.id] = event
            if len(events) > self.keep:
                events.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


class EventsView(Sequence[KeptnEvent]):
    """The ledger's events as of one moment, oldest first, decoded on access.

    Behaves like the tuple `Ledger.events()` used to return (len, index, slice,
    iteration); `meta` and `select` let consumers filter without decoding.
    """

    def __init__(self, catalog: Catalog, length: int, load: Callable[[EventMeta], KeptnEvent]) -> None:
        self._catalog = catalog
        self._length = length
        self._load = load

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> KeptnEvent: ...

    @overload
    def __getitem__(self, index: slice) -> list[KeptnEvent]: ...

    def __getitem__(self, index: int | slice) -> KeptnEvent | list[KeptnEvent]:
        if isinstance(index, slice):
            return [self._load(self._catalog.entries[i]) for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("ledger event index out of range")
        return self._load(self._catalog.entries[index])

    def __iter__(self) -> Iterator[KeptnEvent]:
        entries, load = self._catalog.entries, self._load
        for i in range(self._length):
            yield load(entries[i])

    def __contains__(self, value: object) -> bool:
        if isinstance(value, KeptnEvent):
            position = self._catalog.positions.get(value.id)
            return position is not None and position < self._length and self[position] == value
        return False

    def __repr__(self) -> str:
        return f"<ledger events: {self._length}>"

    def meta(self, index: int) -> EventMeta:
        """Id, type, context and triggeredid of one event, without decoding it."""
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("ledger event index out of range")
        return self._catalog.entries[index]

    def position(self, event_id: str) -> int | None:
        found = self._catalog.positions.get(event_id)
        return found if found is not None and found < self._length else None

    def select(
        self, *, types: Collection[str] | None = None, context: str | None = None, scope: str | None = None
    ) -> list[KeptnEvent]:
        """Events of these types, context and scope (`subject_scope`; any when None), oldest
        first; only those are decoded. A scope may match events of another scope that renders
        alike (shortened on the commit line): callers still check the decoded fields."""
        entries, load = self._catalog.entries, self._load
        return [load(entries[i]) for i in self._catalog.select(types, context, scope, self._length)]
