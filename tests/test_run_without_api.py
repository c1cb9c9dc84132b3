"""A reconciler with the API off (`api_listen` empty) does not load the web stack.

FastAPI, Starlette, uvicorn and Jinja2 are ~8 MiB of idle RSS (bench/README, issue 19
part 3) that a headless reconciler never uses. What `reconciler run` imports on its way
to running (the CLI command, the app, the token check, the notifier and its commit
index) must not pull them in; with the API on they load on first use.
"""

from __future__ import annotations

import subprocess
import sys

WEB = ("fastapi", "starlette", "uvicorn", "jinja2")

RUN_PATH = """
import sys
import reconciler.cli.run, reconciler.app, reconciler.api.token
import reconciler.runtime.notifier, reconciler.ui.commits
from reconciler.api import api_token_problem
print(",".join(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""

API_PATH = """
import sys
from reconciler.api import ServerLimits, create_app
print(",".join(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code, *WEB], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    return set(filter(None, out.split(",")))


def test_the_run_path_without_the_api_loads_no_web_framework() -> None:
    assert _loaded(RUN_PATH) == set()


def test_the_api_names_still_load_on_first_use() -> None:
    assert {"fastapi", "uvicorn"} <= _loaded(API_PATH)
