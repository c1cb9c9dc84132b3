"""The local runner: a task's spec executed as a process on this host (the embedded default).

Without a cluster, the same `TaskSpec` that would become a Kubernetes Job runs
here: its files are staged in `<data_dir>/jobs/<job>/keptn/`, which stands in for
`/keptn` (every `/keptn` path in cmd, args, the job config's env values and workingDir is rewritten to
it), the job config's env values and `$(VAR)` references are expanded exactly as
the kubelet expands them (values from the event are literal: never expanded, never
rewritten), and the command is looked up on PATH: the image is reported, never
pulled. The process gets a minimal, explicit environment (PATH, HOME, LANG and the
task's env), never the reconciler's own (which may hold tokens).

Each job is run by a detached supervisor (`local_supervisor`) in its own session;
the job directory is the job's identity, named like the Kubernetes Job. A
restarted reconciler therefore adopts a running or finished job instead of
starting it again, and `maxPollDuration` kills the task's whole process group
even when the reconciler is gone.

Secrets (`valueFrom: secret`) come from `<data_dir>/secrets/<secret>/<key>` files,
the layout of a Kubernetes Secret mounted as a volume. Resources and the security
context are not enforced locally.

Whoever can push a stage branch writes the job config, so a local job is treated
as untrusted code on this host (issue 20):

- only commands on the operator's allow-list start (`local_commands`, see
  `reconciler.core.localcommands`), found on the runner's PATH, never the task's;
  env names that make a program load other code (PATH, LD_*, PYTHON*) are refused;
- the environment is built from nothing: PATH, HOME (the job's own directory),
  LANG, PYTHONSAFEPATH, then the task's env and Secrets; the reconciler's own
  (tokens) is never inherited;
- when the reconciler runs as root, the job runs as `local_job_user` (default
  `nobody`): its `/keptn` directory is handed to that user, the data directory
  keeps everything else owner-only (ledger, mirror, Secrets, other jobs' records),
  and a root process's `/proc/<pid>/environ` is closed to it. Before launching, the
  runner checks that user can reach the program and the job directory and says
  which directory stops it otherwise. Jobs share that one user, so a running job
  can see another running job's `/keptn`. Not root: jobs run as the reconciler's
  own user, which `reconciler status` and the log say loudly.
"""

from __future__ import annotations

import contextlib
import grp
import json
import marshal
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.adapters import local_supervisor
from reconciler.adapters.runner import LOG_TAIL_BYTES, JobHandle, JobOutcome, LaunchJournal
from reconciler.base.redact import register_secrets
from reconciler.core.jobspec import KEPTN_DIR, JobSpecError, TaskSpec, expand, timeout_message
from reconciler.core.localcommands import DEFAULT_LOCAL_COMMANDS, env_refusal, refusal
from reconciler.core.outcomes import PartHealth

SUPERVISOR_SCRIPT = str(Path(local_supervisor.__file__).resolve())
"""Run by path, not `-m`: `-m` would import the `reconciler` package (and runpy) first."""
SPEC_TWIN = local_supervisor.SPEC_TWIN
CLAIM_WAIT_SECONDS = 2.0
"""How long an adopting runner waits for a just-spawned supervisor to claim its job."""
WAIT_GRACE_SECONDS = 10.0
"""Beyond the deadline, how long to wait for the supervisor to report the kill."""
_KEPTN_PATH = re.compile(r"(?<![\w.~/-])/keptn(?=/|$|[\s:;,\"'])")


def rewrite_keptn(text: str, staging: Path) -> str:
    """`/keptn/x` -> `<staging>/x` wherever a path starts (after `=`, `:`, space, quote, or at 0)."""
    return _KEPTN_PATH.sub(lambda _: str(staging), text)


@dataclass(frozen=True)
class LocalProcess:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def base_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """PATH with this interpreter's bin dir first, LANG, PYTHONSAFEPATH; HOME is set per job.

    The bin dir comes first so `python` and tools installed with the reconciler
    (`locust` from `reconciler[load]`) are the ones a task finds, as an image
    brings its own tools. PYTHONSAFEPATH keeps `python -m` from importing modules
    out of the job's working directory, where the stage branch's files are."""
    source = os.environ if environ is None else environ
    bindir = str(Path(sys.executable).parent)
    rest = [p for p in source.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    path = os.pathsep.join([bindir, *rest])
    return {
        "PATH": path,
        "HOME": source.get("HOME", str(Path.home())),
        "LANG": source.get("LANG", "C.UTF-8"),
        "PYTHONSAFEPATH": "1",
    }


# --- who jobs run as ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobUser:
    """The unprivileged identity a root reconciler runs local jobs as."""

    uid: int
    gid: int
    name: str

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid})"


def resolve_job_user(setting: str) -> JobUser:
    """`nobody`, `65534`, `65534:65534` or `nobody:nogroup`; raises JobSpecError naming the setting."""
    user, _, group = setting.strip().partition(":")
    try:
        if user.isdigit():
            uid = int(user)
            try:
                entry = pwd.getpwuid(uid)
                name, gid = entry.pw_name, entry.pw_gid
            except KeyError:
                name, gid = user, uid
        else:
            entry = pwd.getpwnam(user)
            uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise JobSpecError(
            f"local_job_user {setting!r} does not exist on this host; expected a user name, uid or uid:gid "
            "(e.g. nobody)"
        ) from None
    return JobUser(uid=uid, gid=gid, name=name)


def job_identity(setting: str | None, *, euid: int | None = None) -> JobUser | None:
    """Who a job runs as, None for the reconciler's own user (not root, or `root` on purpose)."""
    euid = os.geteuid() if euid is None else euid
    if setting is None or euid != 0:
        return None
    user = resolve_job_user(setting)
    return None if user.uid == 0 else user


def _may(st: os.stat_result, user: JobUser, want: int) -> bool:
    """Mode bits only (ACLs aside): does `user` (no supplementary groups) have `want` (r=4, w=2, x=1)?"""
    if st.st_uid == user.uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid == user.gid:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


def unreachable(path: Path, user: JobUser, *, want: int = 0) -> str | None:
    """Which directory on the way to `path` `user` cannot search (or `path` lacks `want`), else None."""
    absolute = Path(os.path.abspath(path))
    for directory in reversed(absolute.parents):
        try:
            if not _may(directory.stat(), user, 1):
                return f"{directory} is not searchable by it"
        except OSError as exc:
            return f"{directory}: {exc.strerror or exc}"
    if want:
        try:
            if not _may(absolute.stat(), user, want):
                return f"{absolute} is not {'executable' if want == 1 else 'readable'} by it"
        except OSError as exc:
            return f"{absolute}: {exc.strerror or exc}"
    return None


def program_unreachable(program: str, user: JobUser) -> str | None:
    """Why `user` cannot start `program` (an absolute path): the path, its real path, a `#!` interpreter."""
    seen: list[Path] = []
    candidates = [Path(program), Path(os.path.realpath(program))]
    while candidates:
        path = candidates.pop(0)
        if path in seen:
            continue
        seen.append(path)
        why = unreachable(path, user, want=1)
        if why is not None:
            shown = program if str(path) == program else f"{program} -> {path}"
            return f"{shown}: {why}"
        if len(seen) <= 4:
            with contextlib.suppress(OSError), path.open("rb") as fh:
                head = fh.read(256)
                if head.startswith(b"#!"):
                    words = head[2:].split(b"\n", 1)[0].split()
                    if words:
                        interpreter = os.fsdecode(words[0])
                        candidates += [Path(interpreter), Path(os.path.realpath(interpreter))]
    return None


def job_user_notes(job_user: str, data_dir: Path, *, euid: int | None = None) -> list[str]:
    """What a person running local jobs must know about who runs them (for the log and status);
    `job_user` is the `local_job_user` setting."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        try:
            name = pwd.getpwuid(euid).pw_name
        except KeyError:
            name = str(euid)
        return [
            f"local jobs run as the reconciler's own user {name} (uid {euid}): a job can read and change its "
            f"data directory ({data_dir}) and read its environment; run the reconciler as root (jobs "
            "then run as local_job_user) or run jobs on Kubernetes"
        ]
    try:
        user = job_identity(job_user, euid=euid)
    except JobSpecError as exc:
        return [f"{exc}: every local job fails until it is fixed"]
    if user is None:
        return [
            "local jobs run as root (local_job_user=root): whoever can push a stage branch runs what "
            "local_commands allows as root on this host"
        ]
    return reachability_problems(user, Path(data_dir))


def reachability_problems(user: JobUser, data_dir: Path) -> list[str]:
    """Why jobs running as `user` would fail here: this installation's python, or the data directory,
    out of its reach (e.g. a pyenv under /root, or data_dir in a private temporary directory)."""
    notes = []
    why = program_unreachable(sys.executable, user)
    if why is not None:
        notes.append(
            f"local jobs run as {user}, who cannot run this installation's python ({why}): local jobs that "
            "run python or tools installed with it (locust) fail; install the reconciler where that user can "
            "reach it, or set local_job_user"
        )
    resolved = Path(data_dir).resolve()
    why = unreachable(resolved.parent, user)
    if why is not None:
        notes.append(
            f"local jobs run as {user}, who cannot reach the data directory {resolved} ({why}): every local "
            "job fails; put data_dir where it can (e.g. /var/lib/reconciler), or set local_job_user"
        )
    return notes


def local_process(
    spec: TaskSpec,
    staging: Path,
    secrets: Mapping[str, Mapping[str, str]],
    base_env: Mapping[str, str],
) -> LocalProcess:
    """argv, env and cwd for a spec, as the kubelet would resolve them inside the pod."""
    env: dict[str, str] = {}
    for mount in spec.secrets:
        if not mount.as_file:
            env.update(secrets.get(mount.secret, {}))
    for entry in spec.env:
        if entry.secret_key_ref is not None:
            ref = entry.secret_key_ref
            if ref.key not in secrets.get(ref.name, {}):
                raise JobSpecError(f"secret {ref.name!r} has no key {ref.key!r}")
            env[entry.name] = secrets[ref.name][ref.key]
        elif entry.literal:  # from the event: exactly as sent, never expanded or rewritten
            env[entry.name] = entry.value or ""
        else:
            env[entry.name] = expand(rewrite_keptn(entry.value or "", staging), env)
    words = [expand(rewrite_keptn(w, staging), env) for w in [*spec.cmd, *spec.args]]
    if not spec.cmd:
        raise JobSpecError(
            f"task {spec.task_name!r} has no cmd; the local runner cannot use the entrypoint of image "
            f"{spec.image}"
        )
    for name in env:
        problem = env_refusal(spec.task_name, name)
        if problem:
            raise JobSpecError(problem)
    full_env = {**base_env, "HOME": str(staging), **env}
    program = words[0]
    if "/" not in program:
        found = shutil.which(program, path=base_env.get("PATH", ""))
        if found is None:
            raise JobSpecError(
                f"command {program!r} of task {spec.task_name!r} was not found on PATH; the local runner "
                f"runs commands on this host and does not pull image {spec.image}"
            )
        words[0] = found
    elif not os.access(program, os.X_OK):
        raise JobSpecError(f"command {program!r} of task {spec.task_name!r} is not an executable file")
    cwd = staging
    if spec.working_dir:
        cwd = Path(os.path.normpath(rewrite_keptn(spec.working_dir, staging)))
        if not cwd.is_absolute() or not (cwd == staging or staging in cwd.parents):
            raise JobSpecError(
                f"workingDir {spec.working_dir!r} of task {spec.task_name!r} is outside {KEPTN_DIR}: the local "
                f"runner runs a job in its own directory; expected {KEPTN_DIR} or a directory under it"
            )
    return LocalProcess(argv=words, env=full_env, cwd=cwd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _pid_runs(pid: int, marker: str) -> bool:
    """Whether `pid` is alive (not a zombie) and still the process we started (its argv has `marker`)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else ""
    return state != "Z" and marker.encode() in cmdline


def tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text = f"[... {size - len(data)} earlier bytes not shown ...]\n" + text.split("\n", 1)[-1]
    return text


class LocalRunner:
    """Runs TaskSpecs as supervised local processes under `<data_dir>/jobs/<job-name>/`."""

    name = "local"

    def __init__(
        self,
        data_dir: Path,
        *,
        journal: LaunchJournal | None = None,
        python: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        poll_seconds: float = 0.1,
        allowed_commands: Sequence[str] = DEFAULT_LOCAL_COMMANDS,
        job_user: str | None = None,
    ) -> None:
        """`allowed_commands`: the operator's allow-list (`local_commands`). `job_user`: who jobs
        run as when this process is root (`local_job_user`); None keeps them as this process's
        user, which only tests and embedders choose (`runtime.environment` passes the setting)."""
        self.data_dir = Path(data_dir).resolve()
        self.jobs_dir = self.data_dir / "jobs"
        self.secrets_dir = self.data_dir / "secrets"
        self.journal = journal or LaunchJournal(self.data_dir)
        self.python = python
        self.base_env = base_environment(environ)
        self.poll_seconds = poll_seconds
        self.allowed_commands = list(allowed_commands)
        self.job_user_setting = job_user
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def health(self) -> PartHealth | None:
        return None  # processes on this host: nothing between us and them to be down

    def identity(self) -> JobUser | None:
        """Who the next job runs as (None: this process's user); raises JobSpecError for a bad setting."""
        return job_identity(self.job_user_setting)

    # --- secrets ------------------------------------------------------------------------------

    def _secret_dir(self, secret: str) -> Path:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", secret):
            raise JobSpecError(f"secret name {secret!r} is not a valid Kubernetes name")
        return self.secrets_dir / secret

    def secret_keys(self, namespace: str, secret: str) -> list[str] | None:
        directory = self._secret_dir(secret)
        if not directory.is_dir():
            raise JobSpecError(
                f"secret {secret!r} not found: the local runner reads secrets from "
                f"{self.secrets_dir}/<secret>/<key> files"
            )
        return sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))

    def _secret_values(self, spec: TaskSpec) -> dict[str, dict[str, str]]:
        names = {m.secret for m in spec.secrets}
        names |= {e.secret_key_ref.name for e in spec.env if e.secret_key_ref is not None}
        out: dict[str, dict[str, str]] = {}
        for name in sorted(names):
            keys = self.secret_keys(spec.namespace, name) or []
            directory = self._secret_dir(name)
            out[name] = {k: (directory / k).read_text().rstrip("\n") for k in keys}
            register_secrets(out[name].values())
        return out

    # --- launch / adopt ----------------------------------------------------------------------

    def job_dir(self, job_name: str) -> Path:
        return self.jobs_dir / job_name

    def launch(self, spec: TaskSpec) -> JobHandle:
        directory = self.job_dir(spec.job_name)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        existing = _read_json(directory / "spec.json") if directory.exists() else None
        if existing is not None:
            # Adopted after a restart: still redact the Secret values the output may show.
            with contextlib.suppress(JobSpecError, OSError):
                self._secret_values(spec)
            # killed after spec.json and before the journal line: the job runs now, record it
            self.journal.ensure(self.name, spec, image=spec.image, argv0=str(existing.get("argv", ["?"])[0]))
            self._ensure_supervisor(directory, existing)
            return self._handle(spec, existing, adopted=True)
        refused = refusal(spec.task_name, [*spec.cmd, *spec.args], self.allowed_commands)
        if refused:
            raise JobSpecError(refused)
        user = self.identity()
        staging = directory / "keptn"
        secrets = self._secret_values(spec)
        process = local_process(spec, staging, secrets, self.base_env)
        if user is not None:
            self._check_reachable(spec, process, user)
        try:
            directory.mkdir(mode=0o700 if user is None else 0o711)
        except FileExistsError:
            # A launch that died before writing spec.json: nothing ran, start over.
            shutil.rmtree(staging, ignore_errors=True)
        self._stage(spec, staging, secrets)
        process.cwd.mkdir(parents=True, exist_ok=True)  # a container runtime creates workingDir too
        if user is not None:
            self._hand_over(staging, user)
            self._protect_data_dir(user)
        created = time.time()
        limit = spec.active_deadline_seconds or spec.max_poll_seconds
        record = {
            "job": spec.job_name,
            "image": spec.image,
            "argv": process.argv,
            "env": process.env,
            "cwd": str(process.cwd),
            "created": created,
            "deadline": created + min(limit, spec.max_poll_seconds),
        }
        if user is not None:
            record["user"] = {"uid": user.uid, "gid": user.gid, "name": user.name}
        tmp = directory / "spec.json.tmp"
        _write_private(tmp, json.dumps(record, sort_keys=True).encode())
        os.replace(tmp, directory / "spec.json")
        self.journal.record(self.name, spec, image=spec.image, argv0=process.argv[0])
        self._spawn(directory, record)
        return self._handle(spec, record, adopted=False)

    def _check_reachable(self, spec: TaskSpec, process: LocalProcess, user: JobUser) -> None:
        """Say which directory stops the job user, instead of a bare `Permission denied` later."""
        why = program_unreachable(process.argv[0], user)
        if why is not None:
            raise JobSpecError(
                f"the local job user {user} cannot run the command of task {spec.task_name!r} ({why}); install "
                "it where that user can reach it, or set local_job_user"
            )
        why = unreachable(self.data_dir.parent, user)
        if why is not None:
            raise JobSpecError(
                f"the local job user {user} cannot reach its job directory under {self.data_dir} ({why}); put "
                "data_dir where it can (e.g. /var/lib/reconciler), or set local_job_user"
            )

    def _hand_over(self, staging: Path, user: JobUser) -> None:
        """The job's /keptn (and only that) belongs to the job user, as an emptyDir belongs to the pod."""
        os.chown(staging, user.uid, user.gid)
        os.chmod(staging, 0o700)
        for root, dirs, files in os.walk(staging):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)

    def _protect_data_dir(self, user: JobUser) -> None:
        """Nothing in the data directory is open to the job user but its way to `jobs/<job>/keptn`
        (and what already belongs to it, such as the demo's localhelm state): the directory and
        `jobs/` can be crossed, not listed; the ledger, the mirror, Secrets, the lock and the status
        lose their permissions for others (and for the group, if it is the job user's)."""
        me = os.geteuid()

        def closed(info: os.stat_result, crossable: bool) -> int:
            mode = stat.S_IMODE(info.st_mode) & ~0o007
            if info.st_gid == user.gid:
                mode &= ~0o070
            return mode | (0o001 if crossable else 0)

        for path in (self.data_dir, self.jobs_dir):
            with contextlib.suppress(OSError):
                info = path.stat()
                if info.st_uid == me:
                    os.chmod(path, closed(info, crossable=True))
        for entry in self.data_dir.iterdir():
            with contextlib.suppress(OSError):
                info = entry.lstat()
                if entry.name == "jobs" or info.st_uid != me or stat.S_ISLNK(info.st_mode):
                    continue
                os.chmod(entry, closed(info, crossable=False))

    def _stage(self, spec: TaskSpec, staging: Path, secrets: Mapping[str, Mapping[str, str]]) -> None:
        staging.mkdir(parents=True, exist_ok=True)
        root = staging.resolve()
        for staged in spec.files:
            target = (staging / staged.path).resolve()
            if root not in target.parents:
                raise JobSpecError(f"file {staged.path!r} would be staged outside {KEPTN_DIR}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(staged.data)
        for mount in spec.secrets:
            if mount.as_file:
                for key, value in secrets.get(mount.secret, {}).items():
                    _write_private(staging / "secrets" / mount.secret / key, value.encode())

    def _spawn(self, directory: Path, record: Mapping[str, Any]) -> None:
        # The supervisor reads the spec as marshal bytes (no json import: see local_supervisor),
        # written at each spawn by this interpreter, which is the one that will read it.
        _write_private(directory / SPEC_TWIN, marshal.dumps(dict(record)))
        with (directory / "supervisor.log").open("ab") as errors:
            proc = subprocess.Popen(
                # a script, isolated (-I: no PYTHON* variables, no script or user site dirs on
                # sys.path) and without site (-S): it imports only built-in modules, so its start
                # costs a few ms of CPU rather than ~40 (the scale bench's 50 jobs at once)
                [self.python, "-I", "-S", SUPERVISOR_SCRIPT, str(directory)],
                env=self.base_env,
                cwd=str(directory),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
                close_fds=True,
            )
        self._children[directory.name] = proc

    def _ensure_supervisor(self, directory: Path, record: Mapping[str, Any]) -> None:
        """Adopting a job whose supervisor never claimed it (killed between spawn and claim)."""
        if (directory / "claim").exists() or (directory / "result.json").exists():
            return
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while time.monotonic() < deadline:
            if (directory / "claim").exists():
                return
            time.sleep(0.05)
        self._spawn(directory, record)  # the exclusive claim makes a late first supervisor step aside

    def _handle(self, spec: TaskSpec, record: Mapping[str, Any], *, adopted: bool) -> JobHandle:
        return JobHandle(
            name=spec.job_name,
            namespace=spec.namespace,
            runner=self.name,
            started_at=datetime.fromtimestamp(float(record["created"]), tz=UTC),
            adopted=adopted,
            details={"dir": str(self.job_dir(spec.job_name)), "image": spec.image},
        )

    # --- wait ----------------------------------------------------------------------------------

    def _supervisor_alive(self, directory: Path) -> bool:
        child = self._children.get(directory.name)
        if child is not None and child.poll() is None:
            return True
        sup = _read_json(directory / "supervisor.json")
        if sup is not None:
            return _pid_runs(int(sup["pid"]), str(directory))
        claim = directory / "claim"
        if claim.exists():  # claimed, supervisor.json about to be written
            return time.time() - claim.stat().st_mtime < CLAIM_WAIT_SECONDS
        if child is not None:  # our supervisor exited without ever claiming the job
            return False
        spec = directory / "spec.json"
        return spec.exists() and time.time() - spec.stat().st_mtime < CLAIM_WAIT_SECONDS

    def wait(self, handle: JobHandle, spec: TaskSpec) -> JobOutcome:
        directory = self.job_dir(handle.name)
        record = _read_json(directory / "spec.json") or {}
        hard_stop = float(record.get("deadline", time.time())) + WAIT_GRACE_SECONDS
        while True:
            result = _read_json(directory / "result.json")
            if result is not None:
                self._reap(directory.name)
                return self._outcome(handle, spec, result)
            if not self._supervisor_alive(directory):
                result = _read_json(directory / "result.json")
                if result is not None:
                    return self._outcome(handle, spec, result)
                self._kill_task(directory)
                why = tail(directory / "supervisor.log", 2000).strip().splitlines()[-1:] or [
                    "no error output"
                ]
                return self._lost(handle, spec, f"the job's supervisor ended without a result ({why[0]})")
            if time.time() > hard_stop:
                self.cleanup(handle)
                return self._outcome(
                    handle, spec, {"reason": "DeadlineExceeded", "exit_code": None, "finished": time.time()}
                )
            time.sleep(self.poll_seconds)

    def _reap(self, name: str) -> None:
        child = self._children.pop(name, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=2)

    def _kill_task(self, directory: Path) -> None:
        sup = _read_json(directory / "supervisor.json")
        if sup is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(sup["pgid"]), signal.SIGKILL)

    def _lost(self, handle: JobHandle, spec: TaskSpec, why: str) -> JobOutcome:
        return JobOutcome(
            succeeded=False,
            reason="Lost",
            message=f"job {handle.name} failed. Reason: Lost, Message: {why}",
            logs=self.logs(handle),
            finished_at=datetime.now(UTC),
        )

    def _outcome(self, handle: JobHandle, spec: TaskSpec, result: Mapping[str, Any]) -> JobOutcome:
        finished = datetime.fromtimestamp(float(result.get("finished") or time.time()), tz=UTC)
        code = result.get("exit_code")
        reason = str(result.get("reason", "Failed"))
        logs = self.logs(handle, exit_code=code if reason != "Completed" else None, reason=reason)
        artifacts = self._artifacts(handle)
        if reason == "Completed":
            return JobOutcome(True, "Completed", "", logs, finished, code, artifacts)
        if reason == "DeadlineExceeded":
            return JobOutcome(
                False,
                "DeadlineExceeded",
                timeout_message(handle.name, spec.max_poll_seconds),
                logs,
                finished,
                code,
                artifacts,
            )
        if reason == "NeverRan":
            detail = str(result.get("message") or "the command could not be started")
            return JobOutcome(
                False,
                "NeverRan",
                f"job {handle.name} failed. Reason: NeverRan, Message: {detail}",
                logs,
                finished,
                code,
                artifacts,
            )
        if isinstance(code, int) and code < 0:
            detail = f"the command was killed by signal {signal.Signals(-code).name}"
        else:
            detail = f"the command exited with code {code}"
        if reason == "Cancelled":
            detail = "the job was cancelled"
        return JobOutcome(
            False,
            "Failed",
            f"job {handle.name} failed. Reason: Error, Message: {detail}",
            logs,
            finished,
            code,
            artifacts,
        )

    def _artifacts(self, handle: JobHandle) -> dict[str, str]:
        """Where a locust run with `--csv` left its statistics (for the locust SLI provider)."""
        staging = self.job_dir(handle.name) / "keptn"
        found = sorted(staging.rglob("*_stats.csv"))[:1] if staging.is_dir() else []
        if not found:
            return {}
        # Relative to the data directory, where the locust SLI provider resolves it.
        return {"locustStatsDir": str(found[0].parent.relative_to(self.data_dir))}

    def logs(self, handle: JobHandle, *, exit_code: Any = None, reason: str | None = None) -> str:
        directory = self.job_dir(handle.name)
        text = tail(directory / "output.log")
        if not text:
            return ""
        record = _read_json(directory / "spec.json") or {}
        argv = record.get("argv") or ["?"]
        who = f"Process {Path(str(argv[0])).name} of local job {handle.name}"
        if reason is not None and reason != "Completed":
            return f"{who} terminated with an error (Reason: {reason}, ExitCode: {exit_code}):\n{text}\n"
        return f"{who}:\n{text}\n"

    # --- cleanup -------------------------------------------------------------------------------

    def cleanup(self, handle: JobHandle) -> None:
        """Stop a job that is still running; its directory stays as the record that it ran."""
        directory = self.job_dir(handle.name)
        sup = _read_json(directory / "supervisor.json")
        if sup is not None and _pid_runs(int(sup["pid"]), str(directory)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(sup["pid"]), signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not (directory / "result.json").exists():
                time.sleep(0.05)
        self._kill_task(directory)
        self._reap(directory.name)

    def prune(self, older_than_seconds: float, *, limit: int = 100) -> int:
        """Delete finished job directories older than the given age (bounded per call)."""
        if not self.jobs_dir.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for directory in sorted(self.jobs_dir.iterdir()):
            if removed >= limit:
                break
            result = directory / "result.json"
            if directory.is_dir() and result.exists() and result.stat().st_mtime < cutoff:
                shutil.rmtree(directory, ignore_errors=True)
                removed += 1
        return removed
