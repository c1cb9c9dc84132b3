"""Approval by commit: approval files on `main` become `approval.finished` events.

`answers_for` is the pure part: committed files (with their authors) and the open
approval tasks of the engine state in, answers and located problems out.
`record_approval_files` is what the app calls after each poll: it reads the files
at main's head from the mirror, finds the commit that last touched each one (its
author is the approver), and records the answers through the ingress pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pygit2

from reconciler.core.sequencing import EngineState
from reconciler.executors.approval import manual_answer
from reconciler.formats.approvalfile import CommittedFile, is_approval_path, load_approval_file
from reconciler.formats.events import KeptnEvent
from reconciler.formats.problems import ConfigError, Problem
from reconciler.ingress.admission import Rejected
from reconciler.ingress.submit import Ingress, Receipt
from reconciler.observability import get_logger
from reconciler.upstream.files import GitFiles

log = get_logger("reconciler.ingress.approvals")

SOURCE = "reconciler-approvals"
MAX_FILES = 200
"""Approval files read per poll; more is a directory nobody cleans up, not a workflow."""
MAX_HISTORY = 2000
"""Commits walked back from main's head to find who last touched a file."""


def answers_for(
    files: Sequence[CommittedFile],
    open_approvals: Sequence[KeptnEvent],
    *,
    branch: str = "main",
) -> tuple[list[KeptnEvent], list[Problem]]:
    """`approval.finished` for every open approval task a file decides; problems for unreadable files."""
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
            events.append(
                manual_answer(
                    triggered,
                    approve=decision.decision == "approve",
                    approver=file.author,
                    message=decision.message,
                    source=SOURCE,
                    via=f"commit {file.commit[:12]} {file.path}",
                )
            )
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


def _entry_id(tree: pygit2.Tree, path: str) -> pygit2.Oid | None:
    try:
        return tree[path].id
    except KeyError:
        return None


@dataclass
class FileApprovals:
    """Outcome of one pass over the approval directory."""

    recorded: list[Receipt] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def committed_files(
    files: GitFiles, *, branch: str, approval_dir: str, head: str | None = None
) -> tuple[list[CommittedFile], list[Problem]]:
    """Approval files at `head` (default: the branch tip) with their last authors."""
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
        out.append(CommittedFile(path=path, content=content, author=who[0], commit=who[1]))
    return out, problems


def record_approval_files(
    ingress: Ingress,
    files: GitFiles,
    *,
    branch: str = "main",
    approval_dir: str = "approvals",
    head: str | None = None,
) -> FileApprovals:
    """Called after each poll: answer pending approvals decided by files on `branch`."""
    outcome = FileApprovals()
    pending = ingress.state.read(open_approvals)
    if not pending:
        return outcome  # cheap: no git walk while nothing waits
    pending = [ingress.state.full(task) for task in pending]  # answers copy the task's labels
    committed, problems = committed_files(files, branch=branch, approval_dir=approval_dir, head=head)
    answers, parse_problems = answers_for(committed, pending, branch=branch)
    outcome.problems = problems + parse_problems
    for problem in outcome.problems:
        log.warning("approval_file_problem", problem=str(problem))
    for answer in answers:
        try:
            outcome.recorded.append(ingress.record(answer, origin="approval-file"))
        except Rejected as exc:  # the task finished meanwhile: nothing to answer any more
            log.info("approval_file_not_recorded", reason=str(exc), context=answer.shkeptncontext)
    return outcome
