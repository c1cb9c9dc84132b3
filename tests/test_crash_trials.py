"""Crash trials: the tutorial's delivery survives SIGKILL at any point, as if never interrupted.

Each trial runs `reconciler run --runner local` as a real process on the tutorial's
local profile (localhelm deploys, locust load tests, evaluation), kills it with SIGKILL
according to a plan, restarts it on the same data directory, and checks (see
`tests/support/crash.py`): the deliveries complete; no event id and no logical event is
recorded twice; no job is launched and no helm command run twice; the ledger equals an
uninterrupted run's in ids, order, types, sources, links, results and folded state.

Most trials evaluate without an SLO (Keptn's "no SLO configured" pass: the evaluation
still records its whole get-sli conversation, so a kill can land inside it) because
that keeps a delivery to about six seconds; the Prometheus trials evaluate a small SLO
against a real Prometheus started once per session, so a kill can also land between a
recorded measurement window and its verdict.

The normal suite runs a handful of trials with fixed plans aimed at the windows that
matter (a job running, a sequence just finished, inside a ledger append, mid-poll,
mid-evaluation). `RECONCILER_LONG_TESTS=1` adds at least 100 random trials
(`RECONCILER_CRASH_TRIALS`, `RECONCILER_CRASH_SEED`) and writes their figures to
`RECONCILER_CRASH_REPORT` (default: docs/reliability/crash-trials.json).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from reconciler.controller.loop import Controller
from reconciler.core.planning import Policy
from reconciler.demo.prometheus import PrometheusServer
from reconciler.executors.approval import ApprovalExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.formats.shipyard import load_shipyard
from reconciler.ledger.gitledger import Ledger
from tests.support.context import MemoryContext
from tests.support.crash import (
    NO_SLO,
    PROMETHEUS,
    REPO_ROOT,
    Kill,
    Ports,
    Trial,
    Variant,
    check,
    compare,
    random_kills,
    run_trial,
)
from tests.support.engine import StaticConfig, trigger

pytestmark = pytest.mark.timeout(600)


# ----------------------------------------------------------------------------- the engine's writes


CHAINED = """
apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: s}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - name: approval
              properties: {pass: automatic, warning: automatic}
    - name: production
      sequences:
        - name: delivery
          triggeredOn: [{event: qa.delivery.finished}]
          tasks:
            - name: approval
              properties: {pass: automatic, warning: automatic}
"""


class Killed(BaseException):
    """The process died at this point: nothing after it ran (not an Exception a loop may catch)."""


class DyingLedger(Ledger):
    """The real ledger, whose process dies the first time it is asked to record a given type.

    A SIGKILL anywhere inside a write loses the whole write (the ref moves once at its
    end), so dying before recording anything of the write is what a kill does."""

    def __init__(self, path: Path, dies_on: str) -> None:
        super().__init__(path)
        self.dies_on = dies_on
        self.died = False

    def extend(self, events: Iterable[KeptnEvent]) -> list[bool]:
        batch = list(events)
        if not self.died and any(e.type == self.dies_on for e in batch):
            self.died = True
            raise Killed(self.dies_on)
        return super().extend(batch)


class LedgerContext(MemoryContext):
    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def emit(self, event: KeptnEvent) -> None:
        self.ledger.append(event)


def controller_on(ledger: Ledger) -> Controller:
    return Controller(
        ledger=ledger,
        config=StaticConfig({"m": load_shipyard(CHAINED)}, "m"),
        executors=[ApprovalExecutor()],
        context_factory=lambda: LedgerContext(ledger),
        policy=Policy(),
    )


def settle(ctrl: Controller) -> None:
    for _ in range(30):
        before = len(ctrl.ledger.events())
        ctrl.step()
        ctrl.drain()
        if len(ctrl.ledger.events()) == before and not ctrl.running:
            return


def test_a_kill_between_a_finished_sequence_and_the_one_it_chains_to_loses_neither(tmp_path: Path) -> None:
    path = tmp_path / "ledger.git"
    dying = DyingLedger(path, dies_on="sh.keptn.event.production.delivery.triggered")
    dying.append(trigger("qa", "delivery", result="pass"))
    with pytest.raises(Killed):
        settle(controller_on(dying))
    # restarted on the same ledger: the qa sequence either finished and chained, or neither
    ledger = Ledger(path)
    types = [e.type for e in ledger.events()]
    assert ("sh.keptn.event.qa.delivery.finished" in types) == (
        "sh.keptn.event.production.delivery.triggered" in types
    ), types
    settle(controller_on(ledger))
    types = [e.type for e in Ledger(path).events()]
    assert types.count("sh.keptn.event.qa.delivery.finished") == 1
    assert types.count("sh.keptn.event.production.delivery.triggered") == 1
    assert types[-1] == "sh.keptn.event.production.delivery.finished"


# ----------------------------------------------------------------------------- trials, normal suite


class References:
    """The uninterrupted run of each variant, made once per module on first use."""

    def __init__(self, root: Path, ports: Ports) -> None:
        self.root = root
        self.ports = ports
        self.runs: dict[str, Trial] = {}
        self._lock = threading.Lock()

    def of(self, variant: Variant, prometheus_url: str | None = None) -> Trial:
        with self._lock:
            if variant.name not in self.runs:
                run = run_trial(
                    self.root,
                    f"reference-{variant.name}",
                    variant,
                    self.ports,
                    (),
                    prometheus_url=prometheus_url,
                )
                problems = check(run)
                assert not problems, f"the uninterrupted run itself is wrong: {problems}; {run.describe()}"
                self.runs[variant.name] = run
            return self.runs[variant.name]


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, crash_ports: Ports) -> References:
    return References(tmp_path_factory.mktemp("crash-references"), crash_ports)


@pytest.fixture
def trial_root(tmp_path: Path) -> Path:
    return tmp_path


def assert_survived(reference: Trial, trial: Trial) -> None:
    problems = check(trial) + compare(reference, trial)
    assert not problems, "\n".join([trial.describe(), *problems])


def test_uninterrupted_delivery_runs_each_job_once_and_passes_both_stages(references: References) -> None:
    run = references.of(NO_SLO)
    results = {e.type: e.data.get("result") for e in run.events if e.type.endswith("delivery.finished")}
    assert results == {
        "sh.keptn.event.qa.delivery.finished": "pass",
        "sh.keptn.event.production.delivery.finished": "pass",
    }
    jobs = sorted(
        str(line["task"]) + "@" + next(str(e.stage) for e in run.events if e.id == line["event"])
        for line in run.launches
    )
    assert jobs == ["helm upgrade@production", "helm upgrade@qa", "locust@production", "locust@qa"]
    assert [c["argv"][:1] + c["argv"][4:5] for c in run.helm_calls] == [
        ["upgrade", "fulltour-qa"],
        ["upgrade", "fulltour-production"],
    ]


PLANS = {
    "while-jobs-run": [
        Kill("event", event="sh.keptn.event.je-deployment.started"),
        Kill("event", event="sh.keptn.event.je-test.started"),
        Kill("event", event="sh.keptn.event.je-test.started"),
    ],
    "at-sequence-boundaries": [
        Kill("event", event="sh.keptn.event.qa.delivery.triggered"),
        Kill("event", event="sh.keptn.event.qa.delivery.finished"),
        Kill("event", event="sh.keptn.event.je-test.triggered"),
    ],
    "inside-ledger-writes-and-polls": [
        Kill("crashpoint", point="poll.after-fetch:1"),
        Kill("crashpoint", point="ledger.after-commit-objects:2"),
        Kill("crashpoint", point="ledger.after-blob:4"),
        Kill("crashpoint", point="ledger.after-ref:6"),
    ],
    "random-delays-and-commits": [
        *random_kills(random.Random(20261123), most=4),
        Kill("delay", delay=2.5),
        Kill("commits", commits=5),
    ],
}


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_delivery_killed_at_any_point_ends_as_if_never_interrupted(
    plan: str, references: References, crash_ports: Ports, trial_root: Path
) -> None:
    reference = references.of(NO_SLO)
    trial = run_trial(trial_root, plan, NO_SLO, crash_ports, PLANS[plan])
    # the aimed plans land every kill; the random one at least one before the delivery ends
    wanted = 1 if plan.startswith("random") else len(PLANS[plan])
    assert len(trial.kills_done) >= wanted, f"not every planned kill landed: {trial.describe()}"
    assert_survived(reference, trial)


def test_evaluation_against_prometheus_killed_mid_way_keeps_its_window_and_verdict(
    references: References, crash_ports: Ports, crash_prometheus: PrometheusServer, trial_root: Path
) -> None:
    reference = references.of(PROMETHEUS, crash_prometheus.url)
    verdicts = [
        e.data["evaluation"]["result"] for e in reference.events if e.type.endswith("evaluation.finished")
    ]
    assert verdicts == ["pass", "pass"], reference.describe()
    kills = [
        Kill("event", event="sh.keptn.event.get-sli.triggered"),
        Kill("event", event="sh.keptn.event.evaluation.started"),
    ]
    trial = run_trial(
        trial_root, "mid-evaluation", PROMETHEUS, crash_ports, kills, prometheus_url=crash_prometheus.url
    )
    assert len(trial.kills_done) == 2, trial.describe()
    assert_survived(reference, trial)


# ----------------------------------------------------------------------------- the long run


def long_report_path() -> Path:
    return Path(
        os.environ.get(
            "RECONCILER_CRASH_REPORT", str(REPO_ROOT / "docs" / "reliability" / "crash-trials.json")
        )
    )


@pytest.fixture
def long_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("crash-long")


@pytest.mark.slow
@pytest.mark.timeout(6 * 3600)
def test_hundred_random_crash_trials_all_end_as_if_never_interrupted(
    references: References, crash_ports: Ports, crash_prometheus: PrometheusServer, long_root: Path
) -> None:
    count = max(100, int(os.environ.get("RECONCILER_CRASH_TRIALS", "100")))
    seed = int(os.environ.get("RECONCILER_CRASH_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    failures: list[str] = []
    began = time.monotonic()
    for n in range(count):
        variant = PROMETHEUS if n % 10 == 9 else NO_SLO
        url = crash_prometheus.url if variant is PROMETHEUS else None
        reference = references.of(variant, url)
        kills = random_kills(rng)
        name = f"t{n:03d}-{variant.name}"
        try:
            trial = run_trial(long_root, name, variant, crash_ports, kills, prometheus_url=url)
            problems = check(trial) + compare(reference, trial)
            summary = trial.describe()
            killed = len(trial.kills_done)
        except AssertionError as exc:  # hung or exited on its own: a failed trial, keep going
            problems, summary, killed = [str(exc)], name, 0
        rows.append(
            {"trial": name, "passed": not problems, "kills": killed, "summary": summary, "problems": problems}
        )
        print(("PASS " if not problems else "FAIL ") + summary, *problems, sep="\n    ", flush=True)
        if problems:
            failures.append("\n".join([summary, *problems]))
    report = {
        "command": "RECONCILER_LONG_TESTS=1 python -m pytest tests/test_crash_trials.py -q -s "
        "-k hundred_random",
        "seed": seed,
        "trials": len(rows),
        "passed": sum(1 for r in rows if r["passed"]),
        "kills": sum(int(str(r["kills"])) for r in rows),
        "prometheus_trials": sum(1 for r in rows if "prometheus" in str(r["trial"])),
        "seconds": round(time.monotonic() - began, 1),
        "rows": rows,
    }
    path = long_report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"crash trials: {report['passed']}/{report['trials']} passed, {report['kills']} kills survived, "
        f"seed {seed}, {report['seconds']}s; report {path}",
        flush=True,
    )
    assert not failures, "\n\n".join(failures)
