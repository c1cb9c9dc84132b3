"""Commit-to-deploy: a changed <service>/values.yaml on a stage branch becomes a delivery trigger."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pygit2

from reconciler.core.deploytrigger import delivery_event, delivery_triggers, load_values, plan_deliveries
from reconciler.core.observations import CommitInfo
from reconciler.formats.events import EventType
from reconciler.upstream.files import GitFiles
from reconciler.upstream.poll import diff_branches
from tests.support.events import T0
from tests.support.gitserver import UpstreamRepo
from tests.support.upstreamsync import UpstreamSync

IMAGE = "ghcr.io/podtato-head/podtatoserver"


def commit(sha: str, *paths: str, origin: bool = False) -> CommitInfo:
    return CommitInfo(
        sha=sha * 40 if len(sha) == 1 else sha,
        time=datetime(2024, 5, 1, tzinfo=UTC),
        paths=list(paths),
        trailers={"Reconciler-Origin": "remediation"} if origin else {},
    )


def test_the_newest_commit_touching_each_values_file_is_delivered() -> None:
    commits = [
        commit("a", "helloservice/values.yaml"),
        commit("b", "helloservice/slo.yaml", "other/values.yaml"),
        commit("c", "helloservice/values.yaml", "README.md"),
        commit("d", "helloservice/job/config.yaml", "nested/deep/values.yaml", "values.yaml"),
    ]
    assert plan_deliveries(commits) == {"helloservice": "c" * 40, "other": "b" * 40}


def test_the_reconcilers_own_commits_never_trigger() -> None:
    assert plan_deliveries([commit("a", "svc/values.yaml", origin=True)]) == {}
    # a person's commit after the reconciler's: deliver the person's
    assert plan_deliveries([commit("a", "svc/values.yaml", origin=True), commit("b", "svc/values.yaml")]) == {
        "svc": "b" * 40
    }
    # the reconciler wrote last: its write is the current state, nothing to deliver
    assert (
        plan_deliveries([commit("a", "svc/values.yaml"), commit("b", "svc/values.yaml", origin=True)]) == {}
    )


def test_the_event_is_shaped_like_keptn_trigger_delivery() -> None:
    sha = "f" * 40
    event = delivery_event(
        project="fulltour",
        stage="qa",
        service="helloservice",
        commit=sha,
        values={"image": f"{IMAGE}:v0.1.2"},
        now=T0,
    )
    assert event.type == "sh.keptn.event.qa.delivery.triggered"
    assert EventType.parse(event.type) is not None and event.etype and event.etype.sequence == "delivery"
    assert event.source == "reconciler-upstream" and event.gitcommitid == sha
    assert event.data == {
        "project": "fulltour",
        "stage": "qa",
        "service": "helloservice",
        "configurationChange": {"values": {"image": f"{IMAGE}:v0.1.2"}},
        "deployment": {"deploymentURIsLocal": None, "deploymentstrategy": ""},
    }
    again = delivery_event(
        project="fulltour", stage="qa", service="helloservice", commit=sha, values={}, now=T0
    )
    assert again.id == event.id and again.shkeptncontext == event.shkeptncontext  # a re-poll records once
    other = delivery_event(project="fulltour", stage="qa", service="other", commit=sha, values={}, now=T0)
    assert other.id != event.id


def test_values_keep_every_key_and_a_bad_file_is_a_located_problem() -> None:
    values = load_values("image: x/y:1\nreplicaCount: 2\nresources: {cpu: 1}\n", "svc/values.yaml")
    assert values.model_dump() == {"image": "x/y:1", "replicaCount": 2, "resources": {"cpu": 1}}
    files = {("b" * 40, "svc/values.yaml"): b"image: 'has space'\n"}
    events, problems = delivery_triggers(
        [commit("b", "svc/values.yaml")], project="p", stage="qa", read=lambda c, p: files.get((c, p)), now=T0
    )
    assert events == [] and problems[0].file == "svc/values.yaml" and problems[0].line == 1
    assert problems[0].branch == "qa"


def test_a_values_commit_on_a_stage_branch_triggers_that_stages_delivery(upstream_sync: UpstreamSync) -> None:
    up = upstream_sync.upstream
    sha = up.commit("qa", {"helloservice/values.yaml": f"image: {IMAGE}:v0.1.2\n"}, "Deploy v0.1.2")
    recorded = upstream_sync.poll()
    assert [e.type for e in recorded] == [
        "sh.keptn.event.qa.delivery.triggered",
        "reconciler.upstream.accepted",
    ]
    trigger = recorded[0]
    assert trigger.gitcommitid == sha
    assert trigger.data["configurationChange"] == {"values": {"image": f"{IMAGE}:v0.1.2"}}
    assert trigger.data["project"] == "fulltour" and trigger.data["service"] == "helloservice"
    # the pinned commit serves the sequence's files even after the branch moves on
    up.commit("qa", {"helloservice/slo.yaml": "broken: [\n"}, "oops")
    upstream_sync.poll()
    assert upstream_sync.mirror.files().read(
        "qa", "helloservice/values.yaml", commit=trigger.gitcommitid
    ) == (f"image: {IMAGE}:v0.1.2\n".encode())


def test_several_commits_between_polls_yield_one_trigger_for_the_newest(upstream_sync: UpstreamSync) -> None:
    up = upstream_sync.upstream
    up.commit("qa", {"helloservice/values.yaml": f"image: {IMAGE}:v0.1.2\n"}, "v0.1.2")
    up.commit(
        "qa", {"helloservice/slo.yaml": (up_read(up, "qa", "helloservice/slo.yaml") + b"\n")}, "slo tweak"
    )
    newest = up.commit("qa", {"helloservice/values.yaml": f"image: {IMAGE}:v0.1.3\n"}, "v0.1.3")
    up.commit(
        "qa",
        {"helloservice/locust/locust.conf": up_read(up, "qa", "helloservice/locust/locust.conf") + b"\n"},
    )
    triggers = [e for e in upstream_sync.poll() if e.type.endswith(".delivery.triggered")]
    assert len(triggers) == 1
    assert triggers[0].gitcommitid == newest
    assert triggers[0].data["configurationChange"]["values"]["image"] == f"{IMAGE}:v0.1.3"


def test_a_commit_by_the_reconciler_itself_never_retriggers(upstream_sync: UpstreamSync) -> None:
    up = upstream_sync.upstream
    up.commit(
        "production",
        {"helloservice/values.yaml": f"image: {IMAGE}:v0.1.1\nreplicaCount: 2\n"},
        "Scale up helloservice\n\nReconciler-Origin: remediation\n",
        author=pygit2.Signature("reconciler", "reconciler@localhost", 1_800_000_000, 0),
    )
    recorded = upstream_sync.poll()
    assert [e.type for e in recorded] == ["reconciler.upstream.accepted"]


def test_no_trigger_when_the_values_are_back_to_what_is_served(upstream_sync: UpstreamSync) -> None:
    up = upstream_sync.upstream
    original = up_read(up, "qa", "helloservice/values.yaml")
    up.commit("qa", {"helloservice/values.yaml": f"image: {IMAGE}:broken\n"}, "try")
    up.commit("qa", {"helloservice/values.yaml": original}, "revert")
    assert [e.type for e in upstream_sync.poll()] == ["reconciler.upstream.accepted"]


def test_the_first_accepted_commit_is_adopted_not_deployed(upstream_sync: UpstreamSync) -> None:
    # the fixture's first poll accepted qa and production, each with a values.yaml
    assert not any(t.endswith(".triggered") for t in upstream_sync.types())


def up_read(up: UpstreamRepo, branch: str, path: str) -> bytes:
    data = GitFiles(up.path).read(branch, path)
    assert data is not None
    return data


def test_a_crash_after_any_prefix_of_a_polls_events_still_records_each_once(
    tmp_path: Path, example_upstream: Path
) -> None:
    """Callers may append a poll's events one by one; dying after any of them loses nothing."""
    for k in range(4):
        up = UpstreamRepo(tmp_path / f"up-{k}.git")
        up.seed_from_directory(example_upstream)
        sync = UpstreamSync(up, tmp_path / f"data-{k}")
        sync.poll()
        up.commit("qa", {"helloservice/values.yaml": f"image: {IMAGE}:v0.1.2\n"}, "Deploy v0.1.2")
        up.commit("production", {"helloservice/values.yaml": f"image: {IMAGE}:v0.1.2\n"}, "Deploy v0.1.2")
        tips = sync.mirror.fetch()
        events = sync.store.decide(diff_branches(sync.mirror.repo, sync.store.baseline(), tips))
        assert len(events) == 4
        for event in events[:k]:  # appended one by one, then the process died
            sync.ledger.append(event)
        sync.start()
        sync.poll()
        recorded = [e.type for e in sync.ledger.events()][3:]
        assert sorted(recorded) == sorted(e.type for e in events), k
