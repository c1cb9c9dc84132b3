"""Engine overhead: a sequence of 50 tasks answered by an executor that does nothing.

The whole reconciler runs in-process (`App`, real git ledger, the control loop on
its thread, executors on the pool) on an upstream whose shipyard has one stage
with a 50-task sequence. A sequence is started by appending its `.triggered` (as
`reconciler trigger` does) and kicking the loop. A transition is the time from
one task's `.triggered` becoming a commit to the next task's: the executor's
`.started` and `.finished` appends, the loop waking, folding, planning and
appending the next `.triggered`. The ledger's part is the wall time of the appends
made within the transition.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from bench.harness import Budget, Clock, Derived, Figure, Result
from bench.inprocess import InstantExecutor, LedgerProbe, bench_settings, running_app
from bench.upstreamgen import BareUpstream
from reconciler.base.clock import utcnow
from reconciler.formats.events import KeptnEvent, derived_id, format_time

TITLE = "Engine overhead: time per task transition of a 50-task sequence, and the ledger's share"


def shipyard(tasks: int) -> bytes:
    lines = [
        "apiVersion: spec.keptn.sh/0.2.4",
        "kind: Shipyard",
        "metadata: {name: bench}",
        "spec:",
        "  stages:",
        "    - name: qa",
        "      sequences:",
        "        - name: long",
        "          tasks:",
    ]
    lines += [f"            - name: t{n:02d}" for n in range(1, tasks + 1)]
    return ("\n".join(lines) + "\n").encode()


def job_config(tasks: int) -> bytes:
    """An action for every task, so the upstream validates (the bench's executor answers instead)."""
    lines = ["apiVersion: v2", "actions:", "  - name: every task", "    events:"]
    lines += [f"      - name: sh.keptn.event.t{n:02d}.triggered" for n in range(1, tasks + 1)]
    lines += ["    tasks:", "      - name: nothing", "        image: busybox", '        cmd: ["true"]']
    return ("\n".join(lines) + "\n").encode()


def run(budget: Budget) -> Result:
    res = Result("engine", TITLE)
    clock = Clock(budget.deadline)
    tasks = budget.pick(50, 10)
    sequences = budget.pick(6, 2)
    transitions: list[float] = []
    appends: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        root = Path(tmp)
        up = BareUpstream(root / "upstream.git")
        up.commit(
            "main", {"shipyard.yaml": shipyard(tasks), "metadata.yaml": b"projectName: bench\n"}, "shipyard"
        )
        up.commit(
            "qa",
            {"web/metadata.yaml": b"ServiceName: web\n", "job/config.yaml": job_config(tasks)},
            "qa: web",
        )
        probe = LedgerProbe()
        settings = bench_settings(
            upstream=str(up.path), data_dir=root / "data", watch=False, poll_interval=3600
        )
        with running_app(settings, [InstantExecutor()], probes=(probe,)) as app:
            for n in range(sequences):
                context = derived_id("bench-engine", str(n))
                start = len(probe)
                app.ledger.append(
                    KeptnEvent(
                        id=derived_id("bench-engine-trigger", str(n)),
                        source="bench",
                        type="sh.keptn.event.qa.long.triggered",
                        shkeptncontext=context,
                        data={"project": "bench", "stage": "qa", "service": "web"},
                        time=format_time(utcnow()),
                    )
                )
                app.controller.kick()
                done = probe.wait_for(
                    lambda e, c=context: (
                        e.type == "sh.keptn.event.qa.long.finished" and e.shkeptncontext == c
                    ),  # type: ignore[misc]
                    timeout=120.0,
                    start=start,
                )
                if done is None:
                    raise RuntimeError(f"sequence {n} did not finish within 120 s")
                if done.event.result != "pass":
                    raise RuntimeError(
                        f"sequence {n} ended {done.event.result}: {done.event.data.get('message')}"
                    )
                seen = [a for a in probe.seen[start:] if a.event.shkeptncontext == context]
                triggers = [
                    a
                    for a in seen
                    if a.event.type.endswith(".triggered") and a.event.type.startswith("sh.keptn.event.t")
                ]
                if len(triggers) != tasks:
                    raise RuntimeError(f"sequence {n}: {len(triggers)} task triggers, expected {tasks}")
                for before, after in itertools.pairwise(triggers):
                    transitions.append(after.at - before.at)
                    window = [a for a in seen if before.at < a.at <= after.at]
                    appends.append(sum(a.seconds for a in window))
                if not clock.left():
                    break
    res.add(
        Figure(
            "Ledger appends within a transition",
            "ms",
            [s * 1000 for s in appends],
            note="started + finished + next triggered: 3 appends",
        )
    )
    res.add(
        Figure(
            "task transition (trigger -> next trigger)",
            "ms",
            [s * 1000 for s in transitions],
            baseline="Ledger appends within a transition",
            note=f"{tasks}-task sequences, {len(transitions)} transitions",
        )
    )
    if transitions:
        res.derived.append(
            Derived(
                "share of a transition spent in Ledger.append",
                sum(appends) / sum(transitions),
                "sum of appends / sum of transitions",
            )
        )
    return res
