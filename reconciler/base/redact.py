"""Secrets never shown: a process-wide registry of secret values and the redaction every
log line, status output and error text passes through.

One registry per process, like the health board: the settings, the ledger key and the
adapters register what they hold, and nothing needs wiring. `redact_processor` is the
step the log pipeline (`runtime.observability`) runs on every line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

_secrets: set[str] = set()
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^/@\s]+)@")


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values so no log line, status output or error text ever shows them."""
    for value in values:
        if value and len(value) >= 4:
            _secrets.add(value)


def registered_secrets() -> frozenset[str]:
    return frozenset(_secrets)


def reset_secrets(values: Iterable[str] = ()) -> None:
    """Replace the registry (tests restore it between cases; a process never needs this)."""
    _secrets.clear()
    _secrets.update(values)


def redact(text: str) -> str:
    """Remove registered secrets and credentials embedded in URLs."""
    text = _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + "***@", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value)
    return event_dict
