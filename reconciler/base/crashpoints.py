"""Named crash points, so tests can kill a process exactly between two steps.

The ledger promises that a process killed between any two steps of an append or a
poll leaves a state from which a restart ends where an uninterrupted run would.
Random-delay kills rarely land inside the few microseconds between, say, writing a
commit object and moving the ref; a named point makes each gap testable on purpose.

With `RECONCILER_CRASH_AT=<point>:<n>` in the environment, the process sends itself
SIGKILL the n-th time it reaches `<point>` (n defaults to 1). Without the variable
(every production run) `crash_point` is a dictionary-free early return.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "RECONCILER_CRASH_AT"


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    try:
        return name, max(1, int(count or "1"))
    except ValueError:
        return None


_target = _parse(os.environ.get(CRASH_ENV, ""))
_reached = 0


def crash_point(name: str) -> None:
    """Die here, without cleanup, when the environment asks for this point."""
    global _reached
    if _target is None or _target[0] != name:
        return
    _reached += 1
    if _reached >= _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
