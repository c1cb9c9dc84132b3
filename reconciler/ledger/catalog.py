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
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, islice
from typing import Any, TypeVar, overload

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
FOLD_MIN = 4096
"""Strings appended to a `Strings` before they are folded into its sealed part (or a quarter of it)."""
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
        id=event.id,
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


_T = TypeVar("_T")


class _ListLike(Sequence[_T]):
    """A read-only view that compares equal to any sequence of equal items, as the list it
    replaced did (tests and callers compare these views with lists); unhashable like one."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


class _Sealed:
    """The folded part of a `Strings`: one `str`, the end offset of each string in it, and an
    index by hash (hashes sorted, the positions in that order); never changed once made."""

    __slots__ = ("ends", "hashes", "order", "text")

    def __init__(self, values: Sequence[str]) -> None:
        self.text = "".join(values)
        self.ends = array("q", accumulate(map(len, values)))
        n = len(values)
        slices = map(slice, chain((0,), self.ends), self.ends)
        hashes = array("q", map(hash, map(self.text.__getitem__, slices)))
        order = sorted(range(n), key=hashes.__getitem__)
        self.hashes = array("q", map(hashes.__getitem__, order))
        self.order = array("i", order)

    def __len__(self) -> int:
        return len(self.ends)

    def get(self, i: int) -> str:
        ends = self.ends
        return self.text[ends[i - 1] if i else 0 : ends[i]]

    def find(self, value: str) -> int:
        hashes, order, get = self.hashes, self.order, self.get
        h = hash(value)
        i = bisect_left(hashes, h)
        while i < len(hashes) and hashes[i] == h:
            if get(order[i]) == value:
                return order[i]
            i += 1
        return -1


_NOTHING_SEALED = _Sealed(())


class Strings(_ListLike[str]):
    """An append-only list of distinct strings with their positions by value, in a few arrays.

    A list of 100,000 event ids and the dict of their positions cost ~180 bytes per id
    (the `str` object, its dict slot, its `int`); here ~36 for the characters and 20 for
    an offset and the hash index. The newest strings sit in a plain list and dict until
    there are enough of them to fold into the sealed part (a quarter of it, at least 4,096),
    so an append costs what it did.

    Readers need no lock: `_state` is replaced whole, never edited but by appending to its
    list and dict, and a reader takes it once.
    """

    def __init__(self, values: Sequence[str] = ()) -> None:
        self._state: tuple[_Sealed, list[str], dict[str, int]] = (
            (_Sealed(values), [], {}) if values else (_NOTHING_SEALED, [], {})
        )

    def __len__(self) -> int:
        sealed, tail, _ = self._state
        return len(sealed) + len(tail)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            return (
                list(islice(self, start, stop, step))
                if step > 0
                else [self[i] for i in range(start, stop, step)]
            )
        sealed, tail, _ = self._state
        n = len(sealed)
        if index < 0:
            index += n + len(tail)
        if 0 <= index < n:
            return sealed.get(index)
        if index < 0:
            raise IndexError("Strings index out of range")
        return tail[index - n]  # IndexError past the end

    def __iter__(self) -> Iterator[str]:
        sealed, tail, _ = self._state
        yield from map(sealed.get, range(len(sealed)))
        yield from tail[:]

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self.find(value) >= 0

    def find(self, value: str) -> int:
        """The position of `value`, -1 when absent."""
        sealed, _, recent = self._state
        found = recent.get(value)
        if found is not None:
            return found
        return sealed.find(value)

    def append(self, value: str) -> int:
        """Add `value` (not already in; the caller checks) and return its position."""
        sealed, tail, recent = self._state
        position = len(sealed) + len(tail)
        tail.append(value)
        recent[value] = position
        if len(tail) >= max(FOLD_MIN, len(sealed) // 4):
            self.fold()
        return position

    def fold(self) -> None:
        """Move the recent strings into the sealed part (fresh, contiguous memory)."""
        if self._state[1]:
            self._state = (_Sealed(list(self)), [], {})

    def __repr__(self) -> str:
        return f"<{len(self)} strings>"


class _Positions(Mapping[str, int]):
    """`Strings` read as {value: position}."""

    def __init__(self, strings: Strings) -> None:
        self._strings = strings

    def __getitem__(self, key: str) -> int:
        found = self._strings.find(key) if isinstance(key, str) else -1
        if found < 0:
            raise KeyError(key)
        return found

    def get(self, key: str, default: Any = None) -> Any:
        found = self._strings.find(key) if isinstance(key, str) else -1
        return default if found < 0 else found

    def __contains__(self, key: object) -> bool:
        return key in self._strings

    def __len__(self) -> int:
        return len(self._strings)

    def __iter__(self) -> Iterator[str]:
        return iter(self._strings)


class Catalog:
    """Entries in ledger order with indexes by id, type and context; append-only.

    Kept as columns, not one object per event: a frozen `EventMeta` with its own `bytes`
    and an interned id measured 450 bytes per event (43 MiB at 100,000, tracemalloc), most
    of it object headers; a list of id strings with a dict of their positions still 286
    bytes (27 MiB). Here the ids and the table of repeated strings (types, contexts,
    triggered ids, scopes) are `Strings`, and an event costs its id's characters, 20
    bytes of offset and hash index, 20 bytes of blob id and four 4-byte indexes into the
    table: 13.5 MiB at 100,000 with the table. `entries` makes an `EventMeta` when asked.

    A catalog is replaced, never edited in place, when the branch is rewritten, so a
    view holding one (and a length) stays a consistent snapshot.
    """

    def __init__(self) -> None:
        self.ids = Strings()
        """Event ids in ledger order; `positions` reads them by value."""
        self.by_type: dict[str, array[int]] = {}
        self.by_context: dict[str, array[int]] = {}
        self.strings = Strings()
        """The repeated strings, each once; the columns below index into it."""
        self.types: array[int] = array("i")
        self.contexts: array[int] = array("i")
        self.triggered: array[int] = array("i")
        """-1: the event answers no trigger."""
        self.scopes: array[int] = array("i")
        self.blobs = bytearray()
        """Raw blob ids, 20 bytes each, in ledger order."""

    @property
    def positions(self) -> Mapping[str, int]:
        """{event id: position}."""
        return _Positions(self.ids)

    @property
    def entries(self) -> Entries:
        return Entries(self)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.ids

    def _ref(self, value: str) -> int:
        found = self.strings.find(value)
        return found if found >= 0 else self.strings.append(value)

    def add(self, meta: EventMeta) -> None:
        if len(meta.blob) != 20:
            raise ValueError(f"a blob id of {len(meta.blob)} bytes")
        position = len(self.ids)
        type_ = self._ref(meta.type)
        context = self._ref(meta.context)
        self.types.append(type_)
        self.contexts.append(context)
        self.triggered.append(self._ref(meta.triggeredid) if meta.triggeredid else -1)
        self.scopes.append(self._ref(meta.scope))
        self.blobs += meta.blob
        self.ids.append(meta.id)  # the length readers see grows last, once the columns hold the entry
        _index(self.by_type, meta.type, position)
        if meta.context:
            _index(self.by_context, meta.context, position)

    def meta(self, position: int) -> EventMeta:
        """The entry at `position` (0 <= position < len)."""
        strings = self.strings
        triggered = self.triggered[position]
        return EventMeta(
            id=self.ids[position],
            type=strings[self.types[position]],
            context=strings[self.contexts[position]],
            triggeredid=strings[triggered] if triggered >= 0 else None,
            scope=strings[self.scopes[position]],
            blob=bytes(self.blobs[20 * position : 20 * position + 20]),
        )

    def compact(self) -> None:
        """Fold the ids and strings appended since the last fold into their sealed parts, after a
        bulk read: one `str` and a few arrays each instead of an object per id, in fresh memory
        (read from git, each id was allocated between its commit's message and trailers)."""
        self.ids.fold()
        self.strings.fold()

    def select(
        self, types: Collection[str] | None, context: str | None, scope: str | None, length: int
    ) -> list[int]:
        """Positions below `length` of events with one of `types` (any when None), in `context`
        and `scope` (any when None)."""
        found: list[int]
        if types is not None:
            found = []
            for type_ in types:
                found.extend(_below(self.by_type.get(type_), length))
            if len(types) > 1:
                found.sort()
        elif context:
            found = list(_below(self.by_context.get(context), length))
        else:
            found = list(range(length))
        strings = self.strings
        if context is not None:
            contexts, wanted = self.contexts, strings.find(context)
            found = [i for i in found if contexts[i] == wanted] if wanted >= 0 else []
        if scope is not None:
            scopes, wanted = self.scopes, strings.find(scope)
            found = [i for i in found if scopes[i] == wanted] if wanted >= 0 else []
        return found


def _index(index: dict[str, array[int]], key: str, position: int) -> None:
    found = index.get(key)
    if found is None:
        found = index[key] = array("i")
    found.append(position)


class Entries(_ListLike[EventMeta]):
    """A catalog's entries (or the first `length` of them) as `EventMeta`, made on access."""

    def __init__(self, catalog: Catalog, length: int | None = None) -> None:
        self._catalog = catalog
        self._length = length

    def __len__(self) -> int:
        n = len(self._catalog)
        return n if self._length is None else min(n, self._length)

    @overload
    def __getitem__(self, index: int) -> EventMeta: ...

    @overload
    def __getitem__(self, index: slice) -> Entries: ...

    def __getitem__(self, index: int | slice) -> EventMeta | Entries:
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if start != 0 or step != 1:
                raise ValueError("a catalog's entries are sliced from the start only ([:n])")
            return Entries(self._catalog, max(stop, 0))
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("catalog entry index out of range")
        return self._catalog.meta(index)

    def __repr__(self) -> str:
        return f"<catalog entries: {len(self)}>"


CHECKPOINT_KIND = "ledger-catalog"
CHECKPOINT_VERSION = 2
"""2: the index columns as base64 of 32-bit little-endian integers (1: JSON lists of numbers,
which made 400,000 int objects at each write and read of a 100,000-event catalog)."""


class CatalogCheckpoint(BaseModel):
    """The catalog saved as columns (`checkpoint`): the repeated strings (types, contexts,
    triggered ids, scopes) once each in `strings`, each column an array of indexes into it,
    so 100,000 events are ~6 MB of JSON before compression and the only objects a write or a
    read makes per event are the id strings."""

    model_config = ConfigDict(extra="forbid")

    strings: list[str]
    ids: list[str]
    types: str
    contexts: str
    triggered: str
    """-1 when the event answers no trigger."""
    scopes: str
    """These four: indexes into `strings`, 32-bit little-endian integers, concatenated, base64."""
    blobs: str
    """The blobs' raw object ids, 20 bytes each, concatenated, base64."""


def _pack(column: array[int]) -> str:
    if sys.byteorder != "little":
        column = array("i", column)
        column.byteswap()
    return base64.b64encode(column.tobytes()).decode("ascii")


def _unpack(text: str, n: int, name: str) -> array[int]:
    data = base64.b64decode(text, validate=True)
    if len(data) != 4 * n:
        raise ValueError(f"columns of different lengths: {len(data)} bytes of {name} for {n} events")
    column = array("i")
    column.frombytes(data)
    if sys.byteorder != "little":
        column.byteswap()
    return column


def to_checkpoint(entries: Sequence[EventMeta]) -> CatalogCheckpoint:
    """The checkpoint of `entries` (a catalog's `entries[:n]`, or any entries in ledger order)."""
    if isinstance(entries, Entries):
        source = entries._catalog
    else:
        source = Catalog()
        for meta in entries:
            source.add(meta)
    n = len(entries)
    return CatalogCheckpoint(
        ids=source.ids[:n],
        types=_pack(source.types[:n]),
        contexts=_pack(source.contexts[:n]),
        triggered=_pack(source.triggered[:n]),
        scopes=_pack(source.scopes[:n]),
        blobs=base64.b64encode(source.blobs[: 20 * n]).decode("ascii"),
        strings=source.strings[:],  # may hold strings only later entries use: harmless
    )


def from_checkpoint(saved: CatalogCheckpoint) -> Catalog:
    """The catalog a checkpoint holds; ValueError when its columns do not fit together.

    Built column by column, not entry by entry: only the id strings become objects."""
    n = len(saved.ids)
    blobs = base64.b64decode(saved.blobs, validate=True)
    if len(blobs) != 20 * n:
        raise ValueError(f"columns of different lengths: {len(blobs)} bytes of blob ids for {n} events")
    types = _unpack(saved.types, n, "types")
    contexts = _unpack(saved.contexts, n, "contexts")
    triggered = _unpack(saved.triggered, n, "triggered")
    scopes = _unpack(saved.scopes, n, "scopes")
    count = len(saved.strings)
    for column in (types, contexts, scopes):
        if n and not 0 <= min(column) <= max(column) < count:
            raise ValueError("a string index out of range")
    if n and not -1 <= min(triggered) <= max(triggered) < count:
        raise ValueError("a string index out of range")
    if len(set(saved.strings)) != count:
        raise ValueError("a string twice in the table")
    if len(set(saved.ids)) != n:
        raise ValueError("an event id twice")
    catalog = Catalog()
    catalog.strings = Strings(saved.strings)
    catalog.ids = Strings(saved.ids)
    catalog.types, catalog.contexts, catalog.triggered, catalog.scopes = types, contexts, triggered, scopes
    catalog.blobs = bytearray(blobs)
    strings = catalog.strings
    by_type: dict[int, array[int]] = {}
    by_context: dict[int, array[int]] = {}
    empty = catalog.strings.find("")
    for position, (type_, context) in enumerate(zip(types, contexts, strict=True)):
        found = by_type.get(type_)
        if found is None:
            found = by_type[type_] = array("i")
        found.append(position)
        if context != empty:
            found = by_context.get(context)
            if found is None:
                found = by_context[context] = array("i")
            found.append(position)
    catalog.by_type = {strings[i]: positions for i, positions in by_type.items()}
    catalog.by_context = {strings[i]: positions for i, positions in by_context.items()}
    return catalog


def _below(positions: array[int] | None, length: int) -> array[int] | list[int]:
    if positions is None:
        return []
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
            meta = self._catalog.meta
            return [self._load(meta(i)) for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("ledger event index out of range")
        return self._load(self._catalog.meta(index))

    def __iter__(self) -> Iterator[KeptnEvent]:
        meta, load = self._catalog.meta, self._load
        for i in range(self._length):
            yield load(meta(i))

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
        return self._catalog.meta(index)

    def position(self, event_id: str) -> int | None:
        found = self._catalog.positions.get(event_id)
        return found if found is not None and found < self._length else None

    def select(
        self, *, types: Collection[str] | None = None, context: str | None = None, scope: str | None = None
    ) -> list[KeptnEvent]:
        """Events of these types, context and scope (`subject_scope`; any when None), oldest
        first; only those are decoded. A scope may match events of another scope that renders
        alike (shortened on the commit line): callers still check the decoded fields."""
        meta, load = self._catalog.meta, self._load
        return [load(meta(i)) for i in self._catalog.select(types, context, scope, self._length)]
