"""Shared fixtures. Every module in tests/support/ is loaded as a pytest plugin, so each
real part (git servers, Prometheus, the Kubernetes API double, ...) lives in its own file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support")
_support = Path(__file__).parent / "support"
pytest_plugins = sorted(
    f"tests.support.{p.stem}" for p in _support.glob("*.py") if not p.name.startswith("_")
)

REPO_ROOT = Path(__file__).resolve().parent.parent
LONG = os.environ.get("RECONCILER_LONG_TESTS") == "1"

# A root reconciler runs local jobs as `local_job_user` (nobody), who cannot enter pytest's
# private (0700) temporary directories, nor an interpreter installed under /root. Tests of
# other behaviour run their jobs as the reconciler's own user (this setting reaches the
# `reconciler run` processes they start too); tests/test_job_security.py runs them as nobody,
# in directories that user can reach.
os.environ.setdefault("RECONCILER_LOCAL_JOB_USER", "root")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG:
        return
    skip = pytest.mark.skip(reason="long trial: set RECONCILER_LONG_TESTS=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_secret_registry() -> Iterator[None]:
    """Secrets registered by one test (e.g. an API token 'nope') must not redact another's output."""
    from reconciler.base.redact import registered_secrets, reset_secrets

    before = registered_secrets()
    yield
    reset_secrets(before)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def example_upstream() -> Path:
    return REPO_ROOT / "example-upstream"
