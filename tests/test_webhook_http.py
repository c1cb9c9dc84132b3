"""Sending webhook requests to real receivers on 127.0.0.1: checked destinations, pinned addresses, bounded retries."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence

import pytest

from reconciler.adapters.webhook_http import (
    DestinationPolicy,
    RetryPolicy,
    WebhookSender,
    address_kind,
    system_resolver,
)
from reconciler.core.webhookrender import RenderedRequest
from tests.support.receivers import Answer, closed_port, receiving, silent

SECRET = "hook-secret-7d3f9a1c55"
LOCAL = DestinationPolicy(allow_hosts=("127.0.0.1",))
FAST = RetryPolicy(backoff_initial=0.01, backoff_max=0.05, read_timeout=2.0, connect_timeout=2.0)


def request(
    url: str, *, method: str = "POST", body: bytes | None = b'{"a":1}', **options: object
) -> RenderedRequest:
    headers = (
        ("Content-Type", "application/json"),
        ("Authorization", f"Bearer {SECRET}"),
        ("Idempotency-Key", "4b0f8c1e-key"),
        ("Accept-Encoding", "identity"),
    )
    return RenderedRequest(
        webhook_index=0,
        index=0,
        method=method,
        url=url,
        headers=headers,
        body=body,
        secrets=frozenset({SECRET}),
        **options,  # type: ignore[arg-type]
    )


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class FakeDNS:
    """A resolver with fixed answers that counts lookups (the system resolver never sees these names)."""

    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return list(self.answers[host])


def test_a_request_arrives_exactly_as_rendered() -> None:
    with receiving() as receiver:
        result = WebhookSender(LOCAL, FAST).send(request(f"{receiver.url}/hooks/x?y=1"))
    assert result.ok and result.status_code == 200 and result.attempts == 1
    (seen,) = receiver.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/hooks/x?y=1", b'{"a":1}')
    assert seen.header("Authorization") == f"Bearer {SECRET}"
    assert seen.header("Idempotency-Key") == "4b0f8c1e-key"
    assert seen.header("Host") == f"127.0.0.1:{receiver.port}"
    assert result.body == '{"ok":true}'


def test_the_connection_goes_to_the_checked_address_and_the_host_name_is_kept() -> None:
    dns = FakeDNS({"hooks.test": ["127.0.0.1"]})
    policy = DestinationPolicy(allow_hosts=("hooks.test",))
    with receiving() as receiver:
        result = WebhookSender(policy, FAST, resolver=dns).send(
            request(f"http://hooks.test:{receiver.port}/x")
        )
    assert result.ok, result.reason
    assert result.address == "127.0.0.1"
    assert dns.lookups == ["hooks.test"], "resolved once, by us: nothing else may look the name up again"
    assert receiver.seen[0].header("Host") == f"hooks.test:{receiver.port}"


@pytest.mark.parametrize(
    ("answers", "policy", "message"),
    [
        (
            ["127.0.0.1"],
            DestinationPolicy(),
            "resolves to 127.0.0.1, a loopback address; allow it with webhook_allow_hosts",
        ),
        (
            ["169.254.169.254"],
            DestinationPolicy(allow_hosts=("hooks.test",), allow_private=True),
            "cloud metadata",
        ),
        (["fd00:ec2::254"], DestinationPolicy(allow_hosts=("hooks.test",)), "cloud metadata"),
        (["10.0.0.5"], DestinationPolicy(), "a private address; allow it with webhook_allow_private"),
        (["93.184.216.34", "10.0.0.5"], DestinationPolicy(), "10.0.0.5, a private address"),
        (["169.254.10.1"], DestinationPolicy(allow_private=True), "link-local"),
        (["0.0.0.0"], DestinationPolicy(), "unspecified"),
        (["::ffff:127.0.0.1"], DestinationPolicy(), "loopback"),
    ],
)
def test_refused_destinations_are_refused_before_anything_is_sent(
    answers: list[str], policy: DestinationPolicy, message: str
) -> None:
    attempts: list[int] = []
    with receiving() as receiver:
        sender = WebhookSender(policy, FAST, resolver=FakeDNS({"hooks.test": answers}))
        result = sender.send(request(f"http://hooks.test:{receiver.port}/x"), before_attempt=attempts.append)
    assert result.result == "refused"
    assert result.reason.startswith("destination refused: hooks.test resolves to ")
    assert message in result.reason
    assert result.attempts == 1 and attempts == [] and receiver.seen == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://kubernetes.default.svc/api", "deny list"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::1]:9/x", "loopback"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ],
)
def test_literal_and_well_known_destinations_are_refused(url: str, message: str) -> None:
    result = WebhookSender(DestinationPolicy(allow_private=True), FAST).send(request(url))
    assert result.result == "refused"
    assert message in result.reason


def test_a_numeric_host_spelling_of_loopback_is_refused_after_resolution() -> None:
    try:
        resolved = system_resolver("2130706433", 80)
    except OSError:
        pytest.skip("this resolver does not read 2130706433 as an address")
    assert resolved == ["127.0.0.1"]
    result = WebhookSender(DestinationPolicy(), FAST).send(request("http://2130706433:9/x"))
    assert result.result == "refused" and "loopback" in result.reason


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", "public"),
        ("2001:4860:4860::8888", "public"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.2", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "reserved"),
    ],
)
def test_address_kinds(address: str, kind: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_operators_widen_the_policy_by_name_suffix_or_network() -> None:
    private = ipaddress.ip_address("10.0.0.5")
    loopback = ipaddress.ip_address("127.0.0.1")
    assert DestinationPolicy(allow_private=True).address_refusal("x", private) is None
    assert DestinationPolicy(allow_private=True).address_refusal("x", loopback) is not None
    assert DestinationPolicy(allow_hosts=("10.0.0.0/8",)).address_refusal("x", private) is None
    assert (
        DestinationPolicy(allow_hosts=("*.svc.cluster.local",)).address_refusal(
            "jenkins.ci.svc.cluster.local", private
        )
        is None
    )
    assert (
        DestinationPolicy(allow_hosts=("*.svc.cluster.local",)).address_refusal("evil.example.com", private)
        is not None
    )
    metadata = ipaddress.ip_address("169.254.169.254")
    assert DestinationPolicy(allow_hosts=("169.254.0.0/16", "metadata.test")).address_refusal(
        "metadata.test", metadata
    )
    assert (
        DestinationPolicy(allow_private=True).name_refusal("kubernetes.default.svc.cluster.local") is not None
    )
    assert (
        DestinationPolicy(allow_hosts=("kubernetes.default.svc",)).name_refusal("kubernetes.default.svc")
        is None
    )
    with pytest.raises(ValueError, match="webhook_allow_hosts entry"):
        DestinationPolicy(allow_hosts=("http://x/",))


def test_a_500_then_200_is_retried_once_with_the_same_idempotency_key() -> None:
    sleeps, attempts = Sleeps(), []
    with receiving(Answer(500, b"busy"), Answer(200, b"done")) as receiver:
        result = WebhookSender(LOCAL, RetryPolicy(backoff_initial=0.5), sleep=sleeps).send(
            request(receiver.url + "/x"), before_attempt=attempts.append
        )
    assert result.ok and result.status_code == 200 and result.body == "done"
    assert result.attempts == 2 and attempts == [1, 2]
    assert result.history == ("HTTP 500",)
    assert sleeps.calls == [0.5]
    assert [s.header("Idempotency-Key") for s in receiver.seen] == ["4b0f8c1e-key"] * 2


def test_a_2xx_is_never_sent_again() -> None:
    with receiving(Answer(204, b"")) as receiver:
        result = WebhookSender(LOCAL, FAST).send(request(receiver.url + "/x"))
    assert result.ok and result.attempts == 1 and len(receiver.seen) == 1


def test_a_lasting_503_stops_after_the_bounded_attempts_with_capped_backoff() -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=4, backoff_initial=1.0, backoff_max=2.5)
    with receiving(Answer(503, b"down")) as receiver:
        result = WebhookSender(LOCAL, policy, sleep=sleeps).send(request(receiver.url + "/x"))
    assert result.result == "http-error" and result.status_code == 503
    assert result.attempts == 4 and len(receiver.seen) == 4
    assert sleeps.calls == [1.0, 2.0, 2.5]


def test_a_4xx_is_not_retried_and_its_body_is_bounded_and_redacted() -> None:
    body = (f"token {SECRET} rejected; " * 500).encode()
    with receiving(Answer(401, body)) as receiver:
        result = WebhookSender(LOCAL, RetryPolicy(keep_body_chars=300)).send(request(receiver.url + "/x"))
    assert result.result == "http-error" and result.status_code == 401 and result.attempts == 1
    assert SECRET not in result.body and "token *** rejected" in result.body
    assert len(result.body) <= 300 and result.body_truncated


def test_retry_after_is_honoured_within_the_cap() -> None:
    sleeps = Sleeps()
    with receiving(Answer(429, b"slow down", {"Retry-After": "2"}), Answer(200)) as receiver:
        result = WebhookSender(LOCAL, RetryPolicy(backoff_initial=0.1, backoff_max=3), sleep=sleeps).send(
            request(receiver.url + "/x")
        )
    assert result.ok and sleeps.calls == [2.0]


def test_the_overall_deadline_stops_retries() -> None:
    sleeps = Sleeps()
    with receiving(Answer(503)) as receiver:
        result = WebhookSender(
            LOCAL, RetryPolicy(deadline=1.0, backoff_initial=5.0, backoff_max=5.0), sleep=sleeps
        ).send(request(receiver.url + "/x"))
    assert result.result == "http-error" and result.attempts == 1 and sleeps.calls == []


def test_a_receiver_that_never_answers_times_out_within_bounds() -> None:
    policy = RetryPolicy(max_attempts=2, read_timeout=0.3, connect_timeout=1.0, backoff_initial=0.01)
    with silent() as server:
        started = time.monotonic()
        result = WebhookSender(LOCAL, policy).send(request(server.url + "/x"))
        elapsed = time.monotonic() - started
    assert result.result == "timeout" and result.attempts == 2
    assert result.status_code is None
    assert server.connections == 2
    assert elapsed < 10


def test_refused_connections_are_retried_then_reported() -> None:
    port = closed_port()
    result = WebhookSender(LOCAL, FAST).send(request(f"http://127.0.0.1:{port}/x"))
    assert result.result == "connection-error" and result.attempts == FAST.max_attempts
    assert "cannot connect" in result.reason


def test_nothing_is_sent_when_the_attempt_cannot_be_recorded() -> None:
    def refuse(attempt: int) -> None:
        raise RuntimeError("ledger unavailable")

    with receiving() as receiver, pytest.raises(RuntimeError, match="ledger unavailable"):
        WebhookSender(LOCAL, FAST).send(request(receiver.url + "/x"), before_attempt=refuse)
    assert receiver.seen == []


def test_redirects_are_not_followed_unless_asked_and_then_checked_again() -> None:
    with receiving() as target, receiving(Answer(302, b"", {"Location": "PLACEHOLDER"})) as hop:
        hop.answers[0].headers["Location"] = target.url + "/landed"
        plain = WebhookSender(LOCAL, FAST).send(request(hop.url + "/x"))
        assert plain.result == "http-error" and plain.status_code == 302 and target.seen == []
        followed = WebhookSender(LOCAL, FAST).send(request(hop.url + "/x", follow_redirects=True))
        assert followed.ok, followed.reason
        (landed,) = target.seen
        assert landed.method == "GET" and landed.path == "/landed" and landed.body == b""
        assert landed.header("Authorization") is None, (
            "credentials do not follow a redirect to another origin"
        )
        hop.answers[0].headers["Location"] = "http://169.254.169.254/latest/meta-data/"
        refused = WebhookSender(LOCAL, FAST).send(request(hop.url + "/x", follow_redirects=True))
        assert refused.result == "refused" and "cloud metadata" in refused.reason


def test_a_redirect_loop_ends() -> None:
    with receiving(Answer(307, b"", {"Location": "/again"})) as loop:
        result = WebhookSender(LOCAL, FAST).send(request(loop.url + "/x", follow_redirects=True))
    assert result.result == "http-error" and "more than 5 redirects" in result.reason
    assert len(loop.seen) == 6


def test_a_proxy_named_by_the_webhook_is_checked_and_used() -> None:
    with receiving() as proxy:
        policy = DestinationPolicy(allow_hosts=("127.0.0.1",))
        result = WebhookSender(policy, FAST).send(
            request("http://target.test/path", proxy=f"http://127.0.0.1:{proxy.port}")
        )
        refused = WebhookSender(DestinationPolicy(), FAST).send(
            request("http://target.test/path", proxy=f"http://127.0.0.1:{proxy.port}")
        )
    assert result.ok, result.reason
    assert proxy.seen[0].request_line == "POST http://target.test/path HTTP/1.1"
    assert refused.result == "refused" and "loopback" in refused.reason
    assert len(proxy.seen) == 1
