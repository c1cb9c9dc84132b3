"""Ledger histories as the reconciler writes them, and forgeries of them, for trust tests.

- `deliveries(n)`: n qa deliveries decided by the pure engine and answered by the built-in
  executors' own event builders (ids derived as the running reconciler derives them).
- `pending_approval()`: a delivery waiting for a person at its manual approval.
- `forge_commit(...)`: what an attacker with push rights to the upstream can do: a commit
  on the ledger branch built exactly like the ledger builds one (same tree layout, message
  and trailers), optionally with a signature made with some key.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2

from reconciler.core.approval import manual_answer
from reconciler.core.outcomes import finished_event, started_event
from reconciler.formats.events import KeptnEvent, format_time, task_type
from reconciler.ledger import gitledger
from tests.support.engine import T0, EngineHarness, trigger

if TYPE_CHECKING:
    from reconciler.ledger.signing import SigningKey

SHIPYARD = """\
apiVersion: spec.keptn.sh/0.2.2
kind: Shipyard
metadata: {name: shipyard-fulltour}
spec:
  stages:
    - name: qa
      sequences:
        - name: delivery
          tasks:
            - name: je-deployment
            - name: approval
              properties: {pass: manual, warning: manual}
            - name: je-test
"""
SHIPYARD_AUTOMATIC = SHIPYARD.replace("pass: manual, warning: manual", "pass: automatic, warning: automatic")


def _harness(shipyard: str) -> EngineHarness:
    h = EngineHarness(shipyard)

    def stamped(event: KeptnEvent) -> KeptnEvent:
        h.now += timedelta(seconds=5)
        return event.model_copy(update={"time": format_time(h.now)})

    def job(ev: KeptnEvent) -> list[KeptnEvent]:
        source = "job-executor-service"
        return [
            stamped(started_event(ev, source, now=h.now)),
            stamped(finished_event(ev, source, result="pass", now=h.now)),
        ]

    def approval(ev: KeptnEvent) -> list[KeptnEvent]:
        out = [stamped(started_event(ev, "approval-service", {"message": "manual"}, now=h.now))]
        if "automatic" in shipyard:
            out.append(stamped(finished_event(ev, "approval-service", result="pass", now=h.now)))
        return out

    h.on("je-deployment", job)
    h.on("je-test", job)
    h.on("approval", approval)
    return h


def deliveries(n: int, *, shipyard: str = SHIPYARD_AUTOMATIC, start: int = 0) -> list[KeptnEvent]:
    """`n` finished qa deliveries, one context each, every task passing."""
    out: list[KeptnEvent] = []
    for i in range(start, start + n):
        h = _harness(shipyard)
        h.now = T0 + timedelta(hours=i)
        h.run(trigger("qa", "delivery", context=f"ctx-{i:04d}", image=f"web:{i}"))
        out.extend(h.ledger)
    return out


def pending_approval(context: str = "ctx-approve") -> tuple[list[KeptnEvent], KeptnEvent]:
    """A delivery at its manual approval (approval-service said `.started`), and that `.triggered`."""
    h = _harness(SHIPYARD)
    h.run(trigger("qa", "delivery", context=context))
    approval = next(e for e in h.ledger if e.type == task_type("approval", "triggered"))
    assert not any(e.type == task_type("approval", "finished") for e in h.ledger)
    return h.ledger, approval


def forged_approval(approval: KeptnEvent, *, minutes: float = -30, approver: str = "mallory") -> KeptnEvent:
    """The attacker's approval.finished: any approver, dated `minutes` from the approval's time."""
    when = approval.timestamp + timedelta(minutes=minutes)
    return manual_answer(
        approval, approve=True, approver=approver, source="reconciler-api", via="api", now=when
    )


def legit_approval(approval: KeptnEvent) -> KeptnEvent:
    return manual_answer(
        approval, approve=True, approver="alice", now=approval.timestamp + timedelta(minutes=10)
    )


def forge_commit(
    repo_path: Path,
    branch: str,
    event: KeptnEvent,
    *,
    key: SigningKey | None = None,
    parent: str | None = None,
) -> str:
    """Append `event` to `branch` of the (bare) repository at `repo_path` as the ledger would
    lay it out, signed with `key` when given; moves the branch and returns the new commit."""
    repo = pygit2.Repository(str(repo_path))
    ref_name = f"refs/heads/{branch}"
    tip = parent or str(repo.references[ref_name].target)
    root = repo[pygit2.Oid(hex=tip)].peel(pygit2.Commit).tree
    blob = repo.create_blob(event.to_json().encode())
    tree = gitledger._insert(repo, root, gitledger.event_key(event.id), blob)
    message = gitledger.commit_message(event)
    if key is not None:
        from reconciler.ledger.signing import sign

        message = sign(key, str(tree), [tip], message)
    sig = pygit2.Signature(gitledger.SIGNATURE_NAME, gitledger.SIGNATURE_EMAIL)
    commit = repo.create_commit(None, sig, sig, message, tree, [pygit2.Oid(hex=tip)])
    repo.references.create(ref_name, commit, force=True)
    return str(commit)


def key_file(directory: Path) -> Path:
    """A ledger key as an operator makes one for a Secret (`openssl rand -hex 32`)."""
    import secrets

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ledger-key"
    path.write_text(secrets.token_hex(32) + "\n")
    return path
