"""Real git servers on 127.0.0.1 for tests, and a helper that commits to a bare repository.

- `git_daemon`: `git daemon` serving a directory over git:// (fetch and push).
- `git_http` / `git_http_factory`: a smart-HTTP server around `git http-backend`,
  optionally demanding a token or basic auth, so credential handling is tested
  against the real protocol libgit2 speaks (401 challenge, then Basic).
- `UpstreamRepo`: commits files to a branch of a bare repository without a work
  tree (pygit2), force-pushes and deletes branches, like a person would upstream.

Both servers can be stopped and started again on the same port, to play an
upstream that goes away for a while. Every process and thread is stopped at teardown.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pygit2
import pytest
from pygit2.enums import FileMode

from tests.support.httpbody import read_body

GIT = shutil.which("git") or "git"
HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# ----------------------------------------------------------------------------- repositories


class UpstreamRepo:
    """A bare repository that tests commit to, the way a team's upstream changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if (path / "HEAD").exists():
            self.repo = pygit2.Repository(str(path))
        else:
            self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        self.clock = 1_700_000_000
        """Commit time, advanced per commit: the same steps give the same shas in any repo."""

    @property
    def author(self) -> pygit2.Signature:
        self.clock += 60
        return pygit2.Signature("Dev Eloper", "dev@example.com", self.clock, 0)

    def tip(self, branch: str) -> str | None:
        ref = self.repo.references.get(f"refs/heads/{branch}")
        return str(ref.target) if ref is not None else None

    def commit(
        self,
        branch: str,
        files: Mapping[str, bytes | str | None],
        message: str = "change",
        *,
        parent: str | None = None,
        base: str | None = None,
        author: pygit2.Signature | None = None,
        force: bool = False,
    ) -> str:
        """Commit `files` (None deletes) on top of the branch tip (or `parent`); returns the sha.

        `base` names a branch whose tip is the parent when `branch` does not exist yet
        (a stage branch forked from main). `force` moves the ref even when not a
        fast-forward (a force-push).
        """
        ref_name = f"refs/heads/{branch}"
        head = parent or self.tip(branch) or (self.tip(base) if base else None)
        index = pygit2.Index()
        if head is not None:
            index.read_tree(self.repo[head].peel(pygit2.Commit).tree)
        for path, data in files.items():
            if data is None:
                with contextlib.suppress(KeyError, OSError):
                    index.remove(path)
                continue
            raw = data.encode() if isinstance(data, str) else data
            index.add(pygit2.IndexEntry(path, self.repo.create_blob(raw), FileMode.BLOB))
        tree = index.write_tree(self.repo)
        sig = author or self.author
        parents = [pygit2.Oid(hex=head)] if head else []
        oid = self.repo.create_commit(None, sig, sig, message, tree, parents)
        if force or self.tip(branch) is None:
            self.repo.references.create(ref_name, oid, force=True)
        else:
            self.repo.lookup_reference(ref_name).set_target(oid)
        return str(oid)

    def force_push(
        self, branch: str, files: Mapping[str, bytes | str | None], message: str = "rewrite"
    ) -> str:
        """Replace the branch with a new root commit holding only `files`."""
        index = pygit2.Index()
        for path, data in files.items():
            if data is not None:
                raw = data.encode() if isinstance(data, str) else data
                index.add(pygit2.IndexEntry(path, self.repo.create_blob(raw), FileMode.BLOB))
        tree = index.write_tree(self.repo)
        sig = self.author
        oid = self.repo.create_commit(None, sig, sig, message, tree, [])
        self.repo.references.create(f"refs/heads/{branch}", oid, force=True)
        return str(oid)

    def seed_from_directory(self, root: Path, message: str = "seed") -> dict[str, str]:
        """Commit a branch-per-directory tree (the `example-upstream/` layout); main first."""
        branches = sorted(
            (d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))),
            key=lambda d: (d.name != "main", d.name),
        )
        tips: dict[str, str] = {}
        for d in branches:
            files = {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
            tips[d.name] = self.commit(
                d.name, files, f"{message}: {d.name}", base="main" if d.name != "main" else None
            )
        return tips

    def delete_branch(self, branch: str) -> None:
        self.repo.references.delete(f"refs/heads/{branch}")


@pytest.fixture
def upstream_repo(tmp_path: Path) -> UpstreamRepo:
    """An empty bare upstream at tmp_path/upstream/project.git."""
    path = tmp_path / "upstream" / "project.git"
    path.parent.mkdir(parents=True, exist_ok=True)
    return UpstreamRepo(path)


# ----------------------------------------------------------------------------- git daemon


class GitDaemon:
    """`git daemon` serving `base` on 127.0.0.1 (git://), pushes enabled unless `push=False`."""

    def __init__(self, base: Path, port: int | None = None, *, push: bool = True) -> None:
        self.base = base
        self.port = port or free_port()
        self.push = push
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen(
            [
                GIT,
                "daemon",
                f"--base-path={self.base}",
                "--export-all",
                "--enable=receive-pack" if self.push else "--disable=receive-pack",
                "--reuseaddr",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_listening(self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def git_daemon(tmp_path: Path, upstream_repo: UpstreamRepo) -> Iterator[GitDaemon]:
    """A git daemon serving tmp_path/upstream (so `upstream_repo` is `url("project.git")`)."""
    daemon = GitDaemon(upstream_repo.path.parent)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


# ----------------------------------------------------------------------------- smart HTTP


class SmartHttp:
    """`git http-backend` behind a threaded HTTP server on 127.0.0.1, with optional auth.

    `token`: any user name with this password (how GitHub/GitLab tokens are sent),
    or `Authorization: Bearer <token>`. `basic`: exactly this (user, password).
    `seen_authorization` keeps every Authorization header received, so tests can
    check what a client sent.
    """

    def __init__(
        self,
        base: Path,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.base = base
        self.token = token
        self.basic = basic
        self.port = port or free_port()
        self.requests = 0
        self.rejected = 0
        self.seen_authorization: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def authorized(self, header: str | None) -> bool:
        if self.token is None and self.basic is None:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return self.token is not None and value == self.token
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if self.basic is not None:
            return (user, password) == self.basic
        return password == self.token

    def start(self) -> None:
        if self._server is not None:
            return
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        _wait_listening(self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


def _handler_for(owner: SmartHttp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _body(self) -> bytes:
            return read_body(self)

        def _serve(self) -> None:
            owner.requests += 1
            body = self._body()
            auth = self.headers.get("Authorization")
            if auth:
                owner.seen_authorization.append(auth)
            if not owner.authorized(auth):
                owner.rejected += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(owner.base),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": "tester",
                "REMOTE_ADDR": "127.0.0.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "GATEWAY_INTERFACE": "CGI/1.1",
            }
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            proc = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, timeout=60)
            head, _, payload = proc.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = proc.stdout.partition(b"\n\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name.strip(), value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    return Handler


@pytest.fixture
def git_http_factory(tmp_path: Path, upstream_repo: UpstreamRepo) -> Iterator[Callable[..., SmartHttp]]:
    """Make smart-HTTP servers over tmp_path/upstream: `factory(token=..., basic=(user, pw))`."""
    servers: list[SmartHttp] = []

    def make(**kwargs: Any) -> SmartHttp:
        server = SmartHttp(upstream_repo.path.parent, **kwargs)
        server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def git_http(git_http_factory: Callable[..., SmartHttp]) -> SmartHttp:
    """A smart-HTTP server without auth serving tmp_path/upstream."""
    return git_http_factory()


# ----------------------------------------------------------------------------- ssh


SSHD = "/usr/sbin/sshd"


class SshServer:
    """OpenSSH's sshd on 127.0.0.1 accepting one client key, for git over ssh.

    `known_hosts` lists the server's host key; `client_key` is the private key
    authorised to log in as the current user. Repositories are addressed by
    absolute path: `url(path)`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.user = os.environ.get("USER") or "root"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        for name in ("host", "client", "stranger"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
            )
        self.client_key = root / "client"
        self.stranger_key = root / "stranger"
        shutil.copyfile(root / "client.pub", root / "authorized_keys")
        host_pub = (root / "host.pub").read_text().split()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        stranger_pub = (root / "stranger.pub").read_text().split()
        self.wrong_known_hosts = root / "wrong_known_hosts"
        self.wrong_known_hosts.write_text(f"[127.0.0.1]:{self.port} {stranger_pub[0]} {stranger_pub[1]}\n")
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            f"PidFile {root / 'sshd.pid'}\n"
        )

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_listening(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SshServer]:
    """sshd on 127.0.0.1 (needs Debian's openssh-server and root, else the test is skipped)."""
    if not os.path.exists(SSHD) or os.geteuid() != 0 or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd (openssh-server) not installed or not root: ssh transport not testable here")
    server = SshServer(tmp_path / "sshd")
    server.start()
    try:
        yield server
    finally:
        server.stop()
