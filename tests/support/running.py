"""The whole reconciler running in the test process, on a test's upstream repository.

Several tests start `App` the same way (local runner, no ledger push, a fast poll, its
control loop on a thread) and differ only in a few settings; they share this factory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reconciler.app import App
from reconciler.settings import Settings
from tests.support.gitserver import UpstreamRepo


def running_apps(
    data_dir: Path,
    *,
    serve_api: bool = False,
    prepare: Callable[[Path], None] | None = None,
    **settings: Any,
) -> Iterator[Callable[[UpstreamRepo], App]]:
    """A fixture body: `make(repo)` starts an App on `repo` with `data_dir` (after
    `prepare(data_dir)`, e.g. to write secrets) and `settings` over the defaults below; every
    app made is stopped at the end."""
    apps: list[App] = []

    def make(repo: UpstreamRepo) -> App:
        if prepare is not None:
            prepare(data_dir)
        defaults: dict[str, Any] = {
            "poll_interval": 0.5,
            "api_listen": "",
            "runner": "local",
            "ledger_push": "never",
        }
        app = App(
            Settings(upstream=str(repo.path), data_dir=data_dir, **{**defaults, **settings}),
            serve_api=serve_api,
        ).start()
        threading.Thread(target=app.run_forever, daemon=True).start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop(grace=5)
