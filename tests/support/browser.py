"""Headless Chromium for the web view's browser tests: Debian's `chromium`, driven by Playwright.

Playwright for Python drives the browser over its DevTools protocol; it is never
asked to download a browser of its own (`playwright install` is not run): the
Debian package (`reconciler doctor --install` installs it) is launched by path,
with a new empty profile, no network of its own (no component updates, sync,
QUIC or background fetches), and without the sandbox, which needs privileges a
test container lacks.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A persistent Chromium context on a fresh profile (module scope: one browser per module)."""
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is not installed: run `reconciler doctor --install`")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"),
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()
