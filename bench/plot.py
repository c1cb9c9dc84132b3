"""The scale scenario's curves as a PNG: `python -m bench.plot [RESULTS.json] [-o PNG]`.

Reads a results file of `python -m bench` that ran the `scale` scenario (default: the
newest in bench/results/ that has it) and draws three panels: idle RSS against the number
of services (with the bare import as the floor), the RSS of the in-process scenario over
time while 50 deliveries run, and the distribution of the engine's overhead per task
transition next to the append it contains. Default output: docs/bench/scale.png.

matplotlib is the `bench` extra (`pip install -e '.[bench]' -c constraints.txt`): the
bench itself does not need it, only this picture. The Agg backend draws without a display.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PNG = Path(__file__).resolve().parent.parent / "docs" / "bench" / "scale.png"


def _scale(data: dict[str, Any]) -> dict[str, Any] | None:
    for scenario in data.get("scenarios", []):
        if scenario.get("scenario") == "scale" and not scenario.get("error"):
            return scenario  # type: ignore[no-any-return]
    return None


def newest_with_scale(directory: Path = RESULTS) -> Path:
    for path in sorted(directory.glob("*.json"), reverse=True):
        if _scale(json.loads(path.read_text())) is not None:
            return path
    raise SystemExit(f"no results file with a successful scale scenario in {directory}")


def _figures(scenario: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in scenario["figures"]}


def curve(figures: dict[str, dict[str, Any]], prefix: str) -> list[tuple[int, dict[str, Any]]]:
    """(services, figure) for every figure named `<prefix> @<n> services`, by n."""
    pattern = re.compile(re.escape(prefix) + r" @([\d,]+)(?: services)?$")
    found = []
    for name, fig in figures.items():
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1).replace(",", "")), fig))
    return sorted(found, key=lambda item: item[0])


def with_curve_of(data: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`data` with the curve's figures (idle RSS, the bare import) of `other`'s scale scenario,
    for a run that measured only the deliveries (BENCH_SCALE_CURVE=0)."""
    mine, theirs = _scale(data), _scale(other)
    if mine is None or theirs is None:
        raise SystemExit("both results files need a successful scale scenario")
    names = {f["name"] for f in mine["figures"]}
    extra = [
        f
        for f in theirs["figures"]
        if f["name"] not in names
        and (f["name"].startswith("RSS idle @") or f["name"].startswith("RSS of python"))
    ]
    merged = {**mine, "figures": [*mine["figures"], *extra]}
    argv = [*data.get("argv", []), "+ curve of", *other.get("argv", [])]
    return {**data, "argv": argv, "scenarios": [merged]}


def draw(data: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenario = _scale(data)
    if scenario is None:
        raise SystemExit("the results file has no successful scale scenario")
    figures = _figures(scenario)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.6))

    idle = curve(figures, "RSS idle")
    if idle:
        xs = [n for n, _ in idle]
        left.plot(xs, [f["median"] for _, f in idle], "o-", label="reconciler run, idle (median)")
        left.plot(xs, [f["max"] for _, f in idle], "x:", label="idle (max)")
        base = figures.get("RSS of python -c 'import reconciler.app'")
        if base is not None:
            left.axhline(base["median"], color="grey", linestyle="--", label="bare import")
            left.axhline(
                1.7 * base["median"], color="tab:red", linestyle=":", label="1.7x bare import (issue 19)"
            )
        left.set_xscale("log")
        left.set_xticks(xs, [f"{n:,}" for n in xs])
        left.minorticks_off()
        left.set_xlabel("services (x 2 stages)")
        left.set_ylabel("RSS (MiB)")
        left.set_title("Idle RSS against services")
        left.legend(fontsize=8)

    series = figures.get("RSS over the scenario")
    if series is not None and series["samples"]:
        step = 0.5
        match = re.search(r"every ([\d.]+) s", series.get("note", ""))
        if match:
            step = float(match.group(1))
        samples = series["samples"]
        middle.plot([i * step for i in range(len(samples))], samples, "-", color="tab:green")
        middle.set_xlabel("seconds since before App.start")
        middle.set_ylabel("RSS (MiB)")
        services = next((n for n in (10_000, 200) if f"RSS idle, {n:,} services served" in figures), None)
        middle.set_title(f"In-process, {services:,} services: start, then deliveries" if services else "RSS")
        for name in figures:
            if name.startswith("RSS peak with"):
                middle.axhline(figures[name]["median"], color="tab:red", linestyle=":", label=name)
        ends = figures.get("round ends")
        if ends is not None:
            for n, end in enumerate(ends["samples"]):
                middle.axvline(
                    end, color="grey", linestyle=":", label="end of a round of deliveries" if n == 0 else None
                )
        middle.legend(fontsize=8)

    transitions = figures.get("engine overhead per task transition")
    appends = figures.get("append of the next event")
    if transitions is not None and transitions["samples"]:
        right.hist(transitions["samples"], bins=40, alpha=0.7, label="task transition (engine overhead)")
        if appends is not None and appends["samples"]:
            right.hist(appends["samples"], bins=40, alpha=0.7, label="the append it contains")
        engine = figures.get("transition: the loop's fold -> next event's commit")
        if engine is not None and engine["samples"]:  # issue 19 part 3's split: the rest is the queue
            right.hist(
                engine["samples"], bins=40, histtype="step", color="black", label="of it: fold -> next commit"
            )
        right.axvline(
            transitions["p95"], color="tab:blue", linestyle="--", label=f"p95 {transitions['p95']:.1f} ms"
        )
        right.axvline(20, color="tab:red", linestyle=":", label="20 ms (issue 19)")
        right.set_xlabel("ms")
        right.set_ylabel("transitions")
        right.set_title(transitions.get("note", "task transitions"), fontsize=9)
        right.legend(fontsize=8)

    machine = data.get("machine", {})
    load = machine.get("load_average_at_start")
    subtitle = f"python -m bench {' '.join(data.get('argv', []))}"
    if load:
        subtitle += f" - load average at start {load}"
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, help="a results JSON (default: newest with scale)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_PNG, help=f"PNG (default {DEFAULT_PNG})")
    parser.add_argument(
        "--curve", type=Path, default=None, help="take the idle-RSS curve from this results file instead"
    )
    args = parser.parse_args(argv)
    path = args.results or newest_with_scale()
    data = json.loads(path.read_text())
    if args.curve is not None:
        data = with_curve_of(data, json.loads(args.curve.read_text()))
    written = draw(data, args.output)
    print(f"{path} -> {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
