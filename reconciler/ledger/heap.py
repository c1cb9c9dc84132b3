"""Handing memory freed by a bulk read back to the operating system.

Loading or replaying a large ledger allocates and frees hundreds of MiB in small
pieces (libgit2's object cache, decoded events). glibc keeps freed small blocks in
its heap for reuse, so an idle process measured ~130 MiB more than it used until
`malloc_trim` returned them. Called once after each bulk step, never per event.

libgit2 maps the pack files it reads and, by default, unmaps nothing until 8 GiB are
mapped: a full read of a 100,000-event ledger (~100 packs, ~150 MiB) left every page
of every pack resident in the process, counted in its RSS although the page cache
holds them anyway. `bound_git_mappings` caps what stays mapped; reading a page again
maps it from the page cache, which measured no slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from functools import cache

import pygit2

GIT_WINDOW_BYTES = 8 * 1024 * 1024
"""Size of one mapped piece of a pack (libgit2's default on 64-bit: 1 GiB, a whole pack)."""
GIT_MAPPED_LIMIT = 32 * 1024 * 1024
"""Pack bytes kept mapped at once; least recently used windows are unmapped beyond it."""

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
def bound_git_mappings() -> None:
    """Cap libgit2's mapped pack windows for the whole process (its settings are global)."""
    settings = pygit2.settings
    if settings.mwindow_size > GIT_WINDOW_BYTES:
        settings.mwindow_size = GIT_WINDOW_BYTES
    if settings.mwindow_mapped_limit > GIT_MAPPED_LIMIT:
        settings.mwindow_mapped_limit = GIT_MAPPED_LIMIT
