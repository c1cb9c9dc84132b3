"""SLO scoring: lighthouse's verdict for the tutorial SLO against 10 previous evaluations (pure).

The tutorial's `qa/helloservice/slo.yaml` with its comparison widened to
`several_results` x 10 (the tutorial compares with one result; ten makes the
comparison do ten times the work), four SLI values, and ten previous
`evaluation.finished` blocks as the ledger holds them. One scoring is
`evaluate(...)` plus rendering Keptn's `data.evaluation` block.

Baseline: decoding the inputs from their JSON (the `get-sli.finished` event and
the ten previous `evaluation.finished` events) with `json.loads` alone: the least
any scorer reading Keptn events must do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from bench.harness import Budget, Clock, Figure, Result
from bench.ledgergen import Conversations
from bench.upstreamgen import EXAMPLE
from reconciler.core.scoring import PreviousEvaluation, SLIAnswer, evaluate
from reconciler.formats.events import KeptnEvent
from reconciler.formats.slo import load_slo

TITLE = "SLO scorings per second (tutorial SLO, 10 previous evaluations) vs decoding the inputs"
BASE = "json.loads of the inputs"


def tutorial_slo_ten() -> bytes:
    raw = (EXAMPLE / "qa" / "helloservice" / "slo.yaml").read_bytes()
    ten = raw.replace(
        b"compare_with: single_result", b"compare_with: several_results\n  number_of_comparison_results: 10"
    )
    if ten == raw:
        raise RuntimeError("the tutorial slo.yaml has no `compare_with: single_result` line to widen")
    return ten


def inputs() -> tuple[KeptnEvent, list[KeptnEvent]]:
    """A get-sli.finished and ten evaluation.finished events, as the generated ledger has them."""
    conv = Conversations()
    finished: list[KeptnEvent] = []
    get_sli: KeptnEvent | None = None
    n = 0
    while len(finished) < 10:
        for event in conv.delivery(n):
            if event.type == "sh.keptn.event.evaluation.finished" and event.stage == "qa":
                finished.append(event)
            if event.type == "sh.keptn.event.get-sli.finished" and get_sli is None:
                get_sli = event
        n += 1
    assert get_sli is not None
    return get_sli, finished[:10]


def _rate(step: Callable[[], object], batch: int) -> float:
    began = time.perf_counter()
    for _ in range(batch):
        step()
    return batch / (time.perf_counter() - began)


def run(budget: Budget) -> Result:
    res = Result("scoring", TITLE)
    clock = Clock(budget.deadline)
    slo = load_slo(tutorial_slo_ten(), "helloservice/slo.yaml")
    get_sli, previous_events = inputs()
    answer = SLIAnswer.model_validate(get_sli.data["get-sli"] | {"result": "pass"})
    previous = [PreviousEvaluation.from_keptn(e.id, e.data) for e in reversed(previous_events)]
    raw = [get_sli.to_json()] + [e.to_json() for e in previous_events]

    def score(prev: list[PreviousEvaluation]) -> Callable[[], object]:
        def step() -> object:
            verdict = evaluate(slo, answer, prev, project="fulltour")
            return verdict.keptn(time_start="", time_end="", slo_file_content="", compared_events=[])

        return step

    def decode() -> object:
        return [json.loads(text) for text in raw]

    verdict = evaluate(slo, answer, previous, project="fulltour")
    if verdict.event_result != "pass":
        raise RuntimeError(f"the tutorial gate should pass against its own history: {verdict.message}")
    batch = budget.pick(2000, 200)
    samples = budget.pick(10, 3)
    series: dict[str, list[float]] = {BASE: [], "score, 10 previous": [], "score, no previous": []}
    steps = {BASE: decode, "score, 10 previous": score(previous), "score, no previous": score([])}
    for _ in range(samples):
        for name, step in steps.items():
            series[name].append(_rate(step, batch))
        if not clock.left():
            break
    res.add(
        Figure(
            BASE,
            "scorings/s",
            series[BASE],
            higher_is_better=True,
            note=f"11 events, {sum(len(t) for t in raw):,} bytes of JSON",
        )
    )
    res.add(
        Figure(
            "score, 10 previous",
            "scorings/s",
            series["score, 10 previous"],
            higher_is_better=True,
            baseline=BASE,
            note="evaluate + data.evaluation block",
        )
    )
    res.add(
        Figure(
            "score, no previous",
            "scorings/s",
            series["score, no previous"],
            higher_is_better=True,
            baseline=BASE,
        )
    )
    return res
