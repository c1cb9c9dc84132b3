"""Who may read the web view, and how a browser proves it without sending the token each time.

A person opening a page has no way to add the API token to a plain GET, so the
login form (a POST, same origin only) trades the token for a session cookie:

    reconciler_ui = <issued, unix seconds>.<random nonce>.<HMAC-SHA256(key, issued.nonce)>
    key = HMAC-SHA256(api token, "reconciler ui session v1")

The cookie holds neither the token nor anything that opens a write: it is
HttpOnly (no script reads it), SameSite=Strict (no other site's page makes the
browser send it), scoped to /ui, Secure when served over https, and expires after
SESSION_SECONDS. Being derived from the token, it survives restarts and works on
every replica, and rotating the token ends every session.

Writes never accept it. Approve and decline are the API's `POST /v1/sequence/...
/approval`, which reads the token from the x-token header only; the page's script
sends it from sessionStorage, where the person typed it. A cross-site form post
can set no header, and a cross-site fetch with one needs a CORS preflight the API
never grants, so another site cannot act with a person's session (CSRF).

`ui_public` opens the reading pages to anyone who reaches the port (a dashboard
behind a cluster network); writes still need the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "reconciler_ui"
SESSION_SECONDS = 12 * 3600
_LABEL = b"reconciler ui session v1"


def request_token(request: Request) -> str:
    """The token as the API takes it: x-token header, else Authorization: Bearer."""
    given = request.headers.get("x-token", "")
    auth = request.headers.get("authorization", "")
    if not given and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given


@dataclass
class Sessions:
    token: str | None
    public: bool = False
    clock: Callable[[], float] = time.time
    _key: bytes | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.token:
            self._key = hmac.new(self.token.encode(), _LABEL, hashlib.sha256).digest()

    @property
    def configured(self) -> bool:
        return self._key is not None

    def token_ok(self, given: str) -> bool:
        if not self.token or not given:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _mac(self, payload: str) -> str:
        assert self._key is not None
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        payload = f"{int(self.clock())}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._mac(payload)}"

    def cookie_ok(self, value: str) -> bool:
        if self._key is None or not value or len(value) > 200:
            return False
        issued, _, rest = value.partition(".")
        nonce, _, mac = rest.partition(".")
        if not (issued.isdigit() and nonce and mac):
            return False
        if not hmac.compare_digest(mac, self._mac(f"{issued}.{nonce}")):
            return False
        age = self.clock() - int(issued)
        return -60 <= age <= SESSION_SECONDS

    def may_read(self, request: Request) -> bool:
        if self.public:
            return True
        return self.token_ok(request_token(request)) or self.cookie_ok(request.cookies.get(COOKIE, ""))


def same_origin(request: Request) -> bool:
    """A form post comes from our own page, as the browser says: Sec-Fetch-Site (every current
    browser sends it), else Origin, which must name this host.

    A request with neither is not a cross-site browser request (curl, a test client);
    the token check covers it.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is not None:  # the host only: behind a TLS proxy the scheme we see is http
        return bool(origin) and urlsplit(origin).netloc == request.headers.get("host", "")
    return True


def safe_next(target: str) -> str:
    """Where to go after logging in: a path of the UI only, never another host."""
    if (
        target.startswith("/ui/")
        and not target.startswith("//")
        and "\\" not in target
        and "\n" not in target
    ):
        return target
    return "/ui/"
