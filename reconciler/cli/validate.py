"""`reconciler validate UPSTREAM`: check an upstream before the reconciler ever runs it.

Exit codes are part of the contract, so scripts and CI can tell a broken upstream
from a broken invocation: 0 valid, 1 invalid (the problems are printed), 2 the
input could not be read at all (not a repository or branch directory, an
unreachable or unauthorised URL).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pygit2
from pygit2.enums import RepositoryOpenFlag

from reconciler.base.redact import redact
from reconciler.cli.common import output_option
from reconciler.core.localcommands import describe
from reconciler.core.validation import UpstreamFiles, ValidationResult, validate_upstream
from reconciler.settings import load_settings
from reconciler.upstream.files import DirectoryFiles, GitFiles

EXIT_VALID, EXIT_INVALID, EXIT_UNUSABLE = 0, 1, 2


class UnusableUpstream(Exception):
    """The argument names nothing we can read as an upstream; the message says what was expected."""


def open_git(path: Path) -> pygit2.Repository | None:
    """The repository at exactly `path` (bare or not), without searching parent directories."""
    try:
        return pygit2.Repository(str(path), RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, KeyError, ValueError):
        return None


@contextmanager
def open_upstream(spec: str) -> Iterator[tuple[UpstreamFiles, str]]:
    """Files of the upstream named by `spec` (path or URL) and a description for messages.

    A remote URL is fetched into a temporary bare mirror (all branches) that is removed
    afterwards; credentials come from the usual settings (`RECONCILER_UPSTREAM_TOKEN`, ...).
    """
    path = Path(spec).expanduser()
    if "://" not in spec and path.exists():
        if not path.is_dir():
            raise UnusableUpstream(
                f"{spec} is a file; expected a git repository or a directory with one sub-directory per branch"
            )
        repo = open_git(path)
        if repo is not None:
            yield GitFiles(repo), f"git repository {path}"
            return
        directory = DirectoryFiles(path)
        if (path / "shipyard.yaml").is_file():
            raise UnusableUpstream(
                f"{spec} holds shipyard.yaml itself, so it is one branch's directory; pass its parent, which "
                "has one directory per branch (main/, qa/, ...), or a git repository"
            )
        if not directory.branches():
            raise UnusableUpstream(
                f"{spec} has no branch directories; expected a git repository or a directory laid out "
                "like example-upstream/ (main/, qa/, production/, ...)"
            )
        yield directory, f"directory {path}"
        return
    if "://" not in spec and "@" not in spec:
        raise UnusableUpstream(f"{spec} does not exist; expected a path or a git URL")
    from reconciler.upstream.credentials import resolve_upstream
    from reconciler.upstream.mirror import Mirror, UpstreamError

    try:
        upstream = resolve_upstream(load_settings(), spec)
    except ValueError as exc:
        raise UnusableUpstream(redact(str(exc))) from None
    with tempfile.TemporaryDirectory(prefix="reconciler-validate-") as tmp:
        mirror = Mirror(Path(tmp) / "upstream.git", upstream)
        try:
            mirror.fetch()
        except UpstreamError as exc:
            raise UnusableUpstream(f"cannot read {upstream.url}: {exc}") from None
        yield mirror.files(), f"{upstream.url}"


def render_text(result: ValidationResult, where: str) -> str:
    lines = [str(p) if p.severity == "error" else f"{p} (warning)" for p in result.problems]
    branches = ", ".join(result.config.revisions) or "none"
    errors, warnings = len(result.errors), len(result.warnings)
    verdict = "valid" if result.ok else "INVALID"
    lines.append(
        f"{where}: {verdict}: {errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)} "
        f"(branches checked: {branches})"
    )
    return "\n".join(redact(line) for line in lines)


def render_json(result: ValidationResult, where: str, local_refused: int = 0) -> str:
    return json.dumps(
        {
            "upstream": redact(where),
            "valid": result.ok,
            "errors": len(result.errors),
            "warnings": len(result.warnings),
            "local_runner_refuses": local_refused,
            "branches": dict(result.config.revisions),
            "project": result.config.project,
            "problems": [
                {k: (redact(v) if isinstance(v, str) else v) for k, v in p.model_dump().items()}
                for p in result.problems
            ],
        },
        indent=2,
    )


@click.command()
@click.argument("upstream")
@click.option(
    "--main-branch", default=None, help="Branch holding shipyard.yaml (default: setting main_branch, 'main')."
)
@output_option(help="Report format.")
@click.option(
    "--runner",
    type=click.Choice(["local", "kubernetes"]),
    default=None,
    help="Where the jobs will run. local: tasks a local runner refuses (commands off local_commands) are "
    "errors; kubernetes: not checked; not given: a note says how many a local runner would refuse.",
)
def validate(upstream: str, main_branch: str | None, output: str, runner: str | None) -> None:
    """Check every file of UPSTREAM and the links between them.

    UPSTREAM is a git repository (a local path or a URL; every branch is read) or a
    directory laid out like example-upstream/ (one sub-directory per branch).
    Exit status: 0 valid, 1 invalid, 2 the upstream could not be read.

    Example: reconciler validate example-upstream
    """
    settings = load_settings()
    main = main_branch or settings.main_branch
    try:
        with open_upstream(upstream) as (files, where):
            result = validate_upstream(
                files, main_branch=main, local_commands=settings.local_commands if runner == "local" else None
            )
            refused = 0
            if runner is None:  # say what a local runner would refuse, without making it a problem
                local = validate_upstream(
                    files, main_branch=main, previous=result, local_commands=settings.local_commands
                )
                refused = len(local.problems) - len(result.problems)
    except UnusableUpstream as exc:
        if output == "json":
            click.echo(
                json.dumps({"upstream": redact(upstream), "valid": False, "unusable": redact(str(exc))})
            )
        click.echo(f"reconciler validate: {redact(str(exc))}", err=True)
        sys.exit(EXIT_UNUSABLE)
    if output == "json":
        click.echo(render_json(result, where, refused))
    else:
        click.echo(render_text(result, where))
        if refused:
            click.echo(
                f"note: a local runner would refuse {refused} job task{'s' * (refused != 1)} (commands off "
                f"local_commands: {describe(settings.local_commands)}); `reconciler validate --runner local "
                f"{redact(upstream)}` lists them"
            )
    sys.exit(EXIT_VALID if result.ok else EXIT_INVALID)
