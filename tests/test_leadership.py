"""Leader election on a Lease: exactly one leader, clean hand-over, no early take-over, step-down on trouble.

Runs the elector with the official kubernetes client against an API-server double
(kmock) on 127.0.0.1, once versioning objects like a real API server and once
without resourceVersion (plain kmock), because the elector must be safe on both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.runtime.leadership import (
    ElectionConfigError,
    LeaseElector,
    LeaseRecord,
    Verdict,
    judge,
    parse_lease,
)
from reconciler.settings import Settings
from tests.support.kube_leases import ApiDouble

NS, NAME = "reconciler", "reconciler-leader"
TIMINGS = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.25}


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


class Candidate:
    """An elector plus the log of its callbacks, as the app would see them."""

    def __init__(self, api: ApiDouble, identity: str, **kw: Any) -> None:
        self.log: list[str] = []
        self.lock = threading.Lock()
        options = {**TIMINGS, **kw}
        self.elector = LeaseElector(
            api.client(),
            NS,
            NAME,
            identity,
            on_started_leading=lambda: self._record("started"),
            on_stopped_leading=lambda: self._record("stopped"),
            **options,
        )

    def _record(self, what: str) -> None:
        with self.lock:
            self.log.append(what)

    @property
    def leading(self) -> bool:
        return self.elector.is_leader


@pytest.fixture(params=["versioned", "unversioned"])
def api(request: pytest.FixtureRequest) -> ApiDouble:
    fixture = "lease_api" if request.param == "versioned" else "lease_api_unversioned"
    double: ApiDouble = request.getfixturevalue(fixture)
    return double


@pytest.fixture
def candidates(api: ApiDouble) -> Iterator[Callable[..., Candidate]]:
    made: list[Candidate] = []

    def make(identity: str, **kw: Any) -> Candidate:
        c = Candidate(api, identity, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.elector.stop(timeout=10)


def leaders(cands: list[Candidate]) -> list[str]:
    return [c.elector.identity for c in cands if c.leading]


# -- the protocol as a pure function ---------------------------------------------------------------


def test_nobody_may_take_a_lease_renewed_recently_even_if_its_timestamps_look_old() -> None:
    # renewTime from last year (a holder with a skewed clock): what counts is when *we* saw it change.
    held = LeaseRecord(holder="other", duration_seconds=15, renew_time="2020-01-01T00:00:00.000000Z")
    assert judge(held, "me", observed_at=100.0, now=110.0) is Verdict.WAIT
    assert judge(held, "me", observed_at=100.0, now=115.0) is Verdict.TAKE


def test_released_or_missing_lease_is_taken_at_once_and_own_lease_is_renewed() -> None:
    assert judge(None, "me", 0.0, 0.0) is Verdict.CREATE
    assert judge(LeaseRecord(holder="", duration_seconds=1), "me", 5.0, 5.0) is Verdict.TAKE
    assert judge(LeaseRecord(holder="me", duration_seconds=15), "me", 5.0, 5.0) is Verdict.RENEW


def test_lease_fields_missing_or_garbled_read_as_empty() -> None:
    record = parse_lease({"metadata": {"name": "x"}, "spec": {"leaseDurationSeconds": "soon"}})
    assert record == LeaseRecord()
    full = parse_lease(
        {
            "metadata": {"resourceVersion": "7"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 3},
        }
    )
    assert (full.holder, full.duration_seconds, full.transitions, full.resource_version) == ("a", 15, 3, "7")


@pytest.mark.parametrize(
    ("timings", "rule"),
    [
        ({"lease_duration": 10, "renew_deadline": 10, "retry_period": 2}, "must exceed renew_deadline"),
        ({"lease_duration": 15, "renew_deadline": 2, "retry_period": 2}, "must exceed retry_period"),
        ({"lease_duration": 15.5, "renew_deadline": 10, "retry_period": 2}, "whole number"),
        ({"lease_duration": 15, "renew_deadline": 10, "retry_period": 0}, "retry_period must be > 0"),
    ],
)
def test_timings_that_would_let_two_leaders_overlap_are_refused(timings: dict[str, float], rule: str) -> None:
    from kubernetes import client

    with pytest.raises(ElectionConfigError, match=rule):
        LeaseElector(client.ApiClient(), NS, NAME, "me", **timings)


# -- against the API-server double ----------------------------------------------------------------


def test_exactly_one_of_three_candidates_leads(candidates: Callable[..., Candidate], api: ApiDouble) -> None:
    cands = [candidates(f"replica-{i}") for i in range(3)]
    for c in cands:
        c.elector.start()
    assert wait_until(lambda: len(leaders(cands)) == 1)
    # Keep watching for a few renewal rounds: never two, never zero once settled.
    seen: set[str] = set()
    deadline = time.monotonic() + 4 * TIMINGS["retry_period"]
    while time.monotonic() < deadline:
        now_leading = leaders(cands)
        assert len(now_leading) <= 1, f"two leaders at once: {now_leading}"
        seen.update(now_leading)
        time.sleep(0.01)
    assert len(seen) == 1
    lease = api.lease(NS, NAME)
    assert lease is not None and lease["spec"]["holderIdentity"] in seen
    standbys = [c for c in cands if not c.leading]
    assert all(c.elector.role == "standby" for c in standbys)
    assert all(c.elector.leader_identity in seen for c in standbys)


def test_standby_takes_over_after_the_leader_dies_without_releasing(
    candidates: Callable[..., Candidate], api: ApiDouble
) -> None:
    first = candidates("first", release_on_stop=False)  # behaves like a killed process: no release
    first.elector.start()
    assert wait_until(lambda: first.leading)
    second = candidates("second")
    second.elector.start()
    assert wait_until(lambda: second.elector.role == "standby")
    # While the leader renews, the standby never takes over.
    assert not wait_until(lambda: second.leading, timeout=1.25 * TIMINGS["lease_duration"])
    first.elector.stop()
    lease = api.lease(NS, NAME)
    assert lease is not None and lease["spec"]["holderIdentity"] == "first"  # not released
    assert wait_until(lambda: second.leading, timeout=4 * TIMINGS["lease_duration"])
    lease = api.lease(NS, NAME)
    assert lease is not None and lease["spec"]["holderIdentity"] == "second"
    assert lease["spec"]["leaseTransitions"] >= 1


def test_stopping_releases_the_lease_for_the_standby(
    candidates: Callable[..., Candidate], api: ApiDouble
) -> None:
    first = candidates("first")
    first.elector.start()
    assert wait_until(lambda: first.leading)
    first.elector.stop()
    assert not first.leading
    assert first.log == ["started", "stopped"]
    lease = api.lease(NS, NAME)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ""
    assert lease["spec"]["leaseDurationSeconds"] == 1
    # A new candidate that has never seen the lease takes a released one at its first try.
    second = candidates("second", lease_duration=60, renew_deadline=10, retry_period=2)
    second.elector.start()
    assert wait_until(lambda: second.leading, timeout=5)


def test_leader_steps_down_when_it_cannot_renew(candidates: Callable[..., Candidate], api: ApiDouble) -> None:
    only = candidates("only")
    only.elector.start()
    assert wait_until(lambda: only.leading)
    api.set_down(True)
    assert wait_until(lambda: not only.leading, timeout=4 * TIMINGS["lease_duration"])
    # is_leader drops first (nothing may act as leader any more), then the callback runs
    assert wait_until(lambda: only.log == ["started", "stopped"]), only.log
    assert only.elector.role == "unknown" or only.elector.role == "standby"
    api.set_down(False)
    assert wait_until(lambda: only.leading, timeout=4 * TIMINGS["lease_duration"])
    assert wait_until(lambda: only.log == ["started", "stopped", "started"])


def test_leader_steps_down_at_once_when_someone_else_holds_the_lease(
    candidates: Callable[..., Candidate], api: ApiDouble
) -> None:
    from kubernetes import client

    only = candidates("only")
    only.elector.start()
    assert wait_until(lambda: only.leading)
    # An operator (or a split-brained peer) writes the lease.
    client.CoordinationV1Api(api.client()).patch_namespaced_lease(
        NAME,
        NS,
        {"spec": {"holderIdentity": "intruder", "renewTime": "2030-01-01T00:00:00.000000Z"}},
        _content_type="application/merge-patch+json",
    )
    assert wait_until(lambda: not only.leading, timeout=TIMINGS["renew_deadline"] * 3)
    assert only.elector.leader_identity == "intruder"
    assert wait_until(lambda: only.log == ["started", "stopped"]), only.log


def test_slow_start_callback_does_not_cost_the_lease(api: ApiDouble) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow_start() -> None:
        started.set()
        release.wait(timeout=10)  # e.g. replaying a long ledger

    elector = LeaseElector(api.client(), NS, NAME, "slow", on_started_leading=slow_start, **TIMINGS)
    elector.start()
    try:
        assert started.wait(timeout=10)
        assert not wait_until(lambda: not elector.is_leader, timeout=1.25 * TIMINGS["lease_duration"])
        lease = api.lease(NS, NAME)
        assert lease is not None and lease["spec"]["holderIdentity"] == "slow"
    finally:
        release.set()
        elector.stop(timeout=10)


# -- wiring from settings ---------------------------------------------------------------------------


def test_election_is_on_inside_a_pod_by_default_and_can_be_forced(tmp_path: Path) -> None:
    from reconciler.runtime.environment import Environment

    token = tmp_path / "token"
    token.write_text("t")
    pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOME": str(tmp_path)}

    def election(mode: str, environ: dict[str, str], token: Path = token) -> bool:
        return Environment.detect(Settings(leader_election=mode), environ, token=token).election

    assert election("auto", pod)
    assert not election("auto", {"HOME": str(tmp_path)})
    assert election("on", {"HOME": str(tmp_path)})
    assert not election("off", pod)


def test_one_rule_says_in_a_cluster_for_the_elector_and_the_runner(tmp_path: Path) -> None:
    """In a pod = KUBERNETES_SERVICE_HOST and the service account's token: the elector used to
    look at the variable alone, the runner at both."""
    from reconciler.runtime.environment import Environment

    pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOME": str(tmp_path)}
    without_token = Environment.detect(Settings(), pod, token=tmp_path / "none")
    assert not without_token.in_cluster and not without_token.election
    assert without_token.runner.name == "local"
    token = tmp_path / "token"
    token.write_text("t")
    inside = Environment.detect(Settings(), pod, token=token)
    assert inside.in_cluster and inside.election
    assert (inside.runner.name, inside.runner.reason) == ("kubernetes", "auto: running inside a cluster")


def test_settings_configure_the_lease_in_the_pods_namespace(tmp_path: Path) -> None:
    from kubernetes import client

    from reconciler.runtime.leadership import elector_from_settings
    from reconciler.settings import Settings

    ns_file = tmp_path / "namespace"
    ns_file.write_text("reconciler\n")
    settings = Settings(
        lease_duration=20, lease_renew_deadline=12, lease_retry_period=3, leader_identity="pod-a"
    )
    elector = elector_from_settings(settings, client.ApiClient(), namespace_file=ns_file)
    assert (elector.namespace, elector.name, elector.identity) == ("reconciler", "reconciler-leader", "pod-a")
    assert (elector.lease_duration, elector.renew_deadline, elector.retry_period) == (20, 12, 3)
    outside = elector_from_settings(Settings(), client.ApiClient(), namespace_file=tmp_path / "missing")
    assert outside.namespace == "keptn-jobs"  # no pod: falls back to the job namespace
    assert outside.identity  # host name plus a random suffix
    with pytest.raises(ElectionConfigError, match="must exceed renew_deadline"):
        elector_from_settings(Settings(lease_duration=5, lease_renew_deadline=10), client.ApiClient())
