"""Handing memory freed by a bulk read back to the operating system.

Loading or replaying a large ledger allocates and frees hundreds of MiB in small
pieces (libgit2's object cache, decoded events). glibc keeps freed small blocks in
its heap for reuse, so an idle process measured ~130 MiB more than it used until
`malloc_trim` returned them. Called once after each bulk step, never per event.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from functools import cache

BULK_EVENTS = 10_000
"""Below this many events read at once, trimming is not worth its few milliseconds."""


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl, macOS): nothing to trim
        return None
    return trim


def release_freed_memory() -> None:
    """Collect cycles, then return free heap pages to the system (glibc only; a no-op elsewhere)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
