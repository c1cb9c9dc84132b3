"""`reconciler upstream ...`: commands that prepare an upstream repository.

`init` exists so the example upstream (kept as one directory per branch for
readability) becomes the git repository the reconciler actually polls, with
commits that are identical on every machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from reconciler.cli.validate import EXIT_INVALID, EXIT_UNUSABLE, EXIT_VALID, render_text
from reconciler.core.validation import validate_upstream
from reconciler.upstream.files import GitFiles
from reconciler.upstream.init import InitError, init_upstream


@click.group()
def upstream() -> None:
    """Prepare upstream repositories."""


@upstream.command("init")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--main-branch", default="main", show_default=True, help="Directory/branch holding shipyard.yaml."
)
@click.option("--bare", is_flag=True, help="Create a bare repository (no work tree).")
def init(source: Path, dest: Path, main_branch: str, bare: bool) -> None:
    """Turn SOURCE (one sub-directory per branch, like example-upstream/) into a git repository at DEST.

    Each branch gets one commit with a fixed author and date, so the SHAs are the same
    on every run. Directories starting with '.' or '_' are not branches. The new
    repository is validated; exit status 1 means it was created but is invalid.

    Example: reconciler upstream init example-upstream /tmp/fulltour-upstream
    """
    try:
        created = init_upstream(source, dest, main_branch=main_branch, bare=bare)
    except InitError as exc:
        click.echo(f"reconciler upstream init: {exc}", err=True)
        sys.exit(EXIT_UNUSABLE)
    for branch, sha in created.branches.items():
        click.echo(f"{branch} {sha}")
    result = validate_upstream(GitFiles(str(created.path)), main_branch=main_branch)
    click.echo(render_text(result, f"git repository {created.path}"))
    sys.exit(EXIT_VALID if result.ok else EXIT_INVALID)
