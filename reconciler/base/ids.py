"""New ids, as one name the shell passes down (the pure layers take ids as arguments).

Ids the reconciler decides itself derive from their cause (`formats.events.derived_id`), so
a decision re-made after a crash dedups; only what arrives from outside without one (a
CLI command, an API call without an id) gets a random one, here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

Ids = Callable[[], str]


def random_id() -> str:
    return str(uuid.uuid4())
