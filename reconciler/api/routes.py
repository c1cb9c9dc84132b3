"""The HTTP API: Keptn's `POST /v1/event`, the Alertmanager webhook, control, status and health.

FastAPI for its OpenAPI schema (a fuzzer such as schemathesis can drive every
route from it) and typed request models; `reconciler.api.server` runs it (`serve`).
Every route that writes goes through the same
`Ingress` pipeline as the CLI and the inbox, so the API accepts and refuses
exactly what they do.

Security: all `/v1` routes need the token (header `x-token` as Keptn's API, or
`Authorization: Bearer`), compared in constant time; without a configured token
they refuse rather than run open. Bodies are read up to a limit and refused
beyond it (413) before parsing. Error bodies are Keptn's `{code, message}`; no
message contains the token. The server bounds what clients hold before any of
that runs (`reconciler.api.server`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from reconciler.api.token import api_token_problem
from reconciler.base.clock import utcnow
from reconciler.base.redact import redact
from reconciler.core.admission import Rejected
from reconciler.core.engine_state import EngineState
from reconciler.formats.alert import AlertError
from reconciler.formats.events import EventError, KeptnEvent
from reconciler.ingress.alertmanager import AlertMapping, receive_alerts
from reconciler.ingress.submit import Ingress, NothingToDo
from reconciler.runtime.statusview import pending_approvals, sequences

API_MAX_EVENT_BYTES = 64 * 1024
"""Default of `api_max_event_bytes`: Keptn events are a few KiB; 1,800 events of 380 KB (then
accepted) took the process past deploy's 1 GiB limit."""
MAX_ALERT_BYTES = 4 * 1024 * 1024
"""Alertmanager groups may carry many alerts; still bounded."""


class ApiError(HTTPException):
    """Rendered as Keptn's error model `{code, message}`."""


class ControlRequest(BaseModel):
    """Keptn's `POST /v1/sequence/{project}/{keptnContext}/control` body."""

    state: Literal["abort", "pause", "resume"]
    stage: str = ""
    message: str = Field(default="", max_length=4096)


class ApprovalRequest(BaseModel):
    stage: str = Field(min_length=1)
    decision: Literal["approve", "decline"]
    approver: str = Field(min_length=1, max_length=256)
    message: str = Field(default="", max_length=4096)
    service: str = ""


class EventContext(BaseModel):
    keptnContext: str
    id: str


def _error(status: int, message: str) -> ApiError:
    return ApiError(status_code=status, detail=message)


async def read_body(request: Request, limit: int, setting: str = "") -> bytes:
    """The request body, refusing more than `limit` bytes without reading them all.

    `setting` names the setting that sets the limit, so the 413 says what to change.
    """
    named = f" (setting {setting})" if setting else ""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _error(400, "Content-Length is not a number") from None
        if size > limit:
            raise _error(413, f"body is {size} bytes; this API accepts at most {limit}{named}")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _error(413, f"body exceeds {limit} bytes, the most this API accepts{named}")
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or closed by the read deadline: nobody reads the answer
        raise _error(408, "the request body was not sent in time") from None
    return b"".join(chunks)


def create_app(
    ingress: Ingress,
    *,
    token: str | None,
    alert_mapping: AlertMapping | None = None,
    ready: Callable[[], tuple[bool, list[str]]] = lambda: (True, []),
    status: Callable[[], dict[str, Any]] | None = None,
    max_body_bytes: int = API_MAX_EVENT_BYTES,
    metrics: Any = None,
    ui_public: bool = False,
    ui_warm: bool = False,
) -> FastAPI:
    """The API over one `Ingress`. `ready` backs `/readyz`; `status` (the app's status.json) backs `/v1/status`.

    The web view (`reconciler.ui`) is mounted under /ui/ with the same token; `ui_public`
    opens its reading pages without it; `ui_warm` folds the ledger for it in the background."""
    app = FastAPI(
        title="reconciler",
        summary="GitOps delivery reconciler: Keptn-compatible event ingress, status and health",
        version="1",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    _add_error_handlers(app)
    authorize = token_check(token)
    _add_health_routes(app, ready, metrics)
    _add_write_routes(
        app, ingress, authorize, alert_mapping or AlertMapping(project=ingress.project), max_body_bytes
    )
    _add_read_routes(app, ingress, authorize, status)

    from reconciler.ui.router import mount as mount_ui

    mount_ui(app, ingress, token=token, public=ui_public, status=status, warm=ui_warm)
    return app


def token_check(token: str | None) -> Callable[[Request], None]:
    """The dependency every `/v1` route has: the token, compared in constant time; no token
    configured refuses rather than runs open."""
    expected = token.encode() if token else None

    def authorize(request: Request) -> None:
        if expected is None:
            raise _error(401, "this API has no token configured (set api_token or api_token_file); refusing")
        given = request.headers.get("x-token", "")
        auth = request.headers.get("authorization", "")
        if not given and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not given or not hmac.compare_digest(given.encode(), expected):
            raise _error(
                401, "missing or invalid token: send it in the x-token header or as Authorization: Bearer"
            )

    return authorize


def _add_error_handlers(app: FastAPI) -> None:
    # Messages may quote the request (a refused event's type or field); a secret the sender put
    # there is not echoed back, nor into a proxy's or client's log of the answer.
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"code": exc.status_code, "message": redact(str(exc.detail))}, status_code=exc.status_code
        )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"code": exc.status_code, "message": redact(str(exc.detail))}, status_code=exc.status_code
        )


def _check_project(ingress: Ingress, project: str) -> None:
    if ingress.project and project != ingress.project:
        raise _error(404, f"unknown project {project!r}: this reconciler serves project {ingress.project!r}")


def _add_health_routes(app: FastAPI, ready: Callable[[], tuple[bool, list[str]]], metrics: Any) -> None:
    """Liveness, readiness and metrics: no token (probes and scrapers have none)."""
    if metrics is not None:
        from fastapi.responses import Response

        @app.get("/metrics", include_in_schema=False)
        def metrics_endpoint() -> Response:
            body, ctype = metrics.render()
            return Response(content=body, media_type=ctype)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready; reasons listed"}})
    def readyz() -> JSONResponse:
        """Readiness: the ledger is loaded and an upstream configuration is accepted."""
        ok, reasons = ready()
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "reasons": reasons}, status_code=200 if ok else 503
        )


def _add_write_routes(
    app: FastAPI,
    ingress: Ingress,
    authorize: Callable[[Request], None],
    mapping: AlertMapping,
    max_body_bytes: int,
) -> None:
    """Events and alerts: everything written goes through the one `Ingress` pipeline."""

    @app.post(
        "/v1/event",
        tags=["events"],
        dependencies=[Depends(authorize)],
        response_model=EventContext,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": KeptnEvent.model_json_schema()}},
            }
        },
    )
    async def post_event(request: Request) -> EventContext:
        """Record a Keptn CloudEvent (Keptn API semantics: new id and time, context kept or created)."""
        raw = await read_body(request, max_body_bytes, "api_max_event_bytes")
        try:
            receipt = await run_in_threadpool(ingress.submit_json, raw, origin="api")
        except (EventError, Rejected) as exc:
            raise _error(400, str(exc)) from None
        return EventContext(keptnContext=receipt.context, id=receipt.event_id)

    @app.post("/v1/alertmanager", tags=["events"], dependencies=[Depends(authorize)])
    async def post_alerts(request: Request) -> JSONResponse:
        """Alertmanager webhook (`webhook_configs`): each firing alert starts `<stage>.remediation`."""
        raw = await read_body(request, MAX_ALERT_BYTES)
        try:
            receipt = await run_in_threadpool(receive_alerts, ingress, raw, mapping)
        except AlertError as exc:
            raise _error(400, str(exc)) from None
        body = receipt.as_dict()
        unusable = [why for _, why in receipt.skipped if "still running" not in why and "resolved" not in why]
        if not receipt.recorded and unusable:
            return JSONResponse({"code": 422, "message": "; ".join(unusable), **body}, status_code=422)
        return JSONResponse(body)

    _add_sequence_routes(app, ingress, authorize)


def _add_sequence_routes(app: FastAPI, ingress: Ingress, authorize: Callable[[Request], None]) -> None:
    """Keptn's control and approval routes on a context."""

    @app.post(
        "/v1/sequence/{project}/{context}/control", tags=["sequences"], dependencies=[Depends(authorize)]
    )
    def control(project: str, context: str, body: ControlRequest) -> dict[str, Any]:
        """Abort, pause or resume a context (optionally one stage), Keptn's route and body."""
        _check_project(ingress, project)
        try:
            receipt = ingress.control(
                context, body.state, stage=body.stage, message=body.message, source="reconciler-api"
            )
        except NothingToDo as exc:
            raise _error(409, str(exc)) from None
        return receipt.as_dict()

    @app.post(
        "/v1/sequence/{project}/{context}/approval", tags=["sequences"], dependencies=[Depends(authorize)]
    )
    def approval(project: str, context: str, body: ApprovalRequest) -> dict[str, Any]:
        """Approve or decline the pending approval of a context in a stage."""
        _check_project(ingress, project)
        try:
            receipts = ingress.answer_approval(
                context,
                stage=body.stage,
                approve=body.decision == "approve",
                approver=body.approver,
                message=body.message,
                service=body.service,
                source="reconciler-api",
                via="api",
            )
        except Rejected as exc:
            raise _error(409 if isinstance(exc, NothingToDo) else 400, str(exc)) from None
        return {"recorded": [r.as_dict() for r in receipts]}


def _add_read_routes(
    app: FastAPI,
    ingress: Ingress,
    authorize: Callable[[Request], None],
    status: Callable[[], dict[str, Any]] | None,
) -> None:
    """Read-only views over the folded ledger (and the app's status)."""

    @app.get("/v1/sequences", tags=["sequences"], dependencies=[Depends(authorize)])
    def get_sequences(
        project: str | None = None,
        stage: str | None = None,
        service: str | None = None,
        context: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Sequences with their tasks, newest last (read-only)."""
        limit = max(1, min(limit, 1000))
        now = utcnow()

        def rows(state: EngineState) -> list[dict[str, Any]]:
            found = sequences(
                state, now, project=project, stage=stage, service=service, context=context, limit=limit
            )
            return [r.model_dump() for r in found]

        return {"sequences": ingress.state.read(rows)}

    @app.get("/v1/status", tags=["status"], dependencies=[Depends(authorize)])
    def get_status() -> dict[str, Any]:
        """The running reconciler's status snapshot, pending approvals and sequence counts (read-only)."""
        out = ingress.state.read(_status_summary)
        out["project"] = ingress.project
        shipyard = ingress.view.shipyard(None)
        out["stages"] = shipyard.stage_names if shipyard is not None else []
        if status is not None:
            out["reconciler"] = status()
        return out


def _status_summary(state: EngineState) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for tid in state.order:
        st = state.executions[tid].display_state
        counts[st] = counts.get(st, 0) + 1
    return {
        "sequences": counts,
        "pending_approvals": [a.model_dump() for a in pending_approvals(state)],
        "ledger_events": state.event_count,
    }


def standby_app(*, ready: Callable[[], tuple[bool, list[str]]], metrics: Any = None) -> FastAPI:
    """What a standby without a mirror yet serves: health, readiness, /metrics; /v1 answers 503."""
    from fastapi.responses import Response

    app = FastAPI(title="reconciler (standby)", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ok, reasons = ready()
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "reasons": reasons}, status_code=200 if ok else 503
        )

    if metrics is not None:

        @app.get("/metrics")
        def metrics_endpoint() -> Response:
            body, ctype = metrics.render()
            return Response(content=body, media_type=ctype)

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    def not_leader(path: str) -> JSONResponse:
        return JSONResponse(
            {"code": 503, "message": "this replica is a standby and no leader has polled the upstream yet"},
            status_code=503,
        )

    return app


def app_from_settings(
    ingress: Ingress,
    settings: Any,
    *,
    ready: Callable[[], tuple[bool, list[str]]] = lambda: (True, []),
    status: Callable[[], dict[str, Any]] | None = None,
    metrics: Any = None,
) -> FastAPI:
    """`create_app` with token and alert mapping taken from `Settings` (what `reconciler run` calls).

    Raises ValueError when a configured token file cannot give a token (`api_token_problem`).
    """
    problem = api_token_problem(settings)
    if problem is not None:
        raise ValueError(problem)
    mapping = AlertMapping(
        title_source=settings.alert_title_source,
        project_label=settings.alert_project_label,
        stage_label=settings.alert_stage_label,
        service_label=settings.alert_service_label,
        project=ingress.project,
    )
    return create_app(
        ingress,
        token=settings.secret("api_token"),
        alert_mapping=mapping,
        max_body_bytes=settings.api_max_event_bytes,
        ready=ready,
        status=status,
        metrics=metrics,
        ui_public=settings.ui_public,
        ui_warm=True,
    )
