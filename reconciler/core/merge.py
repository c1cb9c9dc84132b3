"""Keptn's payload merge (spec 2.4), the rule that decides what each task sees.

Every `.triggered` payload is the trigger's data merged with every earlier
`.finished` payload. We reproduce Keptn's table (arrays prepend, null keeps
containers, string->null becomes "") with one deliberate difference: Keptn never
overwrites a number or boolean once set, which froze the remediation action index
at 1 (spec 5.5) — here a newer number or boolean replaces the older one. See
docs/keptn-differences.md.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def merge(a: Any, b: Any) -> Any:
    """Merge `b` over `a`, returning a new value (neither argument is modified)."""
    if a is None:
        return copy.deepcopy(b)
    if isinstance(a, dict):
        if isinstance(b, dict):
            out = dict(a)
            for key, value in b.items():
                if key in out and out[key] is not None:
                    out[key] = merge(out[key], value)
                else:
                    out[key] = copy.deepcopy(value)
            return out
        return a if b is None else copy.deepcopy(b)
    if isinstance(a, list):
        if isinstance(b, list):
            return copy.deepcopy(b) + list(a)
        return a if b is None else copy.deepcopy(b)
    if isinstance(a, str):
        if b is None:
            return ""
        return copy.deepcopy(b)
    # numbers and booleans: the newer value wins (Keptn: the first value wins, a quirk)
    return a if b is None else copy.deepcopy(b)


def merge_all(base: dict[str, Any], *others: dict[str, Any]) -> dict[str, Any]:
    out: Any = copy.deepcopy(base)
    for other in others:
        out = merge(out, other)
    return dict(out)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing, not Keptn's: nested maps merge, anything else in `over` replaces.

    For defaults under a user's values (a Job's security context, `--values` over
    `{image}`, a chart's values); Keptn's payload `merge` above has other rules."""
    out: dict[str, Any] = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
