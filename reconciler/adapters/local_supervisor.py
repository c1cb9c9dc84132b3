"""A detached supervisor for one local job: `python -I -S reconciler/adapters/local_supervisor.py JOB_DIR`.

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

It is started as a script (`python -I -S <this file> JOB_DIR`), not with `-m`, and
imports only modules built into the interpreter (os, _signal, time, marshal): no
`reconciler` package, no `subprocess`, `json` or `pathlib`, whose imports cost more CPU
than the supervisor's whole work (scale bench: ~40 ms of CPU per job before, ~12 after,
on 2 shared cores where every job's CPU is time the control loop waits for). So it forks
and execs the task itself, reads the `supervisor.spec` twin of `spec.json` the runner
writes with `marshal` (falling back to `spec.json`, e.g. for a job staged by another
Python), and writes its JSON files by hand (`json` only for a free-text message). Every
file descriptor it opens is non-inheritable (PEP 446), so the task gets only 0, 1, 2.
"""

from __future__ import annotations

import marshal
import os
import sys
import time

TYPE_CHECKING = False  # not `typing`'s: its import alone costs the supervisor ~3 ms
if TYPE_CHECKING:
    import signal
    from typing import Any
else:
    try:  # the C module `signal` wraps: `signal` itself imports enum, ~4 ms of a ~15 ms start
        import _signal as signal
    except ImportError:  # not CPython
        import signal

KILL_GRACE_SECONDS = 3.0
SPEC_TWIN = "supervisor.spec"
"""`spec.json`'s content as `marshal` bytes, written by the runner before it spawns this."""
_PLAIN = frozenset(map(chr, range(0x20, 0x7F))) - {'"', "\\"}


def _json(value: Any) -> str:
    """JSON of the flat values written here (ints, floats, None, strings), keys sorted."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_json(k)}: {_json(v)}" for k, v in sorted(value.items())) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN.issuperset(text):
        return f'"{text}"'
    import json  # only for a message with characters to escape (a failed start)

    return json.dumps(text)


def _write_json(path: str, value: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, _json(value).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_spec(job_dir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(job_dir, SPEC_TWIN), "rb") as fh:
            spec = marshal.load(fh)
        if isinstance(spec, dict):
            return spec
    except (OSError, EOFError, ValueError, TypeError):
        pass
    import json  # a job staged without the twin (or by another Python version)

    with open(os.path.join(job_dir, "spec.json"), "rb") as fh:
        loaded = json.load(fh)
    return dict(loaded)


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


def _wait(pid: int, timeout: float) -> int | None:
    """The exit code (negative: killed by that signal) once `pid` ends, or None after `timeout`
    seconds; polled, as `subprocess.Popen.wait(timeout)` does, doubling from 1 ms to 50 ms."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def _stop(pid: int, pgid: int) -> int | None:
    _kill_group(pgid, signal.SIGTERM)
    code = _wait(pid, KILL_GRACE_SECONDS)
    _kill_group(pgid, signal.SIGKILL)
    return code if code is not None else _wait(pid, KILL_GRACE_SECONDS)


def _start(spec: dict[str, Any], out_fd: int) -> tuple[int, str]:
    """Fork and exec the task in its own process group: (pid, "") or (0, why it could not start)."""
    argv = [str(a) for a in spec["argv"]]
    env = {str(k): str(v) for k, v in spec["env"].items()}
    user = spec.get("user")
    null = os.open(os.devnull, os.O_RDONLY)
    errors_r, errors_w = os.pipe()  # both close-on-exec: EOF at once when the exec succeeds
    pid = os.fork()
    if pid == 0:  # the child: only calls that are safe after fork, then exec or report and _exit
        try:
            os.setpgid(0, 0)
            os.dup2(null, 0)
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            os.chdir(str(spec["cwd"]))
            if isinstance(user, dict):  # the job's own unprivileged user, no supplementary groups
                os.setgroups([])
                os.setgid(int(user["gid"]))
                os.setuid(int(user["uid"]))
                os.umask(0o077)
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            os.write(errors_w, (exc.strerror or str(exc)).encode(errors="replace"))
        except BaseException as exc:
            os.write(errors_w, f"{type(exc).__name__}: {exc}".encode(errors="replace"))
        finally:
            os._exit(127)
    os.close(errors_w)
    os.close(null)
    chunks = []
    while chunk := os.read(errors_r, 4096):
        chunks.append(chunk)
    os.close(errors_r)
    if chunks:
        os.waitpid(pid, 0)
        return 0, b"".join(chunks).decode(errors="replace")
    return pid, ""


def supervise(job_dir: str) -> int:
    spec = _read_spec(job_dir)
    try:
        fd = os.open(os.path.join(job_dir, "claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
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

    out_fd = os.open(os.path.join(job_dir, "output.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    user = spec.get("user")
    pid, why = _start(spec, out_fd)
    os.close(out_fd)
    if not pid:
        who = f" as {user.get('name')} (uid {user['uid']})" if isinstance(user, dict) else ""
        argv0 = spec["argv"][0]
        _write_json(
            os.path.join(job_dir, "result.json"),
            {
                "exit_code": None,
                "reason": "NeverRan",
                "message": f"could not start {argv0}{who}: {why}",
                "started": started,
                "finished": _now(),
            },
        )
        return 0
    pgid = pid
    _write_json(
        os.path.join(job_dir, "supervisor.json"), {"pid": os.getpid(), "pgid": pgid, "started": started}
    )

    deadline = float(spec["deadline"])
    reason = "Completed"
    while True:
        if cancelled["signal"]:
            code = _stop(pid, pgid)
            reason = "Cancelled"
            break
        remaining = deadline - _now()
        if remaining <= 0:
            code = _stop(pid, pgid)
            reason = "DeadlineExceeded"
            break
        code = _wait(pid, min(remaining, 0.5))
        if code is not None:
            break
    if _group_alive(pgid):
        _kill_group(pgid, signal.SIGKILL)
    if reason == "Completed" and code != 0:
        reason = "Failed"
    _write_json(
        os.path.join(job_dir, "result.json"),
        {"exit_code": code, "reason": reason, "message": "", "started": started, "finished": _now()},
    )
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -I -S local_supervisor.py JOB_DIR", file=sys.stderr)
        return 2
    return supervise(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
