"""Why a connection failed, in the operating system's terms rather than a client library's.

requests, urllib3 and the kubernetes client each wrap a failed connect in their own
exception and format it their own way (`HTTPConnectionPool(host=..., port=...): Max
retries exceeded ... [Errno 111] Connection refused`); that wording changes between
releases and repeats pool internals a user does not need. The reason that matters is the
OS error at the bottom of the chain (refused, unreachable, name not known, timed out),
so messages name it, plus the address we tried, and nothing the library added.

May import: the standard library only.
"""

from __future__ import annotations

import os
import socket

_MAX_LINKS = 32


def os_reason(exc: BaseException) -> str | None:
    """The first OS-level cause in `exc`'s chain (causes, contexts, wrapped reasons), lower-case."""
    seen: set[int] = set()
    queue: list[BaseException] = [exc]
    while queue and len(seen) < _MAX_LINKS:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror) and current.strerror:
            return str(current.strerror).lower()
        if isinstance(current, OSError) and isinstance(current.errno, int) and current.errno > 0:
            return os.strerror(current.errno).lower()
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [a for a in current.args if isinstance(a, BaseException)]
        queue += [link for link in linked if isinstance(link, BaseException)]
    return None


def connection_reason(exc: BaseException) -> str:
    """`os_reason`, or the exception's class name when no OS error is in the chain."""
    return os_reason(exc) or type(exc).__name__
