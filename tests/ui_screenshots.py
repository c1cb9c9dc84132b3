"""Screenshots of a running reconciler's web view for docs/ui/ (not a test).

    .venv/bin/reconciler demo --keep     # prints the web view's address and the API token
    .venv/bin/python -m tests.ui_screenshots --url http://127.0.0.1:PORT --token TOKEN --out docs/ui

Signs in with the token and saves the overview, the newest context that went through
more than one stage, and the evaluations heatmap of the first service in the first
stage, with the browser the tests use (Debian's chromium through Playwright).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from tests.support.browser import ARGS, CHROMIUM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ui_screenshots", description=__doc__)
    parser.add_argument("--url", required=True, help="the web view's base, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", required=True, help="the API token")
    parser.add_argument("--out", type=Path, default=Path("docs/ui"))
    parser.add_argument("--service", default="helloservice")
    parser.add_argument("--stage", default="qa")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    base = args.url.rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="ui-shots-"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 800},
        )
        page = context.new_page()
        page.goto(f"{base}/ui/")
        if page.locator("#login-form").count():
            page.fill("#token", args.token)
            page.click("#login-form button[type=submit]")
            page.wait_for_url("**/ui/")
        page.screenshot(path=str(args.out / "overview.png"), full_page=True)
        page.goto(f"{base}/ui/sequences?stage=production")
        links = page.locator("table.sequences a[href^='/ui/context/']").evaluate_all(
            "els => els.map(e => e.getAttribute('href'))"
        )
        target = next((h for h in links if re.fullmatch(r"/ui/context/[\w%-]+", h)), None)
        if target:
            page.goto(base + target)
            page.screenshot(path=str(args.out / "sequence.png"), full_page=True)
        page.goto(f"{base}/ui/evaluations?stage={args.stage}&service={args.service}")
        page.screenshot(path=str(args.out / "heatmap.png"), full_page=True)
        context.close()
    print(f"screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
