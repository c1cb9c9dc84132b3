"""The reconciler's /metrics: what it shows after sequences run, after a restart, and to a real Prometheus.

Sequences run through the real engine (`EngineHarness`: the pure shipyard
controller with scripted executors answering as job-executor-service,
lighthouse-service and approval-service), on the tutorial's shipyard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from reconciler.formats.events import KeptnEvent
from reconciler.runtime.metrics import METRIC_DOCS, Metrics
from tests.support.engine import EngineHarness, answer, trigger
from tests.support.memledger import MemoryLedger
from tests.support.prometheus import MetricsEndpoint, PrometheusFactory

SHIPYARD = (
    Path(__file__).resolve().parent.parent / "example-upstream" / "main" / "shipyard.yaml"
).read_text()


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delivery_harness(
    evaluation_result: str = "pass", step: timedelta = timedelta(seconds=30)
) -> EngineHarness:
    """The tutorial's shipyard with executors that take `step` each."""
    h = EngineHarness(SHIPYARD)

    def takes_time(
        source: str, result: str = "pass", **extra: object
    ) -> Callable[[KeptnEvent], list[KeptnEvent]]:
        def fn(ev: KeptnEvent) -> list[KeptnEvent]:
            started = answer(ev, "started", source, h.now, status="succeeded")
            h.now += step
            return [
                started,
                answer(ev, "finished", source, h.now, status="succeeded", result=result, **extra),
            ]

        return fn

    h.on("je-deployment", takes_time("job-executor-service"))
    h.on("je-test", takes_time("job-executor-service"))
    h.on("approval", takes_time("approval-service"))
    h.on("evaluation", takes_time("lighthouse-service", evaluation_result, evaluation={"score": 80}))
    return h


def test_a_delivery_moves_sequence_task_evaluation_and_job_counters() -> None:
    h = delivery_harness(evaluation_result="warning")
    metrics = Metrics()
    metrics.observe_engine(h.state)
    before = scrape(metrics)
    assert (
        value(
            before, "reconciler_sequences_finished_total", stage="qa", sequence="delivery", result="warning"
        )
        == 0
    )

    h.run(trigger("qa", "delivery", configurationChange={"values": {"image": "x:1"}}))
    metrics.observe_engine(h.state)
    after = scrape(metrics)

    # qa delivery finished with the evaluation's warning; production ran (warning passes the chain).
    assert (
        value(after, "reconciler_sequences_finished_total", stage="qa", sequence="delivery", result="warning")
        == 1
    )
    assert (
        value(
            after,
            "reconciler_sequences_finished_total",
            stage="production",
            sequence="delivery",
            result="warning",
        )
        == 1
    )
    assert value(after, "reconciler_evaluations_total", result="warning") == 2
    # je-deployment and je-test in both stages: four job runs.
    assert value(after, "reconciler_job_runs_total", result="pass") == 4
    assert value(after, "reconciler_task_duration_seconds_count", task="je-test", result="pass") == 2
    assert value(after, "reconciler_task_duration_seconds_sum", task="je-test", result="pass") == 60.0
    assert (
        value(after, "reconciler_task_duration_seconds_bucket", task="je-test", result="pass", le="10.0") == 0
    )
    assert (
        value(after, "reconciler_task_duration_seconds_bucket", task="je-test", result="pass", le="30.0") == 2
    )
    assert value(after, "reconciler_sequences", state="finished") == 2
    assert value(after, "reconciler_sequences", state="started") == 0


def test_counters_after_a_restart_continue_from_the_ledger() -> None:
    h = delivery_harness()
    h.run(trigger("qa", "delivery", context="ctx-a"))
    live = Metrics()
    live.observe_engine(h.state)

    restarted = Metrics()  # a new process: nothing but the replayed ledger
    restarted.observe_engine(h.replayed())
    derived = {
        k: v
        for k, v in scrape(live).items()
        if not k[0].startswith(("reconciler_upstream", "reconciler_ledger", "reconciler_webhook"))
    }
    assert derived == {
        k: v
        for k, v in scrape(restarted).items()
        if not k[0].startswith(("reconciler_upstream", "reconciler_ledger", "reconciler_webhook"))
    }
    assert (
        value(
            scrape(restarted),
            "reconciler_sequences_finished_total",
            stage="qa",
            sequence="delivery",
            result="pass",
        )
        == 1
    )


def test_each_finished_sequence_counts_once_however_often_it_is_observed() -> None:
    h = delivery_harness()
    metrics = Metrics()
    h.run(trigger("qa", "delivery", context="ctx-a"))
    for _ in range(3):
        metrics.observe_engine(h.state)
    assert (
        value(
            scrape(metrics),
            "reconciler_sequences_finished_total",
            stage="qa",
            sequence="delivery",
            result="pass",
        )
        == 1
    )
    h.run(trigger("qa", "delivery", context="ctx-b"))
    metrics.observe_engine(h.state)
    assert (
        value(
            scrape(metrics),
            "reconciler_sequences_finished_total",
            stage="qa",
            sequence="delivery",
            result="pass",
        )
        == 2
    )


def test_counters_do_not_drop_when_old_executions_are_forgotten() -> None:
    h = delivery_harness()
    metrics = Metrics()
    h.run(trigger("qa", "delivery", context="ctx-a"))
    h.run(trigger("qa", "delivery", context="ctx-b"))
    metrics.observe_engine(h.state)
    counted = scrape(metrics)
    h.state.compact(keep_finished=0)
    h.run(trigger("qa", "delivery", context="ctx-c"))
    metrics.observe_engine(h.state)
    now = scrape(metrics)
    assert (
        value(now, "reconciler_sequences_finished_total", stage="qa", sequence="delivery", result="pass") == 3
    )
    for key, count in counted.items():
        if key[0].endswith(("_total", "_count", "_bucket")):
            assert now.get(key, 0.0) >= count, key


def test_queue_length_counts_sequences_waiting_behind_another_and_returns_to_zero() -> None:
    h = EngineHarness(SHIPYARD)  # nobody answers: the first delivery stays on its first task
    metrics = Metrics()
    h.run(trigger("qa", "delivery", context="ctx-a"))
    h.run(trigger("qa", "delivery", context="ctx-b"))
    h.run(trigger("qa", "delivery", context="ctx-c"))
    metrics.observe_engine(h.state)
    samples = scrape(metrics)
    assert (
        value(samples, "reconciler_queue_length", project="fulltour", stage="qa", service="helloservice") == 2
    )
    assert value(samples, "reconciler_sequences", state="started") == 1
    assert value(samples, "reconciler_sequences", state="waiting") == 2

    h.advance(timedelta(hours=3))  # every task times out; each waiting delivery gets its turn and times out
    for _ in range(10):
        h.advance(timedelta(hours=3))
    metrics.observe_engine(h.state)
    samples = scrape(metrics)
    assert (
        "reconciler_queue_length",
        (("project", "fulltour"), ("service", "helloservice"), ("stage", "qa")),
    ) in samples
    assert (
        value(samples, "reconciler_queue_length", project="fulltour", stage="qa", service="helloservice") == 0
    )
    assert (
        value(samples, "reconciler_sequences_finished_total", stage="qa", sequence="delivery", result="fail")
        == 3
    )


def test_standby_exports_no_engine_figures_until_it_leads() -> None:
    metrics = Metrics()
    metrics.set_leader(False)
    names = {k[0] for k in scrape(metrics)}
    assert "reconciler_sequences_finished_total" not in names
    assert value(scrape(metrics), "reconciler_leader") == 0
    h = delivery_harness()
    h.run(trigger("qa", "delivery"))
    metrics.set_leader(True)
    metrics.observe_engine(h.state)
    assert value(scrape(metrics), "reconciler_leader") == 1
    metrics.forget_engine()
    assert "reconciler_sequences" not in {k[0] for k in scrape(metrics)}


def test_upstream_fetches_record_duration_failures_and_last_success() -> None:
    metrics = Metrics()
    with metrics.fetching():
        pass
    success = value(scrape(metrics), "reconciler_upstream_last_success_timestamp_seconds")
    assert abs(success - time.time()) < 60
    with pytest.raises(OSError, match="unreachable"), metrics.fetching():
        raise OSError("upstream unreachable")
    samples = scrape(metrics)
    assert value(samples, "reconciler_upstream_fetch_failures_total") == 1
    assert value(samples, "reconciler_upstream_fetch_duration_seconds_count") == 2
    assert value(samples, "reconciler_upstream_last_success_timestamp_seconds") == success


def test_a_wrapped_fetch_is_timed_and_its_errors_counted_and_passed_on() -> None:
    metrics = Metrics()
    answers = iter([{"main": "abc"}, OSError("connection refused")])

    def fetch() -> dict[str, str]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    timed = metrics.timed_fetch(fetch)
    assert timed() == {"main": "abc"}
    with pytest.raises(OSError, match="refused"):
        timed()
    samples = scrape(metrics)
    assert value(samples, "reconciler_upstream_fetch_duration_seconds_count") == 2
    assert value(samples, "reconciler_upstream_fetch_failures_total") == 1
    assert value(samples, "reconciler_upstream_last_success_timestamp_seconds") > 0


def test_ledger_appends_are_timed_and_pass_through() -> None:
    metrics = Metrics()
    ledger = metrics.timed_ledger(MemoryLedger())
    event = trigger("qa", "delivery")
    assert ledger.append(event) is True
    assert ledger.append(event) is False  # the ledger's own dedup still answers
    assert [e.id for e in ledger.events()] == [event.id]
    assert value(scrape(metrics), "reconciler_ledger_append_duration_seconds_count") == 2


def test_every_documented_metric_is_exported_and_named_by_convention() -> None:
    h = delivery_harness()
    h.run(trigger("qa", "delivery"))
    metrics = Metrics()
    metrics.observe_engine(h.state)
    metrics.record_fetch(0.1, ok=True)
    metrics.set_leader(True)
    body, _ = metrics.render()
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    for name, (kind, _labels, _help) in METRIC_DOCS.items():
        assert name.startswith("reconciler_")
        base = name.removesuffix("_total") if kind == "counter" else name
        assert families.get(base) == kind, (name, families.get(base))
        if kind == "counter":
            assert name.endswith("_total")
        if "duration" in name or "timestamp" in name:
            assert name.endswith("_seconds")


def test_real_prometheus_sees_the_counters_move_after_a_sequence_runs(
    prometheus_factory: PrometheusFactory, metrics_endpoint_factory: Callable[..., MetricsEndpoint]
) -> None:
    metrics = Metrics()
    h = delivery_harness(evaluation_result="pass")
    metrics.set_leader(True)
    metrics.observe_engine(h.state)
    endpoint = metrics_endpoint_factory(metrics.registry)
    server = prometheus_factory.start(
        scrape_targets=[endpoint.target], job="reconciler", scrape_interval="1s"
    )
    server.wait_for('reconciler_leader{job="reconciler"} == 1', deadline=30)
    assert not server.query("reconciler_sequences_finished_total")["result"]

    h.run(trigger("qa", "delivery", context="ctx-prom"))
    metrics.observe_engine(h.state)

    data = server.wait_for(
        'reconciler_sequences_finished_total{stage="qa",sequence="delivery",result="pass"}', deadline=30
    )
    assert float(data["result"][0]["value"][1]) == 1
    data = server.wait_for('sum(reconciler_evaluations_total{result="pass"})', deadline=30)
    assert float(data["result"][0]["value"][1]) == 2
    data = server.wait_for('sum(reconciler_task_duration_seconds_count{task="evaluation"})', deadline=30)
    assert float(data["result"][0]["value"][1]) == 2
    # The scrape endpoint is the same exposition the API serves at /metrics.
    assert requests.get(endpoint.url, timeout=5).text == metrics.render()[0].decode()


def test_every_metric_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name, (kind, labels, _help) in METRIC_DOCS.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} missing from README.md's Metrics section"
        assert f"| {kind} |" in row
        for label in filter(None, (part.strip() for part in labels.split(","))):
            assert f"`{label}`" in row, (name, label)
