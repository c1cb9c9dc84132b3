"""The reconciler's JSON log lines captured in memory, for tests that assert what a user reads."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from reconciler.runtime.observability import configure_logging


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """JSON log lines written while the test runs (logging goes back to a sink after)."""
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    yield buf
    configure_logging(fmt="json", stream=io.StringIO())


def records(buf: io.StringIO, name: str) -> list[dict[str, object]]:
    """The captured lines whose `event` is `name`."""
    return [r for r in map(json.loads, buf.getvalue().splitlines()) if r.get("event") == name]
