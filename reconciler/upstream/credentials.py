"""Where the upstream is and how to authenticate to it, without ever showing a secret.

Users paste URLs with tokens in them (`https://oauth2:glpat-…@gitlab/…`); in a
cluster the token arrives as a mounted Secret file. Either way the secret is taken
out of the URL here, registered with the log redactor, and handed to libgit2 only
through a credentials callback — the URL we store, log, show in `status` or put in
an exception message is always the clean one. A URL with a secret given on
`reconciler run`'s command line would also show in `ps -ef` for the life of the
process: `argv_without_secret` says how to restart without it there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import pygit2
from pydantic import SecretStr
from pygit2.enums import CredentialType

from reconciler.base.redact import redact, register_secrets

Transport = Literal["local", "file", "git", "http", "ssh"]
MAX_AUTH_ATTEMPTS = 3
"""libgit2 asks again after a 401; answering the same secret forever would loop."""

_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/\s]+)@)?(?P<host>[^:/\s]+):(?P<path>(?!//).+)$")


class AuthenticationError(RuntimeError):
    """The upstream refused our credentials, or asked for some and we have none."""


class HostVerificationError(AuthenticationError):
    """The server could not prove who it is (unknown SSH host key, untrusted TLS certificate)."""


@dataclass(frozen=True)
class Credentials:
    """Secrets for one upstream. `repr` never shows them."""

    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    ssh_key: Path | None = None
    known_hosts: Path | None = None

    @property
    def has_secret(self) -> bool:
        return bool(self.secret) or self.ssh_key is not None

    def callbacks(self) -> UpstreamCallbacks:
        """Fresh callbacks for one fetch or push (they count authentication attempts)."""
        return UpstreamCallbacks(self)


@dataclass(frozen=True)
class Upstream:
    """The upstream as the reconciler uses it: a credential-free URL plus credentials."""

    url: str
    transport: Transport
    credentials: Credentials = field(default_factory=Credentials)

    @property
    def local_path(self) -> Path | None:
        """Filesystem path for local and file:// upstreams (these can be watched)."""
        if self.transport == "local":
            return Path(self.url)
        if self.transport == "file":
            return Path(unquote(urlsplit(self.url).path))
        return None

    def __str__(self) -> str:
        return self.url


def transport_of(url: str) -> Transport:
    lowered = url.lower()
    if lowered.startswith("file://"):
        return "file"
    if lowered.startswith("git://"):
        return "git"
    if lowered.startswith(("http://", "https://")):
        return "http"
    if lowered.startswith("ssh://") or lowered.startswith("git+ssh://"):
        return "ssh"
    if "://" not in url and _SCP_LIKE.match(url) and not Path(url).exists():
        return "ssh"
    return "local"


def split_url(url: str) -> tuple[str, str | None, str | None]:
    """(url without userinfo, user, password-or-token). A lone userinfo over http is a token."""
    transport = transport_of(url)
    if transport in ("local", "file"):
        return url, None, None
    if "://" not in url:  # scp-like ssh: user@host:path carries a user, never a secret
        m = _SCP_LIKE.match(url)
        return url, (m.group("user") if m else None), None
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    user_s: str | None = unquote(user) or None
    password_s: str | None = unquote(password) if sep else None
    if transport == "http" and password_s is None and user_s is not None:
        user_s, password_s = None, user_s  # https://TOKEN@host/...
    if transport == "ssh":
        clean = urlunsplit(
            (parts.scheme, f"{user}@{hostport}" if user else hostport, parts.path, parts.query, "")
        )
        return clean, user_s, password_s or None
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return clean, user_s, password_s


class UpstreamSettings(Protocol):
    """The settings the upstream reads (`reconciler.settings.Settings` has them)."""

    upstream: str
    upstream_username: str | None
    upstream_password: SecretStr | None
    upstream_ssh_key: Path | None
    upstream_known_hosts: Path | None

    def secret(self, name: str) -> str | None: ...


def resolve_upstream(settings: UpstreamSettings, url: str | None = None) -> Upstream:
    """Build the upstream from settings (token/password/ssh key/known_hosts) and the URL.

    Explicit settings win over credentials embedded in the URL. Every secret found is
    registered for redaction before anything can log it.
    """
    raw = url if url is not None else settings.upstream
    if not raw:
        raise ValueError("no upstream configured; set --upstream or RECONCILER_UPSTREAM (a path or git URL)")
    clean, url_user, url_secret = split_url(raw.strip())
    register_secrets([url_secret])
    transport = transport_of(clean)
    if transport == "local":
        clean = str(Path(clean).expanduser().resolve())
    token = settings.secret("upstream_token")
    password = settings.upstream_password.get_secret_value() if settings.upstream_password else None
    register_secrets([token, password])
    secret = token or password or url_secret
    username = settings.upstream_username or url_user
    if transport == "http" and secret and not username:
        username = "git"
    creds = Credentials(
        username=username,
        secret=secret,
        ssh_key=settings.upstream_ssh_key,
        known_hosts=settings.upstream_known_hosts,
    )
    return Upstream(url=clean, transport=transport, credentials=creds)


class UpstreamCallbacks(pygit2.RemoteCallbacks):
    """Answers libgit2's credential requests and records push rejections."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._creds = credentials
        self.attempts = 0
        self.rejected: dict[str, str] = {}

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.UserPass | pygit2.Keypair:
        self.attempts += 1
        creds = self._creds
        if self.attempts > MAX_AUTH_ATTEMPTS:
            raise AuthenticationError(f"authentication to {redact(url)} failed: credentials were refused")
        if allowed_types & CredentialType.SSH_KEY and creds.ssh_key is not None:
            user = username_from_url or creds.username or "git"
            pub = creds.ssh_key.with_name(creds.ssh_key.name + ".pub")
            return pygit2.Keypair(
                user, str(pub) if pub.exists() else None, str(creds.ssh_key), creds.secret or ""
            )
        if allowed_types & CredentialType.USERPASS_PLAINTEXT and creds.secret:
            return pygit2.UserPass(creds.username or username_from_url or "git", creds.secret)
        raise AuthenticationError(
            f"{redact(url)} asks for credentials and none are configured; "
            "set RECONCILER_UPSTREAM_TOKEN (or _TOKEN_FILE), _USERNAME/_PASSWORD, or _SSH_KEY"
        )

    def certificate_check(self, certificate: None, valid: bool, host: bytes | str) -> bool:
        """Trust exactly what libgit2 verified: TLS chains, and SSH keys listed in known_hosts.

        libgit2 lets an unknown SSH host key through when this callback passes; a
        GitOps reconciler fetching deploy instructions must not.
        """
        if valid:
            return True
        name = host.decode(errors="replace") if isinstance(host, bytes) else host
        known = self._creds.known_hosts
        raise HostVerificationError(
            f"could not verify the server {name}: its SSH host key is not in "
            f"{known or '~/.ssh/known_hosts'} (add it, e.g. from `ssh-keyscan`, and set "
            "RECONCILER_UPSTREAM_KNOWN_HOSTS) or its TLS certificate is not trusted"
        )

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected[refname] = message


@dataclass(frozen=True)
class ArgvRewrite:
    """How to restart this process without an upstream secret on its command line."""

    argv: list[str]
    env: dict[str, str]
    """Variables to add: where the secret (and the user) goes instead."""


def argv_without_secret(
    argv: list[str], url: str, settings: UpstreamSettings, *, executable: str
) -> ArgvRewrite | None:
    """None when `url` carries no secret; else the same command with the URL's userinfo removed.

    A token in the URL on the command line shows in `ps -ef` to every user of the host for
    as long as the reconciler runs. The secret moves to RECONCILER_UPSTREAM_TOKEN and the
    user to RECONCILER_UPSTREAM_USERNAME, unless those settings are given already: then,
    as `resolve_upstream` does, the explicit ones win and the URL's are dropped.
    (/proc/<pid>/environ is readable only by the process's own user and root.)
    Raises ValueError when the URL cannot be found in `argv` to take it out.
    """
    clean, user, secret = split_url(url.strip())
    if not secret:
        return None
    new = [arg.replace(url, clean) if url in arg else arg for arg in argv]
    if new == argv or any(secret in arg for arg in new):
        raise ValueError(
            "the upstream URL carries credentials and they could not be taken off the command line; "
            "pass the URL without them and the token in RECONCILER_UPSTREAM_TOKEN or RECONCILER_UPSTREAM_TOKEN_FILE"
        )
    env: dict[str, str] = {}
    has_secret = settings.secret("upstream_token") or settings.upstream_password is not None
    if not has_secret:
        env["RECONCILER_UPSTREAM_TOKEN"] = secret
    if user and settings.upstream_username is None and not has_secret:
        env["RECONCILER_UPSTREAM_USERNAME"] = user
    return ArgvRewrite(argv=[executable, *new[1:]], env=env)
