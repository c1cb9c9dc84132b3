"""`python -m bench`: run the scenarios, print the table with ratios, write the JSON.

    .venv/bin/python -m bench [--quick] [--only ledger,trigger,...] [--json out.json]

Run from the repository root. Results go to bench/results/<UTC time>.json unless
--json names a file. Scenarios: ledger, trigger, engine, poll, scoring,
evaluation, memory, ui, scale (see bench/README.md for what each measures).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Budget, Result, table, to_json, write_json
from bench.machine import describe, summary

SCENARIOS = ("ledger", "trigger", "engine", "poll", "scoring", "evaluation", "memory", "ui", "scale")
RESULTS = Path(__file__).resolve().parent / "results"


def _quiet_logging() -> None:
    """Production logging (JSON at info, so each append renders its log line), into /dev/null."""
    from reconciler.runtime.observability import configure_logging

    configure_logging("json", os.environ.get("BENCH_LOG_LEVEL", "info"), open(os.devnull, "w"))  # noqa: SIM115


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run, not figures")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results JSON")
    parser.add_argument(
        "--deadline",
        type=float,
        default=240.0,
        help="seconds per scenario after which repetitions stop (default 240)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; expected some of {', '.join(SCENARIOS)}")

    _quiet_logging()
    machine = describe()
    print(f"machine: {summary(machine)}", flush=True)
    budget = Budget(
        quick=args.quick,
        deadline=args.deadline if not args.quick else min(args.deadline, 30.0),
        log=lambda text: print(text, flush=True),
    )
    results: list[Result] = []
    failed = False
    for name in chosen:
        module = importlib.import_module(f"bench.scenarios.{name}")
        print(f"[{name}] {module.TITLE}", flush=True)
        began = time.monotonic()
        try:
            result: Result = module.run(budget)
        except Exception as exc:
            traceback.print_exc()
            result = Result(name, module.TITLE, error=f"{type(exc).__name__}: {exc}")
            failed = True
        result.seconds = round(time.monotonic() - began, 1)
        for note in result.notes:
            print(f"  note: {note}", flush=True)
        print(f"  done in {result.seconds:.0f} s", flush=True)
        results.append(result)

    print()
    print(table(results))
    print()
    path = (
        args.json
        or RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    )
    write_json(to_json(results, machine, sys.argv[1:] if argv is None else argv), path)
    print(f"results: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
