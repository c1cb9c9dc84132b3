"""Large ledgers for the benches, built fast but in the ledger's exact layout.

Appending 100,000 events through `Ledger` takes minutes, so the bench builds the
commit chain with `git fast-import` instead: the same blobs (each event's
canonical JSON), the same paths (`event_path`), the same README, the same commit
messages (`commit_message`), one commit per event, in chunks of
`COMPACT_EVERY` events so the repository ends up with one pack per thousand
events, as the ledger's own compaction leaves it. Git trees are canonical, so
identical paths and blobs give identical tree objects; `verify` proves it on the
tip by rebuilding its tree with the ledger's own `_insert` and comparing ids.

The events are real conversations: tutorial deliveries (qa, then production)
decided by the pure engine (`decide`), answered like the executors answer
(job-executor-service, approval-service, and lighthouse-service with its get-sli
exchange and a full `evaluation` block scored by the real scorer), one service of
a thousand per delivery, five minutes apart. So replaying one gives the engine
and the memory figures the state a real ledger of that size would.

Built ledgers are cached under `bench/.cache/` keyed by a hash of everything that
decides the bytes (the ledger's layout helpers, the event encoding, this
generator's version); a changed ledger format builds a new cache entry.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pygit2

from bench.upstreamgen import EXAMPLE, service_name
from reconciler.core import engine, engine_state, planning
from reconciler.core.outcomes import finished_event, started_event
from reconciler.core.scoring import SLIAnswer, SLIValue, evaluate
from reconciler.formats.events import KeptnEvent, derived_id, format_time, task_type
from reconciler.formats.shipyard import Shipyard, load_shipyard
from reconciler.formats.slo import load_slo
from reconciler.ledger import gitledger
from reconciler.ledger.gitledger import DEFAULT_BRANCH, commit_message, event_key, event_path

GENERATOR_VERSION = "1"
CACHE = Path(__file__).resolve().parent / ".cache"
GIT = shutil.which("git") or "git"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SERVICES = 1000
SIGNATURE = f"{gitledger.SIGNATURE_NAME} <{gitledger.SIGNATURE_EMAIL}>"


@dataclass(frozen=True)
class StaticConfig:
    """The engine's view of an upstream that never changes (the tutorial's shipyard)."""

    shipyard_: Shipyard
    project: str = ""
    """Empty: any project is started (the engine's ConfigView.project)."""

    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        return self.shipyard_

    def main_commit(self) -> str | None:
        return "0" * 40

    def stage_head(self, stage: str) -> str | None:
        return hashlib.sha1(stage.encode()).hexdigest()


def tutorial_shipyard() -> Shipyard:
    return load_shipyard((EXAMPLE / "main" / "shipyard.yaml").read_bytes())


class Conversations:
    """Tutorial deliveries as the running reconciler would record them."""

    def __init__(self) -> None:
        self.config = StaticConfig(tutorial_shipyard())
        self.policy = planning.Policy()
        self.slo_raw = (EXAMPLE / "qa" / "helloservice" / "slo.yaml").read_bytes()
        self.slo = load_slo(self.slo_raw, "helloservice/slo.yaml")
        self.values = [
            SLIValue(metric="http_response_time_seconds_main_page_sum", value=0.2, success=True),
            SLIValue(metric="request_throughput", value=1.0, success=True),
            SLIValue(metric="go_routines", value=12.0, success=True),
            SLIValue(metric="failing_request", value=5.0, success=True),
        ]

    def delivery(self, n: int) -> list[KeptnEvent]:
        """Delivery number `n`: about 32 events, qa then production, every task passing."""
        now = T0 + timedelta(minutes=5 * n)
        service = service_name(n % SERVICES)
        context = derived_id("bench-context", str(n))
        trigger = KeptnEvent(
            id=derived_id("bench-trigger", str(n)),
            source="reconciler-upstream",
            type="sh.keptn.event.qa.delivery.triggered",
            time=format_time(now),
            shkeptncontext=context,
            gitcommitid=self.config.stage_head("qa"),
            data={
                "project": "fulltour",
                "stage": "qa",
                "service": service,
                "configurationChange": {"values": {"image": f"ghcr.io/example/{service}:v1.{n}"}},
                "deployment": {"deploymentURIsLocal": None, "deploymentstrategy": ""},
            },
        )
        state = engine_state.EngineState()
        out: list[KeptnEvent] = []
        queue = [trigger]
        for _ in range(200):
            if not queue:
                return out
            # each recorded event is decided upon in turn, as the control loop does
            event = queue.pop(0)
            out.append(event)
            for decided in engine.decide(state, self.config, event, now, self.policy).events:
                out.append(decided)
                queue.extend(self._answer(decided, now))
            now += timedelta(seconds=5)
        raise RuntimeError(f"delivery {n} did not settle")

    def _answer(self, triggered: KeptnEvent, now: datetime) -> list[KeptnEvent]:
        etype = triggered.etype
        if etype is None or not etype.is_task or etype.kind != "triggered":
            return []
        task = etype.task or ""
        stamp = {"time": format_time(now)}
        if task == "approval":
            source = "approval-service"
            return [
                started_event(triggered, source, now=now).model_copy(update=stamp),
                finished_event(triggered, source, result="pass", now=now).model_copy(update=stamp),
            ]
        if task == "evaluation":
            return self._evaluation(triggered, now)
        source = "job-executor-service"
        data: dict[str, Any] = {}
        if task == "je-test":
            data = {"test": {"start": format_time(now), "end": format_time(now + timedelta(seconds=60))}}
        message = f"Job job-executor-service-j-{triggered.id[:8]} finished successfully!"
        return [
            started_event(triggered, source, now=now).model_copy(update=stamp),
            finished_event(triggered, source, result="pass", message=message, data=data, now=now).model_copy(
                update=stamp
            ),
        ]

    def _evaluation(self, triggered: KeptnEvent, now: datetime) -> list[KeptnEvent]:
        source, provider = "lighthouse-service", "prometheus-service"
        stamp = {"time": format_time(now)}
        start, end = format_time(now - timedelta(minutes=2)), format_time(now)
        get_sli = KeptnEvent(
            id=derived_id(triggered.id, source, "get-sli.triggered"),
            source=source,
            type=task_type("get-sli", "triggered"),
            time=format_time(now),
            shkeptncontext=triggered.shkeptncontext,
            gitcommitid=triggered.gitcommitid,
            data={
                "project": triggered.project,
                "stage": triggered.stage,
                "service": triggered.service,
                "get-sli": {
                    "sliProvider": "prometheus",
                    "start": start,
                    "end": end,
                    "indicators": [v.metric for v in self.values],
                },
                "deployment": triggered.service,
            },
        )
        values = [v.keptn() | {"query": f"sum(rate({v.metric}[120s]))"} for v in self.values]
        sli_done = finished_event(
            get_sli,
            provider,
            result="pass",
            data={"get-sli": {"start": start, "end": end, "indicatorValues": values}},
            now=now,
        )
        verdict = evaluate(self.slo, SLIAnswer(indicatorValues=self.values), project="fulltour")
        block = verdict.keptn(
            time_start=start,
            time_end=end,
            slo_file_content=base64.b64encode(self.slo_raw).decode(),
            compared_events=[],
        )
        done = finished_event(
            triggered,
            source,
            result=verdict.event_result,
            status=verdict.status,
            message=verdict.message,
            data={"evaluation": block},
            now=now,
        )
        return [
            started_event(triggered, source, now=now).model_copy(update=stamp),
            get_sli,
            started_event(get_sli, provider, now=now).model_copy(update=stamp),
            sli_done.model_copy(update=stamp),
            done.model_copy(update=stamp),
        ]

    def events(self, count: int) -> Iterator[KeptnEvent]:
        """Whole deliveries until at least `count` events (a few more: no sequence is left open,
        so a reconciler started on the ledger is idle, not finishing a cut-off delivery)."""
        n = produced = 0
        while produced < count:
            for event in self.delivery(n):
                yield event
                produced += 1
            n += 1


# --------------------------------------------------------------------------------------------
# fast-import


def format_key() -> str:
    """Changes whenever the bytes a ledger of the same events would hold can change."""
    parts = [
        GENERATOR_VERSION,
        str(gitledger.SHARD_DEPTH),
        gitledger.EVENTS_DIR,
        gitledger._README.decode(),
        inspect.getsource(gitledger._insert),
        inspect.getsource(gitledger.commit_message),
        inspect.getsource(gitledger.event_path),
        inspect.getsource(KeptnEvent.to_json),
        inspect.getsource(Conversations),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _stream(events: list[KeptnEvent], first: int, continues: bool, branch: str) -> bytes:
    out = bytearray()
    for i, event in enumerate(events):
        stamp = int((T0 + timedelta(seconds=first + i)).timestamp())
        out += f"commit refs/heads/{branch}\ncommitter {SIGNATURE} {stamp} +0000\n".encode()
        out += _data(commit_message(event).encode("utf-8"))
        if i == 0 and continues:
            out += f"from refs/heads/{branch}^0\n".encode()
        if i == 0 and first == 0:
            out += b"M 100644 inline README.md\n" + _data(gitledger._README)
        out += f"M 100644 inline {event_path(event.id)}\n".encode()
        out += _data(event.to_json().encode("utf-8"))
    return bytes(out)


def write_ledger(
    path: Path,
    events: Iterator[KeptnEvent],
    *,
    chunk: int = gitledger.COMPACT_EVERY,
    branch: str = DEFAULT_BRANCH,
) -> int:
    """A bare repository at `path` holding `events` in the ledger's layout; returns how many."""
    pygit2.init_repository(str(path), bare=True)
    written = 0
    batch: list[KeptnEvent] = []

    def flush() -> None:
        nonlocal written
        stream = _stream(batch, written, written > 0, branch)
        subprocess.run(
            [GIT, "-C", str(path), "fast-import", "--quiet", "--done"],
            input=stream + b"done\n",
            check=True,
            capture_output=True,
            timeout=600,
        )
        written += len(batch)
        batch.clear()

    for event in events:
        batch.append(event)
        if len(batch) == chunk:
            flush()
    if batch:
        flush()
    return written


def verify(path: Path, count: int, branch: str = DEFAULT_BRANCH) -> None:
    """The tip's tree is what the ledger's own `_insert` builds; the chain has `count` commits."""
    repo = pygit2.Repository(str(path))
    tip = repo.references[f"refs/heads/{branch}"].peel(pygit2.Commit)
    event = KeptnEvent.from_json(repo[_added(repo, tip)].peel(pygit2.Blob).data)
    parent_tree = tip.parents[0].tree if tip.parents else None
    blob = repo.create_blob(event.to_json().encode("utf-8"))
    rebuilt = gitledger._insert(repo, parent_tree, event_key(event.id), blob)
    if rebuilt != tip.tree.id or tip.message != commit_message(event):
        raise RuntimeError(f"{path}: generated layout differs from the ledger's; delete {CACHE} and rerun")
    commits = sum(1 for _ in repo.walk(tip.id))
    if commits != count:
        raise RuntimeError(f"{path}: {commits} commits, expected {count}")


def _added(repo: pygit2.Repository, commit: pygit2.Commit) -> pygit2.Oid:
    key = gitledger.event_id_of(commit.message)
    assert key is not None
    entry: pygit2.Object = commit.tree / event_path(key)
    return entry.id


def cached_ledger(count: int, log: Any = print) -> Path:
    """Path of a cached ledger repository with `count` events (built on first use)."""
    target = CACHE / f"ledger-{count}-{format_key()}" / "ledger.git"
    if (target.parent / "complete").is_file():
        return target
    for stale in CACHE.glob(f"ledger-{count}-*"):  # an older format: never read again
        shutil.rmtree(stale)
    target.parent.mkdir(parents=True)
    log(f"  building a {count:,}-event ledger under {target.parent} (cached for later runs)")
    written = write_ledger(target, Conversations().events(count))
    verify(target, written)
    (target.parent / "complete").write_text(f"{written}\n")
    return target


def cached_count(path: Path) -> int:
    """How many events a cached ledger holds (at least the count asked for)."""
    return int((path.parent / "complete").read_text().split()[0])


def copy_ledger(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True)
    return destination
