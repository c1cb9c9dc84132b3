"""Send a rendered webhook request over HTTP: checked destination, pinned address, bounded everything.

Keptn's webhook-service ran curl with a deny-list of host names (`kubernetes*`,
`localhost`, `127.0.0.1`, `::1` and a ConfigMap's extra lines), matched as substrings of
the URL and of the names the resolved addresses map back to; curl then resolved the host
again by itself, had no timeout and no retries. Here:

- the host is resolved once and every address is checked (`DestinationPolicy`):
  loopback, link-local, unspecified, multicast and reserved addresses are refused, cloud
  metadata endpoints always, private networks unless the operator allows them
  (`allow_private`, or the host/network in `allow_hosts`), and the Kubernetes API names
  as Keptn's deny-list had them;
- the connection goes to the checked address (the URL's host stays in `Host` and TLS
  SNI/verification), so a second DNS answer cannot redirect it (no rebinding window);
- redirects are followed only when the request asked for them (`curl -L`), each hop
  checked again, at most 5, `Authorization` dropped when the origin changes;
- connect/read timeouts, a time limit per attempt and a bounded, redacted response body;
- 5xx (but 501/505), 408, 429, timeouts and connection errors are retried with bounded
  exponential backoff within an overall deadline; never after a 2xx or another 4xx;
- environment proxies are ignored (a proxy is named in the webhook, `curl -x`, and is
  itself checked and pinned).

Remote failures are results, not exceptions: `WebhookResult` says what happened.
`before_attempt(n)` runs before each attempt sends anything, so a caller can record the
attempt durably first (crash safety); if it raises, nothing is sent.

May import: httpx, stdlib, `reconciler.core`, `reconciler.formats`, `reconciler.base.redact`.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx

from reconciler.base.redact import redact
from reconciler.core.webhookrender import RenderedRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

KUBERNETES_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
"""Keptn's default deny-list names for the Kubernetes API (its ClusterIP is private anyway)."""

METADATA_NAMES = ("metadata.google.internal", "metadata")
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
"""Cloud instance metadata (AWS/GCP/Azure/OpenStack, AWS IPv6, ECS task credentials, Alibaba):
never a webhook destination, whatever the allow-list says."""

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 507, 508, 509, 511, 520, 521, 522, 523, 524})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})

Result = Literal["success", "http-error", "timeout", "connection-error", "refused"]


@dataclass(frozen=True)
class DestinationPolicy:
    """Where webhook requests may go; the shape of the operator settings to come.

    `allow_hosts` entries are host names (`jenkins.ci.svc`), suffix patterns
    (`*.svc.cluster.local`), addresses (`10.0.0.7`) or networks (`10.0.0.0/8`); an entry
    allows that destination even when it is private or loopback (tests and single-host
    setups use `127.0.0.1`). Metadata addresses stay refused. `allow_private` allows
    private networks (RFC 1918, CGNAT, IPv6 ULA) in general. `deny_hosts` are refused by
    name unless listed exactly in `allow_hosts`; the Kubernetes API address
    (KUBERNETES_SERVICE_HOST) belongs there too.
    """

    allow_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    deny_hosts: tuple[str, ...] = KUBERNETES_NAMES

    def __post_init__(self) -> None:
        for entry in self.allow_hosts:
            _allow_entry(entry)  # raises ValueError for a malformed entry

    def name_refusal(self, host: str) -> str | None:
        """Why `host` is refused by name alone, or None."""
        name = _norm(host)
        if self._allowed_name(name):
            return None
        if name in METADATA_NAMES:
            return f"{host} is a cloud metadata endpoint"
        for pattern in self.deny_hosts:
            if _name_matches(_norm(pattern), name):
                return f"{host} is on the deny list (the Kubernetes API, as in Keptn's default deny-list)"
        return None

    def address_refusal(self, host: str, address: IPAddress) -> str | None:
        """Why connecting to `address` (resolved from `host`) is refused, as "a ... address; ...", or None."""
        ip = _unmapped(address)
        if ip in METADATA_ADDRESSES:
            return "a cloud metadata endpoint"
        for pattern in self.deny_hosts:
            try:
                if ipaddress.ip_address(pattern.strip("[]")) == ip:
                    return "on the deny list"
            except ValueError:
                continue
        if self._allowed_name(_norm(host)) or any(ip in net for net in self._allowed_networks()):
            return None
        kind = address_kind(ip)
        if kind == "public":
            return None
        if kind == "private" and self.allow_private:
            return None
        hint = (
            "allow it with webhook_allow_private or webhook_allow_hosts"
            if kind == "private"
            else "allow it with webhook_allow_hosts"
        )
        return f"a {kind} address; {hint}"

    def _allowed_name(self, name: str) -> bool:
        return any(
            isinstance(e, str) and _name_matches(e, name) for e in (_allow_entry(x) for x in self.allow_hosts)
        )

    def _allowed_networks(self) -> list[IPNetwork]:
        out: list[IPNetwork] = []
        for entry in self.allow_hosts:
            parsed = _allow_entry(entry)
            if not isinstance(parsed, str):
                out.append(parsed)
        return out


def address_kind(ip: IPAddress) -> str:
    """public | private | loopback | link-local | unspecified | multicast | reserved."""
    ip = _unmapped(ip)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "private"  # carrier-grade NAT: inside someone's network
    if ip.is_private:
        return "private" if (ip.version == 4 and _rfc1918(ip)) or ip in _ULA else "reserved"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return "public"


_ULA = ipaddress.ip_network("fc00::/7")


def _rfc1918(ip: IPAddress) -> bool:
    return any(ip in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _norm(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return pattern == name


def _allow_entry(entry: str) -> str | IPNetwork:
    text = entry.strip()
    if not text:
        raise ValueError("an empty webhook_allow_hosts entry")
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        pass
    name = _norm(text)
    body = name[2:] if name.startswith("*.") else name
    if not body or any(not part for part in body.split(".")) or any(c in body for c in "/:@ *"):
        raise ValueError(
            f"webhook_allow_hosts entry {entry!r}: expected a host name, *.suffix, address or network"
        )
    return name


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and time limits of one send (the settings to come: `webhook_*`)."""

    max_attempts: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    deadline: float = 120.0
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_time: float = 30.0
    max_redirects: int = 5
    max_body_bytes: int = 64 * 1024
    keep_body_chars: int = 2048


@dataclass(frozen=True)
class WebhookResult:
    result: Result
    status_code: int | None = None
    body: str = ""
    body_truncated: bool = False
    attempts: int = 0
    duration: float = 0.0
    reason: str = ""
    address: str | None = None
    history: tuple[str, ...] = field(default=())
    """One line per earlier attempt that was retried (status or error)."""

    @property
    def ok(self) -> bool:
        return self.result == "success"


class _Refused(Exception):
    pass


@dataclass
class _Outcome:
    result: Result
    status: int | None = None
    body: bytes = b""
    truncated: bool = False
    reason: str = ""
    address: str | None = None
    retry_after: float | None = None
    location: str = ""

    @property
    def retryable(self) -> bool:
        if self.result in ("timeout", "connection-error"):
            return True
        return self.result == "http-error" and self.status in RETRY_STATUS


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses of `host`, in the resolver's order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in out:
            out.append(address)
    return out


class WebhookSender:
    """Sends `RenderedRequest`s under a destination policy; safe to share between threads."""

    def __init__(
        self,
        policy: DestinationPolicy | None = None,
        retry: RetryPolicy | None = None,
        *,
        resolver: Resolver = system_resolver,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        self.policy = policy or DestinationPolicy()
        self.retry = retry or RetryPolicy()
        self.resolver = resolver
        self.sleep = sleep
        self.clock = clock
        self.verify = verify
        self._context: ssl.SSLContext | None = None

    def _verify(self) -> ssl.SSLContext | str | bool:
        """One TLS context for every request (building one loads the CA bundle, ~20 ms)."""
        if self.verify is not True:
            return self.verify
        if self._context is None:
            import certifi

            self._context = ssl.create_default_context(cafile=certifi.where())
        return self._context

    def send(
        self, request: RenderedRequest, *, before_attempt: Callable[[int], None] | None = None
    ) -> WebhookResult:
        start = self.clock()
        history: list[str] = []
        outcome = _Outcome("connection-error", reason="not sent")
        attempt = 0
        while attempt < self.retry.max_attempts:
            attempt += 1
            outcome = self._attempt(request, before_attempt, attempt, start)
            if outcome.result == "success" or not outcome.retryable or attempt >= self.retry.max_attempts:
                break
            delay = min(self.retry.backoff_max, self.retry.backoff_initial * 2 ** (attempt - 1))
            if outcome.retry_after is not None:
                delay = min(self.retry.backoff_max, max(delay, outcome.retry_after))
            if self.clock() + delay >= start + self.retry.deadline:
                break
            history.append(_summary(outcome))
            self.sleep(delay)
        text, cut = _shown_body(outcome.body, self.retry.keep_body_chars)
        return WebhookResult(
            result=outcome.result,
            status_code=outcome.status,
            body=request.redact(redact(text)),
            body_truncated=outcome.truncated or cut,
            attempts=attempt,
            duration=self.clock() - start,
            reason=request.redact(redact(outcome.reason)),
            address=outcome.address,
            history=tuple(request.redact(redact(h)) for h in history),
        )

    # -- one attempt, redirects included ---------------------------------------------------------------

    def _attempt(
        self,
        request: RenderedRequest,
        before_attempt: Callable[[int], None] | None,
        attempt: int,
        start: float,
    ) -> _Outcome:
        method, url, body = request.method, request.url, request.body
        headers = list(request.headers)
        per_attempt = min(request.max_time or self.retry.max_time, self.retry.max_time)
        per_attempt = min(per_attempt, max(0.1, start + self.retry.deadline - self.clock()))
        deadline = self.clock() + per_attempt
        announced = False
        for hop in range(self.retry.max_redirects + 1):
            try:
                targets, proxy = self._destinations(request, url)
            except _Refused as exc:
                return _Outcome("refused", reason=f"destination refused: {exc}")
            except OSError as exc:
                return _Outcome("connection-error", reason=f"cannot resolve the host: {_oserror(exc)}")
            if not announced:
                if before_attempt is not None:
                    before_attempt(attempt)
                announced = True
            outcome = self._exchange(request, method, url, headers, body, targets, proxy, deadline)
            if not request.follow_redirects or not outcome.location:
                return outcome
            if hop == self.retry.max_redirects:
                return _Outcome(
                    "http-error",
                    status=outcome.status,
                    reason=f"more than {self.retry.max_redirects} redirects",
                    address=outcome.address,
                )
            location = urllib.parse.urljoin(url, outcome.location)
            if urllib.parse.urlsplit(location).scheme.lower() not in ("http", "https"):
                return _Outcome("refused", status=outcome.status, reason="redirect to a non-HTTP URL refused")
            if _origin(location) != _origin(url):
                headers = [(k, v) for k, v in headers if k.lower() not in ("authorization", "cookie")]
            if (outcome.status == 303 and method != "HEAD") or (
                outcome.status in (301, 302) and method == "POST"
            ):
                method, body = "GET", None
                headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            url = location
        raise AssertionError("unreachable")

    def _destinations(self, request: RenderedRequest, url: str) -> tuple[list[str], str | None]:
        """Checked addresses to connect to (the proxy's when one is used) and the pinned proxy URL."""
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        shown = _shown_host(host, request)
        refusal = self.policy.name_refusal(host)
        if refusal:
            raise _Refused(refusal.replace(host, shown))
        if request.proxy:
            target_addresses = _literal(host)
            if target_addresses is not None:
                reason = self.policy.address_refusal(host, target_addresses)
                if reason:
                    raise _Refused(f"{target_addresses} is {reason}")
            proxy = urllib.parse.urlsplit(
                request.proxy if "://" in request.proxy else "http://" + request.proxy
            )
            proxy_host = proxy.hostname or ""
            refusal = self.policy.name_refusal(proxy_host)
            if refusal:
                raise _Refused(f"proxy: {refusal}")
            addresses = self._checked(proxy_host, proxy.port or 80, proxy_host)
            return addresses, f"http://{_netloc(addresses[0], proxy.port or 80)}"
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        return self._checked(host, port, shown), None

    def _checked(self, host: str, port: int, shown: str) -> list[str]:
        literal = _literal(host)
        addresses = [str(literal)] if literal is not None else list(self.resolver(host, port))
        if not addresses:
            raise OSError(f"no address for {shown}")
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            reason = self.policy.address_refusal(host, ip)
            if reason:
                raise _Refused(
                    f"{shown} resolves to {ip}, {reason}" if literal is None else f"{ip} is {reason}"
                )
        return addresses

    def _exchange(
        self,
        request: RenderedRequest,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        addresses: list[str],
        proxy: str | None,
        deadline: float,
    ) -> _Outcome:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        connect = min(request.connect_timeout or self.retry.connect_timeout, self.retry.max_time)
        last = _Outcome("connection-error", reason="no address to connect to")
        for address in addresses if proxy is None else addresses[:1]:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return _Outcome("timeout", reason="the request's time limit ran out", address=address)
            timeout = httpx.Timeout(
                connect=min(connect, remaining),
                read=min(self.retry.read_timeout, remaining),
                write=min(self.retry.read_timeout, remaining),
                pool=min(connect, remaining),
            )
            send_headers = [(k.encode("ascii"), v.encode("utf-8")) for k, v in headers]
            extensions: dict[str, object] = {}
            if proxy is None:
                target = urllib.parse.urlunsplit(
                    (scheme, _netloc(address, port, parts), parts.path, parts.query, "")
                )
                send_headers.insert(0, (b"Host", _host_header(host, port, scheme).encode("ascii")))
                if scheme == "https":
                    extensions["sni_hostname"] = host.encode("idna").decode("ascii")
            else:
                target = urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
            verify: ssl.SSLContext | str | bool = False if request.insecure else self._verify()
            try:
                with httpx.Client(
                    verify=verify, trust_env=False, follow_redirects=False, proxy=proxy, timeout=timeout
                ) as client:
                    req = client.build_request(
                        method, target, headers=send_headers, content=body, extensions=extensions
                    )
                    response = client.send(req, stream=True)
                    try:
                        data, truncated = self._read(response, deadline)
                    finally:
                        response.close()
            except _TimeLimit:
                return _Outcome("timeout", reason="the response did not finish in time", address=address)
            except httpx.ConnectTimeout:
                last = _Outcome("timeout", reason="connecting timed out", address=address)
                continue
            except httpx.TimeoutException:
                return _Outcome("timeout", reason="no answer in time", address=address)
            except httpx.ConnectError as exc:
                last = _Outcome("connection-error", reason=f"cannot connect: {_short(exc)}", address=address)
                continue
            except (httpx.TransportError, OSError) as exc:
                return _Outcome(
                    "connection-error", reason=f"connection failed: {_short(exc)}", address=address
                )
            status = response.status_code
            if 200 <= status < 300:
                return _Outcome("success", status, data, truncated, "", address)
            outcome = _Outcome("http-error", status, data, truncated, f"HTTP {status}", address)
            if status in REDIRECT_STATUS and request.follow_redirects:
                outcome.location = response.headers.get("location", "")
            retry_after = response.headers.get("retry-after", "")
            if retry_after.strip().isdigit():
                outcome.retry_after = float(retry_after.strip())
            return outcome
        return last

    def _read(self, response: httpx.Response, deadline: float) -> tuple[bytes, bool]:
        limit = self.retry.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw(chunk_size=16384):
            if self.clock() > deadline:
                raise _TimeLimit()
            room = limit - size
            if len(chunk) > room:
                chunks.append(chunk[:room])
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), False


class _TimeLimit(Exception):
    pass


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _netloc(address: str, port: int, parts: urllib.parse.SplitResult | None = None) -> str:
    hostpart = f"[{address}]" if ":" in address else address
    userinfo = ""
    if parts is not None and parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "") + "@"
    return f"{userinfo}{hostpart}:{port}"


def _host_header(host: str, port: int, scheme: str) -> str:
    name = host.encode("idna").decode("ascii") if not _literal(host) else host
    if ":" in name:
        name = f"[{name}]"
    default = 443 if scheme == "https" else 80
    return name if port == default else f"{name}:{port}"


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _shown_host(host: str, request: RenderedRequest) -> str:
    """The host for a message, unless it came out of a secret (a whole URL kept as a secret)."""
    if any(host and host in secret for secret in request.secrets):
        return "the host (from a secret)"
    return host


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _oserror(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return exc.strerror or "name resolution failed"
    return _short(exc)


def _summary(outcome: _Outcome) -> str:
    if outcome.status is not None:
        return f"HTTP {outcome.status}"
    return f"{outcome.result}: {outcome.reason}"


def _shown_body(data: bytes, keep: int) -> tuple[str, bool]:
    text = data.decode("utf-8", errors="replace")
    if len(text) > keep:
        return text[:keep], True
    return text, False
