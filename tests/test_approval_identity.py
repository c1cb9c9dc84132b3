"""Who approved by commit, and what was checked of it (issue 20, item 6).

A commit's author is whatever the pusher typed: before, the answer recorded it as the
approver with nothing to say it was unchecked, and any author's file approved. Now the
answer says `authenticated: false` unless an SSH signature was verified; the operator can
require an author/committer allow-list (`approval_authors`) or signatures by listed keys
(`approval_signers`, checked with the real ssh-keygen against real signed commits).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import FileMode

from reconciler.ingress.approvals import ApprovalPolicy, approval_policy_problem, record_approval_files
from reconciler.ingress.submit import Ingress
from reconciler.ledger.gitledger import Ledger
from reconciler.settings import Settings
from reconciler.upstream.snapshot import snapshot_of
from tests.support.ingress import GitUpstream, example_upstream_repo, production_approval_waiting

CONTEXT = "5b3c8a1e-0d4f-4c55-9c7e-2f9a3c1d7e11"
APPROVE = f"context: {CONTEXT}\nstage: production\ndecision: approve\n"
ALICE = ("Alice Approver", "alice@example.com")
MALLORY = ("Mallory", "mallory@evil.example")


@pytest.fixture
def upstream(tmp_path: Path) -> GitUpstream:
    return example_upstream_repo(tmp_path / "data" / "upstream.git")


@pytest.fixture
def ingress(upstream: GitUpstream, tmp_path: Path) -> Ingress:
    """A production delivery waiting at its manual approval."""
    ledger = Ledger(tmp_path / "data" / "ledger.git", "reconciler-ledger")
    production_approval_waiting(ledger, CONTEXT, result="warning")
    return Ingress(ledger=ledger, view=snapshot_of(upstream.files()), project="fulltour")


def keypair(tmp_path: Path, name: str) -> Path:
    key = tmp_path / f"{name}-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def allowed_signers(tmp_path: Path, **keys: Path) -> Path:
    path = tmp_path / "allowed_signers"
    lines = [
        f'{email} namespaces="git" {key.with_name(key.name + ".pub").read_text().strip()}'
        for email, key in keys.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def commit(
    up: GitUpstream,
    files: dict[str, str],
    *,
    author: tuple[str, str],
    committer: tuple[str, str] | None = None,
    key: Path | None = None,
    tamper: bool = False,
) -> str:
    """A commit on main, SSH-signed with `key` the way `git commit -S` does (gpg.format=ssh)."""
    repo = up.repo
    parent = repo.references["refs/heads/main"].peel(pygit2.Commit)
    index = pygit2.Index()
    index.read_tree(parent.tree)
    for path, text in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(text.encode()), FileMode.BLOB))
    tree = index.write_tree(repo)
    who = pygit2.Signature(*author)
    by = pygit2.Signature(*(committer or author))
    content = repo.create_commit_string(who, by, "approve", tree, [parent.id])
    if key is None:
        oid = repo.create_commit("refs/heads/main", who, by, "approve", tree, [parent.id])
        return str(oid)
    signature = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", "git"],
        input=content.encode(),
        capture_output=True,
        check=True,
    ).stdout.decode()
    if tamper:  # the same signature over other content: what rewriting a signed commit gives
        content = content.replace("approve", "approve (edited)")
    oid = repo.create_commit_with_signature(content, signature, "gpgsig")
    repo.references["refs/heads/main"].set_target(oid)
    return str(oid)


def answer(
    ingress: Ingress, upstream: GitUpstream, policy: ApprovalPolicy | None = None
) -> tuple[list[str], list[str]]:
    outcome = record_approval_files(ingress, upstream.files(), policy=policy)
    return [r.event_id for r in outcome.recorded], [str(p) for p in outcome.problems]


def recorded_approval(ingress: Ingress) -> dict[str, object]:
    last = ingress.ledger.events()[-1]
    assert last.type == "sh.keptn.event.approval.finished"
    approval: dict[str, object] = last.data["approval"]
    return approval


def test_by_default_the_git_author_is_recorded_as_unauthenticated(
    ingress: Ingress, upstream: GitUpstream
) -> None:
    commit(upstream, {"approvals/a.yaml": APPROVE}, author=MALLORY, committer=("Bot", "bot@ci.example"))
    recorded, problems = answer(ingress, upstream)
    assert len(recorded) == 1 and problems == []
    approval = recorded_approval(ingress)
    assert approval["approver"] == "Mallory <mallory@evil.example>"
    assert approval["authenticated"] is False
    assert str(approval["verified"]).startswith("nothing")
    assert approval["author"] == {"name": "Mallory", "email": "mallory@evil.example"}
    assert approval["committer"] == {"name": "Bot", "email": "bot@ci.example"}


def test_approval_authors_refuses_other_authors_and_committers(
    ingress: Ingress, upstream: GitUpstream
) -> None:
    policy = ApprovalPolicy.from_settings(Settings(approval_authors="*@example.com, release@corp.example"))
    commit(upstream, {"approvals/a.yaml": APPROVE}, author=MALLORY)
    recorded, problems = answer(ingress, upstream, policy)
    assert recorded == []
    assert any(
        "approvals/a.yaml" in p and "mallory@evil.example" in p and "approval_authors" in p for p in problems
    )

    commit(upstream, {"approvals/a.yaml": APPROVE + "message: by alice\n"}, author=ALICE, committer=MALLORY)
    recorded, problems = answer(ingress, upstream, policy)
    assert recorded == [] and any("committer 'mallory@evil.example'" in p for p in problems), problems

    commit(upstream, {"approvals/a.yaml": APPROVE + "message: really alice\n"}, author=ALICE)
    recorded, problems = answer(ingress, upstream, policy)
    assert len(recorded) == 1 and problems == []
    approval = recorded_approval(ingress)
    assert approval["approver"] == "Alice Approver <alice@example.com>"
    assert approval["authenticated"] is False  # an allow-list of what commits claim proves nobody
    assert "approval_authors" in str(approval["verified"])


def test_approval_signers_count_only_commits_signed_by_a_listed_key(
    ingress: Ingress, upstream: GitUpstream, tmp_path: Path
) -> None:
    alice, stranger = keypair(tmp_path, "alice"), keypair(tmp_path, "stranger")
    policy = ApprovalPolicy(signers=allowed_signers(tmp_path, **{"alice@example.com": alice}))

    commit(upstream, {"approvals/a.yaml": APPROVE}, author=ALICE)  # claims to be Alice, unsigned
    recorded, problems = answer(ingress, upstream, policy)
    assert recorded == [] and any("is not signed" in p and "approval_signers" in p for p in problems), (
        problems
    )

    commit(upstream, {"approvals/a.yaml": APPROVE + "message: try-1\n"}, author=ALICE, key=stranger)
    recorded, problems = answer(ingress, upstream, policy)
    assert recorded == [] and any("by no key listed" in p for p in problems), problems

    commit(upstream, {"approvals/a.yaml": APPROVE + "message: try-2\n"}, author=ALICE, key=alice, tamper=True)
    recorded, problems = answer(ingress, upstream, policy)
    assert recorded == [] and any("does not verify" in p for p in problems), problems

    commit(upstream, {"approvals/a.yaml": APPROVE + "message: try-3\n"}, author=MALLORY, key=alice)
    recorded, problems = answer(ingress, upstream, policy)
    assert len(recorded) == 1 and problems == [], problems
    approval = recorded_approval(ingress)
    assert approval["approver"] == "alice@example.com"  # the key's owner, whatever the author field says
    assert approval["authenticated"] is True
    assert "SSH signature by alice@example.com" in str(approval["verified"])
    assert approval["author"] == {"name": "Mallory", "email": "mallory@evil.example"}


def test_reconciler_run_refuses_to_start_with_approval_signers_it_cannot_use(tmp_path: Path) -> None:
    assert approval_policy_problem(Settings()) is None
    missing = approval_policy_problem(Settings(approval_signers=tmp_path / "nope"))
    assert missing is not None and "nope" in missing and "does not exist" in missing
    (tmp_path / "signers").write_text("")
    assert approval_policy_problem(Settings(approval_signers=tmp_path / "signers")) is None


def test_a_commit_signed_by_git_itself_is_verified(
    ingress: Ingress, upstream: GitUpstream, tmp_path: Path
) -> None:
    """`git commit -S` with gpg.format=ssh, pushed to the upstream: what people will really do."""
    key = keypair(tmp_path, "alice")
    policy = ApprovalPolicy(signers=allowed_signers(tmp_path, **{"alice@example.com": key}))
    work = tmp_path / "work"
    git = ["git", "-C", str(work), "-c", "user.name=Alice Approver", "-c", "user.email=alice@example.com"]
    git += ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}.pub"]
    subprocess.run(["git", "clone", "-q", "--branch", "main", str(upstream.path), str(work)], check=True)
    (work / "approvals").mkdir(exist_ok=True)
    (work / "approvals" / "a.yaml").write_text(APPROVE)
    subprocess.run([*git, "add", "approvals/a.yaml"], check=True)
    subprocess.run([*git, "commit", "-q", "-S", "-m", "approve helloservice"], check=True)
    subprocess.run([*git, "push", "-q", "origin", "main"], check=True)

    recorded, problems = answer(ingress, upstream, policy)
    assert len(recorded) == 1 and problems == [], problems
    approval = recorded_approval(ingress)
    assert approval["approver"] == "alice@example.com" and approval["authenticated"] is True
