"""The Prometheus SLI provider against a real Prometheus (spec 7.4): one instant query at
the window's end, exactly one finite sample, every failure an SLI error with its reason,
credentials that never show up in messages or logs."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import structlog
from click.testing import CliRunner
from pydantic import SecretStr

from reconciler.adapters.prometheus import (
    PrometheusEndpoint,
    SLIQueryError,
    fetch_slis,
    get_slis,
    sample_value,
)
from reconciler.cli import cli
from reconciler.core.scoring import NO_DATA_MESSAGE, provider_result
from reconciler.core.sliquery import SLIRequest
from reconciler.executors.evaluation import endpoint_for
from reconciler.settings import Settings
from tests.support.prometheus import PrometheusFactory, PrometheusServer, free_port, openmetrics_series

T0 = 1704103200  # 2024-01-01T10:00:00Z
START = "2024-01-01T10:00:00.000Z"
END = "2024-01-01T10:05:00.000Z"
JOB = {"job": "carts-sockshop-qa"}
PASSWORD = "s3cret-pass"
# bcrypt of PASSWORD (cost 4), for Prometheus' --web.config.file basic_auth_users
PASSWORD_HASH = "$2b$04$.29QbOdZWJFTL2JKcdI24O3e89UxX/Hw1f9cUpLjf8GROXEMUsg2K"
TOKEN = "tok-7f3a9c2e51"

QUERIES = {
    "goroutines": 'go_goroutines{job="$SERVICE-$PROJECT-$STAGE"}',
    "throughput_custom": 'sum(rate(http_requests_total{job="$SERVICE-$PROJECT-$STAGE"}[$DURATION_SECONDS]))',
    "per_instance": 'up_like{job="$SERVICE-$PROJECT-$STAGE"}',
    "nothing": 'absent_metric{job="$SERVICE-$PROJECT-$STAGE"}',
    "scalar": "scalar(vector(1))",
    "broken": "sum(rate(http_requests_total[",
    "not_a_number": 'nan_gauge{job="$SERVICE-$PROJECT-$STAGE"}',
    "handler_filtered": 'handler_goroutines{job="$SERVICE-$PROJECT-$STAGE",handler="$handler"}',
}


def _data() -> str:
    times = [T0 + i * 10 for i in range(-6, 31)]
    text = openmetrics_series("go_goroutines", JOB, [(t, 10.0 if t < T0 + 200 else 20.0) for t in times])
    text += openmetrics_series(
        "handler_goroutines", {**JOB, "handler": "ItemsController"}, [(t, 7.0) for t in times]
    )
    text += openmetrics_series("http_requests_total", JOB, [(t, float(t - times[0])) for t in times])
    text += openmetrics_series("up_like", {**JOB, "instance": "a"}, [(t, 1.0) for t in times])
    text += openmetrics_series("up_like", {**JOB, "instance": "b"}, [(t, 1.0) for t in times])
    text += openmetrics_series("nan_gauge", JOB, [(t, float("nan")) for t in times])
    return text


@pytest.fixture(scope="module")
def prom(prometheus_factory_module: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory_module.backfilled(_data())


def request(*indicators: str, start: str = START, end: str = END, **kw: Any) -> SLIRequest:
    return SLIRequest(
        project="sockshop", stage="qa", service="carts", start=start, end=end, indicators=indicators, **kw
    )


def endpoint(server: PrometheusServer | str, **kw: Any) -> PrometheusEndpoint:
    url = server if isinstance(server, str) else server.url
    return PrometheusEndpoint(url=url, timeout=kw.pop("timeout", 5.0), **kw)


def test_an_sli_is_the_single_sample_at_the_windows_end(prom: PrometheusServer) -> None:
    (value,) = get_slis(request("goroutines"), QUERIES, endpoint(prom))
    assert (value.success, value.value) == (True, 20.0)  # 10 earlier in the window, 20 at its end
    assert value.query == 'go_goroutines{job="carts-sockshop-qa"}'


def test_duration_seconds_spans_the_window(prom: PrometheusServer) -> None:
    (value,) = get_slis(request("throughput_custom"), QUERIES, endpoint(prom))
    assert value.success
    assert value.value == pytest.approx(1.0, rel=1e-9)
    assert value.query is not None and "[300s]" in value.query


def test_slo_filters_reach_the_query(prom: PrometheusServer) -> None:
    req = request("handler_filtered", filters=[("handler", "ItemsController")])
    (value,) = get_slis(req, QUERIES, endpoint(prom))
    assert (value.success, value.value) == (True, 7.0)


@pytest.mark.parametrize(
    ("sli", "message"),
    [
        ("per_instance", "query did return multiple values"),
        ("nothing", NO_DATA_MESSAGE),
        ("not_a_number", "query did not return valid values"),
    ],
)
def test_anything_but_one_finite_sample_is_an_error_for_that_sli(
    prom: PrometheusServer, sli: str, message: str
) -> None:
    (value,) = get_slis(request(sli), QUERIES, endpoint(prom))
    assert (value.success, value.value, value.message) == (False, 0.0, message)
    assert value.query


def test_a_scalar_answer_is_not_a_vector(prom: PrometheusServer) -> None:
    (value,) = get_slis(request("scalar"), QUERIES, endpoint(prom))
    assert not value.success
    assert value.message.startswith("prometheus api response is not a Vector: scalar")


def test_a_bad_query_reports_prometheus_parse_error(prom: PrometheusServer) -> None:
    (value,) = get_slis(request("broken"), QUERIES, endpoint(prom))
    assert not value.success
    assert value.message.startswith("unable to query prometheus api: bad_data: ")
    assert "parse error" in value.message


def test_an_sli_without_query_or_builtin_is_unsupported(prom: PrometheusServer) -> None:
    (value,) = get_slis(request("latency"), QUERIES, endpoint(prom))
    assert not value.success
    assert "unsupported SLI" in value.message


def test_a_builtin_sli_runs_its_default_query(prom: PrometheusServer) -> None:
    (value,) = get_slis(request("throughput"), {}, endpoint(prom))
    assert value.query == "sum(rate(http_requests_total{job='carts-sockshop-qa-canary'}[300s]))"
    assert value.message == NO_DATA_MESSAGE  # sum() over nothing is an empty vector


def test_values_come_back_in_request_order_and_summarise_as_keptn_does(prom: PrometheusServer) -> None:
    values = get_slis(request("goroutines", "nothing", "goroutines"), QUERIES, endpoint(prom))
    assert [(v.metric, v.success) for v in values] == [
        ("goroutines", True),
        ("nothing", False),
        ("goroutines", True),
    ]
    assert provider_result(values) == "warning"
    assert provider_result(values[1:2]) == "fail"
    assert provider_result([]) == "pass"


def test_unix_second_timestamps_work_too(prom: PrometheusServer) -> None:
    (value,) = get_slis(request("goroutines", start=str(T0), end=str(T0 + 300)), QUERIES, endpoint(prom))
    assert value.value == 20.0


@pytest.mark.parametrize(
    ("start", "end", "prefix"),
    [
        ("later", END, "unable to parse start timestamp: "),
        (START, "soon", "unable to parse end timestamp: "),
    ],
)
def test_unparsable_window_fails_every_sli(prom: PrometheusServer, start: str, end: str, prefix: str) -> None:
    values = get_slis(request("goroutines", "nothing", start=start, end=end), QUERIES, endpoint(prom))
    assert [v.success for v in values] == [False, False]
    assert all(v.message.startswith(prefix) for v in values)


def test_prometheus_down_is_an_error_with_the_reason() -> None:
    port = free_port()
    (value,) = get_slis(request("goroutines"), QUERIES, endpoint(f"http://127.0.0.1:{port}"))
    assert not value.success
    assert (
        value.message
        == f"unable to query prometheus api: cannot reach http://127.0.0.1:{port}: connection refused"
    )


def test_how_prometheus_is_doing_comes_back_with_the_values(prom: PrometheusServer) -> None:
    """The adapter reports its part's health as data, for the problems board (not the board itself)."""
    port = free_port()
    down = fetch_slis(request("goroutines"), QUERIES, endpoint(f"http://127.0.0.1:{port}"))
    (note,) = down.health
    assert note.part == f"prometheus http://127.0.0.1:{port}" and "connection refused" in (note.problem or "")
    assert not note.retrying
    up = fetch_slis(request("goroutines"), QUERIES, endpoint(prom.url))
    assert [(n.part, n.problem) for n in up.health] == [(f"prometheus {prom.url.rstrip('/')}", None)]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP listener that accepts and never answers: a hung Prometheus."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_a_hung_prometheus_times_out_per_sli(silent_server: str) -> None:
    (value,) = get_slis(request("goroutines"), QUERIES, endpoint(silent_server, timeout=0.5))
    assert value.message == f"unable to query prometheus api: no answer from {silent_server} within 0.5s"


def test_sample_value_rule() -> None:
    assert sample_value("vector", [{"metric": {}, "value": [1, "2.5"]}]) == 2.5
    for result, message in [
        ([], NO_DATA_MESSAGE),
        ([{"value": [1, "+Inf"]}], "query did not return valid values"),
    ]:
        with pytest.raises(SLIQueryError, match=message):
            sample_value("vector", result)
    with pytest.raises(SLIQueryError, match="not a Vector: matrix"):
        sample_value("matrix", [])


# --------------------------------------------------------------------------------------------
# endpoints and credentials


def test_endpoint_per_project_and_stage() -> None:
    settings = Settings(
        prometheus_url="http://default:9090",
        prometheus_urls={"fulltour/production": "http://prod:9090/", "fulltour": "http://fulltour:9090"},
    )
    assert endpoint_for(settings, "fulltour", "production").url == "http://prod:9090"
    assert endpoint_for(settings, "fulltour", "qa").url == "http://fulltour:9090"
    assert endpoint_for(settings, "other", "qa").url == "http://default:9090"


def test_endpoint_repr_hides_secrets() -> None:
    basic = Settings(prometheus_user="tester", prometheus_password=SecretStr(PASSWORD))
    bearer = Settings(prometheus_token=SecretStr(TOKEN))
    shown = repr(endpoint_for(basic, "p", "s")) + repr(endpoint_for(bearer, "p", "s"))
    assert "tester" in shown
    assert PASSWORD not in shown and TOKEN not in shown


def test_basic_auth_and_a_bearer_token_together_are_refused_naming_both_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only one Authorization header can go out: silently dropping one would turn into 401s."""
    monkeypatch.setenv("RECONCILER_PROMETHEUS_USER", "tester")
    monkeypatch.setenv("RECONCILER_PROMETHEUS_TOKEN", TOKEN)
    result = CliRunner().invoke(cli, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "prometheus_user (basic auth) and prometheus_token (bearer token) are both set" in result.output
    assert TOKEN not in result.output
    # an optional Secret key left empty (deploy/ maps all three) means "not set"
    monkeypatch.setenv("RECONCILER_PROMETHEUS_TOKEN", "")
    assert Settings().prometheus_user == "tester"


@pytest.fixture(scope="module")
def secured(prometheus_factory_module: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory_module.backfilled(
        _data(),
        web_config=f"basic_auth_users:\n  tester: '{PASSWORD_HASH}'\n",
        auth=("tester", PASSWORD),
    )


def test_basic_auth_from_settings(secured: PrometheusServer) -> None:
    settings = Settings(
        prometheus_url=secured.url, prometheus_user="tester", prometheus_password=SecretStr(PASSWORD)
    )
    (value,) = get_slis(request("goroutines"), QUERIES, endpoint_for(settings, "sockshop", "qa"))
    assert (value.success, value.value) == (True, 20.0)


def test_wrong_credentials_are_reported_without_the_secret(secured: PrometheusServer) -> None:
    wrong = PASSWORD + "-wrong"
    settings = Settings(
        prometheus_url=secured.url, prometheus_user="tester", prometheus_password=SecretStr(wrong)
    )
    with structlog.testing.capture_logs() as logs:
        (value,) = get_slis(request("goroutines"), QUERIES, endpoint_for(settings, "sockshop", "qa"))
    assert value.message == "unable to query prometheus api: HTTP 401 Unauthorized"
    assert wrong not in repr(logs) and wrong not in value.model_dump_json()


def test_missing_credentials_fail_the_sli(secured: PrometheusServer) -> None:
    (value,) = get_slis(request("goroutines"), QUERIES, endpoint(secured))
    assert not value.success and "401" in value.message


@pytest.fixture
def bearer_proxy(prom: PrometheusServer) -> Iterator[str]:
    """A reverse proxy demanding a bearer token in front of the real Prometheus
    (Prometheus itself only knows basic auth; bearer tokens come from proxies like this)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.send_response(401)
                self.end_headers()
                return
            upstream = requests.get(prom.url + self.path, timeout=5)
            self.send_response(upstream.status_code)
            self.send_header("Content-Type", upstream.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(upstream.content)))
            self.end_headers()
            self.wfile.write(upstream.content)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_bearer_token_from_settings(bearer_proxy: str) -> None:
    settings = Settings(prometheus_url=bearer_proxy, prometheus_token=SecretStr(TOKEN))
    (value,) = get_slis(request("goroutines"), QUERIES, endpoint_for(settings, "sockshop", "qa"))
    assert (value.success, value.value) == (True, 20.0)
    (denied,) = get_slis(request("goroutines"), QUERIES, endpoint(bearer_proxy))
    assert denied.message == "unable to query prometheus api: HTTP 401 Unauthorized"
