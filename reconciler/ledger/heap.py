"""Handing memory freed by a bulk read back to the operating system.

Loading or replaying a large ledger allocates and frees hundreds of MiB in small
pieces (libgit2's object cache, decoded events). glibc keeps freed small blocks in
its heap for reuse, so an idle process measured ~130 MiB more than it used until
`malloc_trim` returned them. Called once after each bulk step, never per event.

libgit2 maps the pack files it reads and, by default, unmaps nothing until 8 GiB are
mapped: a full read of a 100,000-event ledger (~100 packs, ~150 MiB) left every page
of every pack resident in the process, counted in its RSS although the page cache
holds them anyway. `bound_native_memory` caps what stays mapped; reading a page again
maps it from the page cache, which measured no slower.

glibc also raises its mmap threshold each time a large block is freed (up to 32 MiB), so
after one checkpoint write (a ~6 MB JSON document, in its own thread) later blocks of that
size came from the thread's heap, whose free top `malloc_trim` does not return: ~25 MiB
stayed resident. A fixed threshold (`mallopt`, which also turns the adjusting off) keeps
blocks of 1 MiB and more in their own mappings, returned when freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
from collections.abc import Callable
from functools import cache

import pygit2

GIT_WINDOW_BYTES = 8 * 1024 * 1024
"""Size of one mapped piece of a pack (libgit2's default on 64-bit: 1 GiB, a whole pack)."""
GIT_MAPPED_LIMIT = 32 * 1024 * 1024
"""Pack bytes kept mapped at once; least recently used windows are unmapped beyond it."""

MMAP_THRESHOLD = 1024 * 1024
"""Blocks of at least this many bytes get a mapping of their own from glibc."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, <malloc.h>

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


@cache
def bound_native_memory() -> None:
    """Cap libgit2's mapped pack windows, and fix glibc's mmap threshold, for the whole
    process (both are process-wide settings); once."""
    name = ctypes.util.find_library("c")
    chosen = "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get(
        "GLIBC_TUNABLES", ""
    )
    if name is not None and not chosen:  # an operator's own setting stands
        with contextlib.suppress(OSError, AttributeError):  # not glibc: its own policy stands
            ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    settings = pygit2.settings
    if settings.mwindow_size > GIT_WINDOW_BYTES:
        settings.mwindow_size = GIT_WINDOW_BYTES
    if settings.mwindow_mapped_limit > GIT_MAPPED_LIMIT:
        settings.mwindow_mapped_limit = GIT_MAPPED_LIMIT
