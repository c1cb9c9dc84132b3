"""The engine: plan to a fixed point, one round at a time.

`settle` is the only loop that plans until nothing is left to decide. Each round's
events must be recorded and folded before the next round is planned, because the next
decision depends on them (a sequence's `.finished` and the sequences it chains to are
successive rounds). Who records is the caller's business: the control loop appends to
the ledger and folds what it took (write-ahead); `decide` folds in memory, for callers
without a ledger (`reconciler simulate`, engine tests, the bench's ledger generator).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

from reconciler.core.engine_state import EngineState, apply
from reconciler.core.planning import ConfigView, Plan, Policy, Queued, plan
from reconciler.formats.events import KeptnEvent

MAX_ROUNDS = 1000
"""Rounds of one settle; a shipyard that chains forever is stopped long before by the iteration cap."""


class SettleError(RuntimeError):
    """A round's events were not folded before the next round was asked for (a caller bug:
    planning again would decide the same events forever)."""


def settle(
    state: EngineState,
    config: ConfigView,
    now: datetime,
    policy: Policy,
    queued: Mapping[str, Queued] | None = None,
    *,
    max_rounds: int = MAX_ROUNDS,
) -> Iterator[Plan]:
    """Yield plan rounds until one decides nothing (that last, empty round is yielded too: its
    `wake_at` counts). Before asking for the next round the caller records the round's events
    and folds them into `state`."""
    for _ in range(max_rounds):
        before = state.event_count
        decided = plan(state, config, now, policy, queued)
        yield decided
        if not decided.events:
            return
        if state.event_count == before:
            raise SettleError(f"{len(decided.events)} planned event(s) were not folded before the next round")


def pinned_shipyards(state: EngineState) -> set[str]:
    """The main commits the running sequences' shipyards are pinned to (`shipyardcommit`):
    what a snapshot must hold for plan to read them without git."""
    return {ex.shipyard_commit for ex in state.active() if ex.shipyard_commit}


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


def decide(
    state: EngineState,
    config: ConfigView,
    event: KeptnEvent | None,
    now: datetime,
    policy: Policy | None = None,
    *,
    max_rounds: int = MAX_ROUNDS,
) -> Plan:
    """Fold `event` (if any), then settle with every decision folded in memory.

    Returns every emitted event in order and the earliest wake-up time; a caller with a
    ledger records `event` and then the returned events, in that order."""
    if event is not None:
        apply(state, event)
    total = Plan()
    for decided in settle(state, config, now, policy or Policy(), max_rounds=max_rounds):
        for ev in decided.events:
            apply(state, ev)
        total.events.extend(decided.events)
        total.wake_at = earliest(total.wake_at, decided.wake_at)
    return total
