"""A detached supervisor for one local job: `python -m reconciler.adapters.local_supervisor JOB_DIR`.

The local runner starts this in a new session so the task outlives the reconciler
(a SIGKILLed reconciler must not take running tasks with it, and must find their
result after a restart instead of starting them again). The supervisor

1. claims the job directory (`claim`, created exclusively: a second supervisor for
   the same job exits at once, so a task runs at most once);
2. records its pid and the task's process group in `supervisor.json`;
3. runs the argv of `spec.json` in its own process group with exactly the env of
   `spec.json`, stdout and stderr into `output.log` (like a pod log), as the
   unprivileged `user` of `spec.json` when there is one (the supervisor itself stays
   the reconciler's user, so it can always kill the group and write the result);
4. at the absolute `deadline` of `spec.json` sends SIGTERM to the whole group,
   then SIGKILL after a grace period; when the task's main process ends, anything
   left in its group is killed too (as when a container stops);
5. writes `result.json` atomically: exit code and reason.

Only the standard library is used, so it starts fast and cannot be broken by the
reconciler's own imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

KILL_GRACE_SECONDS = 3.0


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, sort_keys=True))
    os.replace(tmp, path)


def _now() -> float:
    return time.time()


def _kill_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _stop(proc: subprocess.Popen[bytes], pgid: int) -> None:
    _kill_group(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_SECONDS)
    _kill_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_SECONDS)


def supervise(job_dir: Path) -> int:
    spec = json.loads((job_dir / "spec.json").read_text())
    try:
        fd = os.open(job_dir / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return 0
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)

    started = _now()
    cancelled = {"signal": 0}

    def _on_term(signum: int, _frame: Any) -> None:
        cancelled["signal"] = signum

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)

    out_fd = os.open(job_dir / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    user = spec.get("user")
    identity: dict[str, Any] = {}
    if user:  # the job's own unprivileged user, without supplementary groups (spec.json is root's)
        identity = {"user": int(user["uid"]), "group": int(user["gid"]), "extra_groups": [], "umask": 0o077}
    try:
        proc = subprocess.Popen(
            spec["argv"],
            env=spec["env"],
            cwd=spec["cwd"],
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=subprocess.STDOUT,
            process_group=0,
            close_fds=True,
            **identity,
        )
    except OSError as exc:
        os.close(out_fd)
        who = f" as {user.get('name')} (uid {user['uid']})" if user else ""
        _write_json(
            job_dir / "result.json",
            {
                "exit_code": None,
                "reason": "NeverRan",
                "message": f"could not start {spec['argv'][0]}{who}: {exc.strerror or exc}",
                "started": started,
                "finished": _now(),
            },
        )
        return 0
    os.close(out_fd)
    pgid = proc.pid
    _write_json(job_dir / "supervisor.json", {"pid": os.getpid(), "pgid": pgid, "started": started})

    deadline = float(spec["deadline"])
    reason = "Completed"
    while True:
        if cancelled["signal"]:
            _stop(proc, pgid)
            reason = "Cancelled"
            break
        remaining = deadline - _now()
        if remaining <= 0:
            _stop(proc, pgid)
            reason = "DeadlineExceeded"
            break
        try:
            proc.wait(timeout=min(remaining, 0.5))
            break
        except subprocess.TimeoutExpired:
            continue
    code = proc.returncode
    if _group_alive(pgid):
        _kill_group(pgid, signal.SIGKILL)
    if reason == "Completed" and code != 0:
        reason = "Failed"
    _write_json(
        job_dir / "result.json",
        {"exit_code": code, "reason": reason, "message": "", "started": started, "finished": _now()},
    )
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m reconciler.adapters.local_supervisor JOB_DIR", file=sys.stderr)
        return 2
    return supervise(Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
