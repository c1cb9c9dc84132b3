"""The bench command runs from a checkout and reports what issue 10 asks for: a table with
median, p95, min, max and the ratio to a baseline measured in the same run, plus a JSON file.
Only the cheap pure scenario in quick mode: speed is measured by `python -m bench`, never here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_scoring_bench_prints_ratios_to_its_baseline_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "scoring", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("scenario"))
    columns = ["scenario", "figure", "n", "median", "p95", "min", "max", "unit", "vs", "baseline"]
    assert header.split() == columns
    scored = next(line for line in done.stdout.splitlines() if "score, 10 previous" in line)
    assert "x json.loads of the inputs" in scored
    assert f"results: {out}" in done.stdout

    data = json.loads(out.read_text())
    assert data["machine"]["nproc"] >= 1 and data["machine"]["python"]
    (scenario,) = data["scenarios"]
    figures = {f["name"]: f for f in scenario["figures"]}
    assert figures["json.loads of the inputs"]["ratio_to_baseline"] is None
    ten = figures["score, 10 previous"]
    assert ten["baseline"] == "json.loads of the inputs"
    assert ten["min"] <= ten["median"] <= ten["max"] and len(ten["samples"]) == ten["n"] >= 2
    assert ten["ratio_to_baseline"] == ten["median"] / figures["json.loads of the inputs"]["median"]


def test_an_unknown_scenario_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "ledgr", "--json", str(tmp_path / "x.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown scenario(s) ledgr" in done.stderr and "ledger, trigger, engine" in done.stderr
    assert not (tmp_path / "x.json").exists()
