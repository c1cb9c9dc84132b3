"""Git commit-message trailers (`Key: value` lines of the last paragraph).

The ledger writes its event ids and contexts as trailers; the upstream poll reads the
`Reconciler-Origin:` trailer of commits people push. One encoding for both.
"""

from __future__ import annotations

import json


def encode_trailer(value: str) -> str:
    """Plain when it survives a trailer line unchanged, JSON-quoted otherwise (e.g. a newline)."""
    if value and value.isprintable() and value == value.strip() and not value.startswith('"'):
        return value
    return json.dumps(value, ensure_ascii=True)


def decode_trailer(value: str) -> str:
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def parse_trailers(message: str) -> dict[str, str]:
    """Trailers of the message's last paragraph (`Key: value` lines), values decoded."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return {}
    out: dict[str, str] = {}
    for line in paragraphs[-1].splitlines():
        key, sep, value = line.partition(": ")
        if sep and key and " " not in key:
            out[key] = decode_trailer(value.strip())
    return out
