"""Issue 19 part 6: instructions per `Ledger.append` at 0 and at 100,000 events, under callgrind.

Wall-clock samples on this machine's 2 shared cores swing by 2-3x from one minute to the next
(a 1,000-append sample at 0 events took 0.9 s and then 3.3 s a minute later, the process's CPU
time with it), which is more than the whole flatness gap the bench measures. The user-space
instructions an append executes do not depend on the neighbours: valgrind's callgrind counts
them exactly (the kernel's share, the system calls and page faults, is not counted; `strace -c`
and `getrusage` show those are the same in number at both sizes but for the page faults of the
leaf reads).

For each size, two processes under callgrind on a copy of the bench's cached ledger (the
maintained 100,000-event one, or an empty repository): one makes `--warm` appends through one
`Ledger`, the other the same `--warm` and then `--appends` more through the same `Ledger` (as
the daemon keeps its one); the difference of their totals over `--appends` is the cost of an
append after the warm-up, start-up and imports cancelled out. `--fresh` opens a new `Ledger`
after the warm-up instead (the first appends after a restart). Runs the checkout it is
started from (`PYTHONPATH`); ~5 minutes (valgrind runs Python ~50x slower).

Run: .venv/bin/python -m bench.experiments.append_instructions [--appends 1000] [--warm 1000]
     [--fresh] [--json out.json] [--keep DIR]
`--keep DIR` leaves the four callgrind outputs there (`<size>-<appends>.out`), for
`callgrind_annotate` by function: the per-function growth is the difference of the
differences, e.g. `100000-1000` minus `100000-0` against `0-1000` minus `0-0`.
Needs valgrind (Debian: apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pygit2

from bench.ledgergen import cached_ledger, copy_ledger
from bench.scenarios.ledger import maintained

DRIVER = """
import os, sys
from pathlib import Path
from reconciler.runtime.observability import configure_logging
configure_logging("json", "info", open(os.devnull, "w"))
from reconciler.ledger.gitledger import Ledger
from reconciler.ledger.measure import sample_event
path, warm, appends, fresh = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
ledger = Ledger(path)
for i in range(warm):
    ledger.append(sample_event(50_000_000 + i))
ledger.wait_for_maintenance()
if fresh:
    ledger = Ledger(path)
for i in range(appends):
    ledger.append(sample_event(60_000_000 + i))
ledger.wait_for_maintenance()
"""


def _instructions(source: Path | None, work: Path, warm: int, appends: int, fresh: bool) -> int:
    """User-space instructions of one driver process (callgrind's `I refs`)."""
    repo = work / "ledger.git"
    if source is None:
        pygit2.init_repository(str(repo), bare=True)
    else:
        copy_ledger(source, repo)
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={work / 'callgrind.out'}",
            sys.executable,
            str(driver),
            str(repo),
            str(warm),
            str(appends),
            "1" if fresh else "0",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=1000)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="directory for the callgrind outputs")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    sources: dict[str, Path | None] = {"0": None, "100,000": maintained(cached_ledger(100_000, print))}
    root = Path(tempfile.mkdtemp(prefix="bench-instr-"))
    try:
        jobs = {
            (size, n): (sources[size], root / f"{size}-{n}".replace(",", ""))
            for size in sources
            for n in (0, args.appends)
        }
        for _, work in jobs.values():
            work.mkdir()
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                key: pool.submit(_instructions, source, work, args.warm, key[1], args.fresh)
                for key, (source, work) in jobs.items()
            }
            totals = {key: future.result() for key, future in futures.items()}
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for _, work in jobs.values():
                shutil.copy(work / "callgrind.out", args.keep / f"{work.name}.out")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    per_append = {size: (totals[(size, args.appends)] - totals[(size, 0)]) / args.appends for size in sources}
    flatness = per_append["0"] / per_append["100,000"]
    for size, value in per_append.items():
        print(f"instructions an append @{size}: {value / 1e6:.3f} M")
    print(f"flatness (instructions @0 / @100,000): {flatness:.3f}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "totals": {f"{k[0]}+{k[1]}": v for k, v in totals.items()},
                    "per_append": per_append,
                    "flatness": flatness,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
