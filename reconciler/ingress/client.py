"""A client for a running reconciler's HTTP API (what `--api URL --token T` on the CLI uses).

Errors come back as `ApiClientError` carrying the server's one-line message, so the
CLI prints the same reason whether it validated locally or the server refused.
The token travels only in the `x-token` header and never appears in an error.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from reconciler.base.redact import redact

TIMEOUT = 15.0


class ApiClientError(RuntimeError):
    """The API refused or could not be reached; `status` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, url: str, token: str | None, *, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        headers = {"x-token": token} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiClientError(redact(f"cannot reach {self.url}: {type(exc).__name__}: {exc}")) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            message = body.get("message") if isinstance(body, dict) else None
            raise ApiClientError(
                redact(f"{self.url} answered {response.status_code}: {message or response.text[:300]}"),
                response.status_code,
            )
        return body

    def post_event(self, raw: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/v1/event", content=raw, headers={"content-type": "application/json"}
        )
        return result

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/status")
        return result

    def control(self, project: str, context: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/v1/sequence/{quote(project, safe='')}/{quote(context, safe='')}/control"
        result: dict[str, Any] = self._call("POST", path, json=body)
        return result

    def approval(self, project: str, context: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/v1/sequence/{quote(project, safe='')}/{quote(context, safe='')}/approval"
        result: dict[str, Any] = self._call("POST", path, json=body)
        return result
