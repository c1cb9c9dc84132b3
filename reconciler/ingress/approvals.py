"""Approval by commit: approval files on `main` become `approval.finished` events.

`answers_for` is the pure part: committed files (with their authors) and the open
approval tasks of the engine state in, answers and located problems out.
`record_approval_files` is what the app calls after each poll: it reads the files
at main's head from the mirror, finds the commit that last touched each one (its
author is the approver), and records the answers through the ingress pipeline.

Who approved: a commit's author and committer are whatever the pusher wrote, so by
default the answer records them as such — `authenticated: false`, `verified:
"nothing"` — and relies on the upstream's branch protection and reviews. The operator
can demand more (`ApprovalPolicy`):

- `approval_signers`, an allowed-signers file in ssh-keygen's format (the one git's
  `gpg.ssh.allowedSignersFile` takes): only commits carrying an SSH signature by a key
  listed there approve, checked with `ssh-keygen -Y find-principals` and `-Y verify`
  over the signed commit as git does; the answer records the signer's principal as the
  approver, `authenticated: true`. OpenPGP and X.509 signatures are not verified (that
  needs a keyring this process does not have) and are refused while signers are required.
- `approval_authors`, e-mail globs: the commit's author and committer must both match.
  Still forgeable by whoever can push to main, so the answer stays `authenticated: false`;
  it narrows who can approve by mistake, not by intent.

A commit that fails a check answers nothing; a located problem says why.
"""

from __future__ import annotations

import fnmatch
import functools
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2

from reconciler.base.logs import get_logger
from reconciler.core.admission import Rejected
from reconciler.core.approval import manual_answer
from reconciler.core.engine_state import EngineState
from reconciler.formats.approvalfile import CommittedFile, is_approval_path, load_approval_file
from reconciler.formats.events import KeptnEvent
from reconciler.formats.problems import ConfigError, Problem
from reconciler.ingress.submit import Ingress, Receipt
from reconciler.upstream.files import GitFiles, tree_entry

log = get_logger("reconciler.ingress.approvals")

SOURCE = "reconciler-approvals"
MAX_FILES = 200
"""Approval files read per poll; more is a directory nobody cleans up, not a workflow."""
MAX_HISTORY = 2000
"""Commits walked back from main's head to find who last touched a file."""
SSH_KEYGEN_TIMEOUT = 10.0
SSH_SIGNATURE = b"-----BEGIN SSH SIGNATURE-----"


@dataclass(frozen=True)
class ApprovalPolicy:
    """What a commit must show before its approval file counts (settings `approval_*`)."""

    authors: tuple[str, ...] = ()
    """E-mail globs (lower case) the author and the committer must both match; empty: anyone."""
    signers: Path | None = None
    """allowed_signers file; set: only commits with a verifying SSH signature by a listed key."""

    @classmethod
    def from_settings(cls, settings: Any) -> ApprovalPolicy:
        return cls(
            authors=tuple(a.strip().lower() for a in settings.approval_authors if a.strip()),
            signers=settings.approval_signers,
        )


def approval_policy_problem(settings: Any) -> str | None:
    """Why the approval settings cannot be used, for `reconciler run` to stop at start."""
    signers = settings.approval_signers
    if signers is None:
        return None
    if not Path(signers).is_file():
        return f"approval_signers {signers} does not exist (an allowed_signers file: `<email> <key type> <key>` per line)"
    if shutil.which("ssh-keygen") is None:
        return "approval_signers is set but ssh-keygen is not installed (Debian: openssh-client); it verifies the signatures"
    return None


@dataclass(frozen=True)
class CommitIdentity:
    """Who a commit says made it, and what of that was checked."""

    author_name: str
    author_email: str
    committer_name: str = ""
    committer_email: str = ""
    signer: str = ""
    """Principal whose key verified the commit's SSH signature; empty when none was checked."""
    verified: str = "nothing: the commit's author is recorded as the commit states it"

    @classmethod
    def unverified(cls, author: str) -> CommitIdentity:
        """From a `Name <email>` string alone."""
        name, _, rest = author.partition(" <")
        return cls(author_name=name, author_email=rest.rstrip(">"))

    @property
    def authenticated(self) -> bool:
        return bool(self.signer)

    @property
    def approver(self) -> str:
        return self.signer or f"{self.author_name} <{self.author_email}>"

    def record(self) -> dict[str, Any]:
        """What joins `data.approval` of the answer."""
        return {
            "approver": self.approver,
            "authenticated": self.authenticated,
            "verified": self.verified,
            "author": {"name": self.author_name, "email": self.author_email},
            "committer": {"name": self.committer_name, "email": self.committer_email},
        }


def answers_for(
    files: Sequence[CommittedFile],
    open_approvals: Sequence[KeptnEvent],
    *,
    branch: str = "main",
    identities: Mapping[str, CommitIdentity] | None = None,
    now: datetime,
) -> tuple[list[KeptnEvent], list[Problem]]:
    """`approval.finished` for every open approval task a file decides; problems for unreadable files.

    `identities` (by commit id) says who each commit is from and what was checked; without
    one the commit's author is recorded, unauthenticated.
    """
    events: list[KeptnEvent] = []
    problems: list[Problem] = []
    answered: set[str] = set()
    for file in sorted(files, key=lambda f: f.path):
        try:
            decision = load_approval_file(file.content, file.path)
        except ConfigError as exc:
            problems.extend(p.model_copy(update={"branch": p.branch or branch}) for p in exc.problems)
            continue
        for triggered in open_approvals:
            if triggered.id in answered:
                continue
            if triggered.shkeptncontext != decision.context or triggered.stage != decision.stage:
                continue
            if decision.service and triggered.service != decision.service:
                continue
            answered.add(triggered.id)
            who = (identities or {}).get(file.commit) or CommitIdentity.unverified(file.author)
            answer = manual_answer(
                triggered,
                approve=decision.decision == "approve",
                approver=who.approver,
                message=decision.message,
                source=SOURCE,
                via=f"commit {file.commit[:12]} {file.path}",
                now=now,
            )
            data = {**answer.data, "approval": {**answer.data["approval"], **who.record()}}
            events.append(answer.model_copy(update={"data": data}))
    return events, problems


def open_approvals(state: EngineState) -> list[KeptnEvent]:
    """Approval tasks still waiting for an answer (one already recorded counts as answered)."""
    return [run.triggered for _, run in state.open_tasks() if run.name == "approval" and not run.finished]


def last_authors(
    repo: pygit2.Repository, head: str, paths: Sequence[str], *, max_commits: int = MAX_HISTORY
) -> dict[str, tuple[str, str]]:
    """path -> (author `Name <email>`, commit) of the newest commit that changed the path."""
    wanted = set(paths)
    found: dict[str, tuple[str, str]] = {}
    walker = repo.walk(pygit2.Oid(hex=head), pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    for n, commit in enumerate(walker):
        if not wanted or n >= max_commits:
            break
        for path in list(wanted):
            mine = _entry_id(commit.tree, path)
            if mine is None:
                continue
            if any(_entry_id(parent.tree, path) == mine for parent in commit.parents):
                continue
            author = commit.author
            found[path] = (f"{author.name} <{author.email}>", str(commit.id))
            wanted.discard(path)
    return found


def commit_identity(repo: pygit2.Repository, commit_id: str, policy: ApprovalPolicy) -> CommitIdentity | str:
    """Who the commit is from, checked as `policy` asks; a string says why it does not count."""
    commit = repo[pygit2.Oid(hex=commit_id)].peel(pygit2.Commit)
    author, committer = commit.author, commit.committer
    identity = CommitIdentity(
        author_name=author.name,
        author_email=author.email,
        committer_name=committer.name,
        committer_email=committer.email,
    )
    checks: list[str] = []
    if policy.authors:
        for role, email in (("author", author.email), ("committer", committer.email)):
            if not any(fnmatch.fnmatchcase(email.lower(), glob) for glob in policy.authors):
                return (
                    f"commit {commit_id[:12]}: its {role} {email!r} is not on approval_authors "
                    f"({', '.join(policy.authors)}); the approval is not counted"
                )
        checks.append("author and committer on approval_authors (as the commit states them)")
    signer = ""
    if policy.signers is not None:
        signature, payload = commit.gpg_signature
        if not signature or payload is None:
            return (
                f"commit {commit_id[:12]} is not signed; approval_signers requires an SSH signature by a key "
                f"listed in {policy.signers}"
            )
        if not signature.lstrip().startswith(SSH_SIGNATURE):
            return (
                f"commit {commit_id[:12]} has an OpenPGP or X.509 signature; only SSH signatures are verified "
                f"(keys in {policy.signers})"
            )
        stat = policy.signers.stat()
        verdict = _verify_ssh(
            str(policy.signers), stat.st_mtime_ns, stat.st_size, commit_id, signature, payload, committer.time
        )
        if not verdict.startswith("principal:"):
            return f"commit {commit_id[:12]}: {verdict}"
        signer = verdict.removeprefix("principal:")
        checks.append(f"SSH signature by {signer} (key listed in {policy.signers})")
    if not checks:
        return identity
    return CommitIdentity(
        author_name=identity.author_name,
        author_email=identity.author_email,
        committer_name=identity.committer_name,
        committer_email=identity.committer_email,
        signer=signer,
        verified="; ".join(checks),
    )


@functools.lru_cache(maxsize=256)
def _verify_ssh(
    signers: str, mtime_ns: int, size: int, commit_id: str, signature: bytes, payload: bytes, when: int
) -> str:
    """`principal:<name>` when ssh-keygen verifies the signature as git would, else why not.

    Cached by commit and the signers file's version: files are re-read every few seconds
    while an approval waits. (`mtime_ns`, `size` and `commit_id` are only cache keys.)
    """
    del mtime_ns, size, commit_id
    verify_time = "-Overify-time=" + datetime.fromtimestamp(when, UTC).strftime("%Y%m%d%H%M%S")
    with tempfile.TemporaryDirectory(prefix="reconciler-sig-") as tmp:
        sig = Path(tmp) / "commit.sig"
        sig.write_bytes(signature)
        try:
            found = subprocess.run(
                ["ssh-keygen", "-Y", "find-principals", "-s", str(sig), "-f", signers, verify_time],
                capture_output=True,
                timeout=SSH_KEYGEN_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"its signature could not be checked: ssh-keygen failed ({type(exc).__name__})"
        principals = [p for p in found.stdout.decode(errors="replace").splitlines() if p.strip()]
        if found.returncode != 0 or not principals:
            return f"its SSH signature is by no key listed in {signers}"
        for principal in principals:
            checked = subprocess.run(
                [
                    "ssh-keygen",
                    "-Y",
                    "verify",
                    "-f",
                    signers,
                    "-I",
                    principal,
                    "-n",
                    "git",
                    "-s",
                    str(sig),
                    verify_time,
                ],
                input=payload,
                capture_output=True,
                timeout=SSH_KEYGEN_TIMEOUT,
                check=False,
            )
            if checked.returncode == 0:
                return f"principal:{principal.strip()}"
    return f"its SSH signature does not verify against the keys in {signers} (the commit was altered after signing?)"


def _entry_id(tree: pygit2.Tree, path: str) -> pygit2.Oid | None:
    try:
        return tree_entry(tree, path).id
    except KeyError:
        return None


@dataclass
class FileApprovals:
    """Outcome of one pass over the approval directory."""

    recorded: list[Receipt] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def committed_files(
    files: GitFiles,
    *,
    branch: str,
    approval_dir: str,
    head: str | None = None,
    policy: ApprovalPolicy | None = None,
    identities: dict[str, CommitIdentity] | None = None,
) -> tuple[list[CommittedFile], list[Problem]]:
    """Approval files at `head` (default: the branch tip) with their last authors.

    Files whose last commit fails `policy` are left out with a problem; the identity of
    each counted commit goes into `identities` (by commit id) when given.
    """
    policy = policy or ApprovalPolicy()
    tip = head or files.branches().get(branch)
    if tip is None:
        return [], []
    paths = [p for p in files.list(branch, approval_dir, tip) if is_approval_path(p, approval_dir)]
    problems = []
    if len(paths) > MAX_FILES:
        problems.append(
            Problem(
                file=approval_dir,
                branch=branch,
                message=f"{len(paths)} approval files; only the first {MAX_FILES} are read — remove used ones",
                severity="warning",
            )
        )
        paths = paths[:MAX_FILES]
    authors = last_authors(files.repo, tip, paths)
    out = []
    for path in paths:
        content = files.read(branch, path, tip)
        who = authors.get(path)
        if content is None:
            continue
        if who is None:
            problems.append(
                Problem(
                    file=path,
                    branch=branch,
                    message=f"the commit that added this file is more than {MAX_HISTORY} commits back; re-commit it",
                )
            )
            continue
        identity = commit_identity(files.repo, who[1], policy)
        if isinstance(identity, str):
            problems.append(Problem(file=path, branch=branch, message=identity))
            continue
        if identities is not None:
            identities[who[1]] = identity
        out.append(CommittedFile(path=path, content=content, author=who[0], commit=who[1]))
    return out, problems


def record_approval_files(
    ingress: Ingress,
    files: GitFiles,
    *,
    branch: str = "main",
    approval_dir: str = "approvals",
    head: str | None = None,
    policy: ApprovalPolicy | None = None,
) -> FileApprovals:
    """Called after each poll: answer pending approvals decided by files on `branch`."""
    outcome = FileApprovals()
    pending = ingress.state.read(open_approvals)
    if not pending:
        return outcome  # cheap: no git walk while nothing waits
    pending = [ingress.state.full(task) for task in pending]  # answers copy the task's labels
    identities: dict[str, CommitIdentity] = {}
    committed, problems = committed_files(
        files, branch=branch, approval_dir=approval_dir, head=head, policy=policy, identities=identities
    )
    answers, parse_problems = answers_for(
        committed, pending, branch=branch, identities=identities, now=ingress.clock()
    )
    outcome.problems = problems + parse_problems
    for problem in outcome.problems:
        log.warning("approval_file_problem", problem=str(problem))
    for answer in answers:
        try:
            outcome.recorded.append(ingress.record(answer, origin="approval-file"))
        except Rejected as exc:  # the task finished meanwhile: nothing to answer any more
            log.info("approval_file_not_recorded", reason=str(exc), context=answer.shkeptncontext)
    return outcome
