"""Which job-executor actions run for an event (spec 6.2, 6.3), and JSONPath over events.

job-executor-service scans its config in file order: matching silent actions run
without events, the first matching non-silent action runs and ends the scan. The
event names are unanchored regular expressions; `jsonpath.property` must yield a
string equal to `match`. JSONPath follows PaesslerAG/jsonpath as JES used it: a
missing key is an error (so the entry does not match), a definite path yields one
value, wildcards/filters/recursion yield a list. jsonpath-ng (ext dialect, for
filters) does the parsing; expressions are length-bounded and cached, because
they come from upstream files and event-driven evaluation is on the hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
from jsonpath_ng.ext.parser import parse as _parse

from reconciler.formats import goregex
from reconciler.formats.events import KeptnEvent
from reconciler.formats.jobconfig import JobAction, JobConfig, jsonpath_problem

MAX_JSONPATH_CHARS = 512
_INDEFINITE = re.compile(r"\*|\.\.|\?\(|\[[^\]]*[:,][^\]]*\]")


class JsonPathError(ValueError):
    pass


@lru_cache(maxsize=1024)
def _compiled(expr: str) -> Any:
    if len(expr) > MAX_JSONPATH_CHARS:
        raise JsonPathError(f"JSONPath is {len(expr)} characters; expected at most {MAX_JSONPATH_CHARS}")
    if not expr.startswith("$"):
        raise JsonPathError(f"JSONPath {expr!r} must start with '$'")
    if problem := jsonpath_problem(expr):
        raise JsonPathError(problem)
    try:
        return _parse(expr)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:  # ply raises bare Exceptions
        raise JsonPathError(f"invalid JSONPath {expr!r}: {exc}") from None


def check_jsonpath(expr: str) -> None:
    """Raise JsonPathError when `expr` cannot be parsed (used by validation)."""
    _compiled(expr)


def evaluate(expr: str, obj: Any) -> Any:
    """Value at `expr` in `obj`; a list for wildcard/filter paths. Missing -> JsonPathError."""
    compiled = _compiled(expr)
    try:
        found = [m.value for m in compiled.find(obj)]
    except (RecursionError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise JsonPathError(f"cannot evaluate {expr!r}: {exc}") from None
    if _INDEFINITE.search(expr):
        return found
    if not found:
        raise JsonPathError(f"unknown key in {expr!r}")
    return found[0]


def event_object(event: KeptnEvent) -> dict[str, Any]:
    """The object JES evaluates JSONPath against (spec 6.2)."""
    return {
        "id": event.id,
        "shkeptncontext": event.shkeptncontext,
        "time": event.time,
        "source": event.source,
        "data": event.data,
        "specversion": event.specversion,
        "type": event.type,
        "gitcommitid": event.gitcommitid or "",
    }


@lru_cache(maxsize=4096)
def _name_matches(pattern: str, event_type: str) -> bool:
    """Memoized: validation asks it for every task of every service (400,000 times at 10,000
    services x 2 stages, 2.5 s of a start-up), over a few patterns and event types."""
    return goregex.search(pattern, event_type)


def name_matches(action: JobAction, event_type: str) -> bool:
    """Does an event name of `action` match `event_type`, its jsonpath conditions left aside
    (they depend on run-time data: what validation can check before any event)?"""
    return any(_name_matches(m.name, event_type) for m in action.events)


def action_matches(action: JobAction, event: KeptnEvent, obj: dict[str, Any] | None = None) -> bool:
    obj = obj if obj is not None else event_object(event)
    for matcher in action.events:
        if not _name_matches(matcher.name, event.type):
            continue
        if matcher.jsonpath is None or not matcher.jsonpath.property:
            return True
        try:
            value = evaluate(matcher.jsonpath.property, obj)
        except JsonPathError:
            continue
        if isinstance(value, str) and value == matcher.jsonpath.match:
            return True
    return False


@dataclass(frozen=True)
class MatchedAction:
    index: int
    """0-based position in the file; part of the Job name."""
    action: JobAction


def matching_actions(config: JobConfig, event: KeptnEvent) -> list[MatchedAction]:
    """Actions to run, in order: silent matches up to and including the first non-silent match."""
    obj = event_object(event)
    out: list[MatchedAction] = []
    for index, action in enumerate(config.actions):
        if action_matches(action, event, obj):
            out.append(MatchedAction(index, action))
            if not action.silent:
                break
    return out


def answering_action(config: JobConfig, event: KeptnEvent) -> MatchedAction | None:
    """The non-silent action that will send `.finished`, if any."""
    for matched in matching_actions(config, event):
        if not matched.action.silent:
            return matched
    return None
