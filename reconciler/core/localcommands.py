"""Which commands the local runner may start on this host: the operator's allow-list.

A Kubernetes Job runs in a container the cluster isolates; a local job is a process
on the reconciler's host. Whoever can push a stage branch writes `job/config.yaml`,
so without a limit they could run anything there (issue 20: `cmd: [sh, -c]` read
the reconciler's API token and rewrote its ledger). The local runner therefore runs
only commands the operator listed in the `local_commands` setting, and `reconciler
validate` / the snapshot check say which tasks a local runner would refuse.

An entry is the first words of a task's command line (`cmd` then `args`, as
written in the job config, before any `$(VAR)` expansion), split like a shell
would (`shlex`): `locust` allows `locust ...` with any arguments,
`python -m reconciler.demo.localhelm` allows that module with any arguments. Words
are compared exactly, so an allowed word can never be the result of an expansion;
the program is looked up on the runner's own PATH, never the task's. `*` allows
every command (the operator accepts that stage-branch pushers run anything the
job user may run).

An allowed program still runs what it is given: `locust -f` runs the locustfile
committed with the service, which is Python. The allow-list bounds which programs
start; the job user (see `reconciler.adapters.local_runner`) bounds what they can
reach.

May import: stdlib only.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

DEFAULT_LOCAL_COMMANDS: tuple[str, ...] = ("python -m reconciler.demo.localhelm", "locust")
"""What example-upstream/_local (the demo) needs: localhelm standing in for helm, and locust."""
ANY_COMMAND = "*"

FORBIDDEN_ENV = frozenset(
    {
        "PATH",
        "GCONV_PATH",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "RUBYLIB",
        "RUBYOPT",
        "NODE_OPTIONS",
        "NODE_PATH",
    }
)
"""Env names a local task may not set: they make an allowed program load other code."""
FORBIDDEN_ENV_PREFIXES = ("LD_", "PYTHON")
HARMLESS_ENV = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONUTF8"})


def entries(allowed: Sequence[str]) -> list[list[str]]:
    """The allow-list split into words; entries that do not split (unbalanced quotes) allow nothing."""
    out: list[list[str]] = []
    for entry in allowed:
        try:
            words = shlex.split(entry)
        except ValueError:
            continue
        if words:
            out.append(words)
    return out


def command_allowed(words: Sequence[str], allowed: Sequence[str]) -> bool:
    return any(prefix == [ANY_COMMAND] or list(words[: len(prefix)]) == prefix for prefix in entries(allowed))


def describe(allowed: Sequence[str]) -> str:
    return "; ".join(allowed) if allowed else "(empty: no command is allowed)"


def refusal(task: str, words: Sequence[str], allowed: Sequence[str]) -> str | None:
    """Why the local runner refuses a task's command line, or None when it is allowed."""
    if command_allowed(words, allowed):
        return None
    if not words:
        return (
            f"task {task!r} has no cmd: a local runner cannot use an image's entrypoint and runs only commands "
            f"the operator listed (local_commands: {describe(allowed)})"
        )
    shown = shlex.join(list(words[:4])) + (" ..." if len(words) > 4 else "")
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return (
        f"command {shown!r} of task {task!r} is not on the local runner's allow-list "
        f"(local_commands: {describe(allowed)}): a local job runs on the reconciler's host, so only commands "
        "the operator listed start; add it to local_commands if everyone who can push this branch may run "
        "it, or run jobs on Kubernetes"
    )


def env_refusal(task: str, name: str) -> str | None:
    """Why a local task may not set env variable `name`, or None."""
    if name in HARMLESS_ENV:
        return None
    if name in FORBIDDEN_ENV or name.startswith(FORBIDDEN_ENV_PREFIXES):
        return (
            f"task {task!r} sets env {name!r}, which would make a command the local runner allows load other "
            "code; PATH, LD_*, PYTHON* and similar are the local runner's, not a task's"
        )
    return None
