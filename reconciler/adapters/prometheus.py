"""The Prometheus SLI provider: instant queries through prometheus-api-client (spec 7).

prometheus-api-client was picked because it is the maintained Python client of
the Prometheus HTTP API and, from 0.7, needs only `requests` (no pandas). Each SLI
is one instant query at the window's end, and must answer with exactly one
finite sample; anything else is an error for that SLI with the reason, never a
silent pass. Credentials arrive in a `PrometheusEndpoint` (basic auth or a bearer
token) and are sent as request auth, never embedded in URLs, logged or put into
messages. How Prometheus itself is doing comes back as data (`SLIFetch.health`),
for the problems board the controller keeps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from reconciler.adapters.neterrors import connection_reason
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.outcomes import PartHealth
from reconciler.core.scoring import NO_DATA_MESSAGE, SLIValue
from reconciler.core.sliquery import BUILTIN_SLIS, QueryError, SLIRequest, parse_sli_time, render_query
from reconciler.formats.gotime import TimestampError

log = get_logger(__name__)

MULTIPLE_VALUES = "query did return multiple values"
INVALID_VALUES = "query did not return valid values"
MAX_BODY_BYTES = 8 * 1024 * 1024
RETRY_STATUSES = (502, 503, 504)
"""A Prometheus restarting behind a proxy or load balancer answers these for a moment."""


class SLIQueryError(Exception):
    """One SLI could not be measured; the text goes into the SLI's `message`. `health`: how
    Prometheus is doing, when the answer said (None: the query, not Prometheus, was the problem)."""

    def __init__(self, message: str, health: PartHealth | None = None) -> None:
        super().__init__(message)
        self.health = health


@dataclass(frozen=True)
class SLIFetch:
    values: list[SLIValue]
    health: tuple[PartHealth, ...] = ()
    """The Prometheus endpoints asked, each working or not (for the problems board)."""


@dataclass(frozen=True)
class PrometheusEndpoint:
    """Where and how to query; secrets are excluded from repr so they cannot leak into logs."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 10.0

    @property
    def display_url(self) -> str:
        return redact(self.url.rstrip("/"))


def sample_value(result_type: str, result: Any) -> float:
    """The exactly-one-sample rule of prometheus-service (spec 7.4), as a pure function."""
    if result_type != "vector":
        shown = json.dumps(result, separators=(",", ":"))[:200]
        raise SLIQueryError(f"prometheus api response is not a Vector: {result_type} {shown}")
    if not isinstance(result, list) or not result:
        raise SLIQueryError(NO_DATA_MESSAGE)
    if len(result) > 1:
        raise SLIQueryError(MULTIPLE_VALUES)
    try:
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise SLIQueryError(INVALID_VALUES) from None
    # Keptn rejects NaN only; an infinity could not be written into the JSON event either.
    if not math.isfinite(value):
        raise SLIQueryError(INVALID_VALUES)
    return value


def _error_body(response: requests.Response | None) -> str:
    if response is None:
        return "no response"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        kind = body.get("errorType")
        return f"{kind}: {body['error']}" if kind else str(body["error"])
    return f"HTTP {response.status_code} {response.reason or ''}".strip()


class _LastResponse:
    """A requests response hook: the client returns only `data.result`, and we also
    need `resultType` (a scalar is not a vector) and the API's error text."""

    def __init__(self) -> None:
        self.response: requests.Response | None = None

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        self.response = response
        return response


def _timestamp_param(at: datetime) -> str:
    text = f"{at.timestamp():.3f}".rstrip("0").rstrip(".")
    return text or "0"


def instant_query(endpoint: PrometheusEndpoint, query: str, at: datetime) -> float:
    """One instant query at `at`, reduced to its single sample. Raises SLIQueryError."""
    session = requests.Session()
    last = _LastResponse()
    session.hooks["response"].append(last)
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else None
    auth = (endpoint.username, endpoint.password or "") if endpoint.username else None
    # Connection failures and 502/503/504 (a restarting Prometheus) are retried twice with
    # backoff; a slow Prometheus is not retried (each SLI would wait twice its timeout).
    retry = Retry(
        total=2,
        connect=2,
        read=False,
        status=2,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=0.1,
        raise_on_status=False,
    )
    client = PrometheusConnect(
        url=endpoint.url,
        headers=headers,
        auth=auth,
        session=session,
        retry=retry,
        timeout=endpoint.timeout,  # type: ignore[arg-type,unused-ignore]
    )
    prefix = "unable to query prometheus api: "
    part = f"prometheus {endpoint.display_url}"
    try:
        client.custom_query(query, params={"time": _timestamp_param(at)})
    except PrometheusApiClientException:
        status = last.response.status_code if last.response is not None else 0
        message = redact(prefix + _error_body(last.response))
        # Prometheus (or our access to it) is the problem, not the query
        down = status >= 500 or status in (401, 403)
        raise SLIQueryError(message, PartHealth(part, message, retrying=False) if down else None) from None
    except (requests.exceptions.InvalidJSONError, KeyError, TypeError, ValueError):
        # a 200 answer that is not the Prometheus API's JSON
        message = redact(f"{prefix}{endpoint.display_url} did not answer as a Prometheus API")
        raise SLIQueryError(message, PartHealth(part, message, retrying=False)) from None
    except requests.Timeout:
        message = redact(f"{prefix}no answer from {endpoint.display_url} within {endpoint.timeout:g}s")
        raise SLIQueryError(message, PartHealth(part, message, retrying=False)) from None
    except requests.RequestException as exc:
        message = redact(f"{prefix}cannot reach {endpoint.display_url}: {connection_reason(exc)}")
        raise SLIQueryError(message, PartHealth(part, message, retrying=False)) from None
    finally:
        session.close()
    try:
        if last.response is None:
            raise ValueError("no response")
        data = last.response.json()["data"]
        result_type, result = data["resultType"], data["result"]
    except (ValueError, KeyError, TypeError):  # it answered: Prometheus works, the answer is odd
        raise SLIQueryError(
            redact(f"{prefix}{endpoint.display_url} did not answer as a Prometheus API"), PartHealth(part)
        ) from None
    try:
        return sample_value(str(result_type), result)
    except SLIQueryError as exc:
        raise SLIQueryError(str(exc), PartHealth(part)) from None


def get_slis(request: SLIRequest, queries: Mapping[str, str], endpoint: PrometheusEndpoint) -> list[SLIValue]:
    """Answer a get-sli request: one value per requested indicator, in request order."""
    return fetch_slis(request, queries, endpoint).values


def fetch_slis(request: SLIRequest, queries: Mapping[str, str], endpoint: PrometheusEndpoint) -> SLIFetch:
    """`get_slis`, and how Prometheus did (for the problems board)."""
    try:
        start = parse_sli_time(request.start)
    except (TimestampError, ValueError, OverflowError) as exc:
        return SLIFetch(_all_failed(request.indicators, f"unable to parse start timestamp: {exc}"))
    try:
        end = parse_sli_time(request.end)
    except (TimestampError, ValueError, OverflowError) as exc:
        # Keptn silently queries at "now" here; a gate must not measure the wrong window.
        return SLIFetch(_all_failed(request.indicators, f"unable to parse end timestamp: {exc}"))
    qctx = request.context(start, end)
    out: list[SLIValue] = []
    health: dict[str, PartHealth] = {}
    part = f"prometheus {endpoint.display_url}"
    for metric in request.indicators:
        try:
            query = render_query(metric, queries, qctx)
        except QueryError as exc:
            out.append(
                SLIValue(
                    metric=metric,
                    success=False,
                    message=f"unable to get metric query: {exc} (no query in prometheus/sli.yaml and "
                    f"not a built-in SLI: {', '.join(BUILTIN_SLIS)})",
                )
            )
            continue
        try:
            value = instant_query(endpoint, query, end)
        except SLIQueryError as exc:
            log.info("sli_failed", metric=metric, query=query, reason=str(exc))
            out.append(SLIValue(metric=metric, success=False, message=str(exc), query=query))
            if exc.health is not None:
                health[part] = exc.health
            continue
        health[part] = PartHealth(part)
        out.append(SLIValue(metric=metric, value=value, success=True, query=query))
    return SLIFetch(out, tuple(health.values()))


def _all_failed(indicators: Sequence[str], message: str) -> list[SLIValue]:
    return [SLIValue(metric=m, success=False, message=message) for m in indicators]
