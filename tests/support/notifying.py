"""A real ledger with a notifier following it, for the notification tests.

`tests/test_notifications.py` (notifications.yaml targets) and
`tests/test_webhook_notifications.py` (webhook.yaml notifications) drive the same notifier
the same way: record events, kick it, read its state file; only how they build it differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from reconciler.formats.events import KeptnEvent
from reconciler.ledger.gitledger import Ledger
from reconciler.runtime.notifier import STATE_FILE, Notifier
from tests.support.events import new_id, now_text


def shop_event(
    type_: str,
    *,
    source: str = "shipyard-controller",
    time: str | None = None,
    context: str | None = None,
    triggeredid: str | None = None,
    **data: Any,
) -> KeptnEvent:
    """An event of the shop project's qa stage and web service (`data` adds or overrides)."""
    return KeptnEvent(
        id=new_id(),
        source=source,
        type=type_,
        time=time or now_text(),
        shkeptncontext=context or new_id(),
        triggeredid=triggeredid,
        data={"project": "shop", "stage": "qa", "service": "web", **data},
    )


class NotifierRig:
    """A ledger under `root` and the notifier `make()` builds over it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(root / "ledger.git", "reconciler-ledger")

    def make(self) -> Notifier:
        raise NotImplementedError

    def record(self, *events: KeptnEvent) -> None:
        self.ledger.extend(events)
        self.notifier.kick()

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.root / STATE_FILE).read_text()))

    notifier: Notifier


R = TypeVar("R", bound=NotifierRig)


def rig_factory(tmp_path: Path, build: Callable[..., R]) -> Iterator[Callable[..., R]]:
    """A fixture body: `make(...)` builds rigs in their own folders; all are stopped at the end."""
    made: list[R] = []

    def make(*args: Any, **kwargs: Any) -> R:
        rig = build(tmp_path / f"rig{len(made)}", *args, **kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.notifier.stop(timeout=2)
