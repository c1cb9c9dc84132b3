"""The web view's routes under /ui/, mounted on the API's FastAPI app (`mount`).

Each page handler reads what it shows through the same objects the API reads
(`Ingress.state`, the ledger, the served upstream view, `App.status`), builds a
small view model with a pure module of this package, and renders a Jinja2
template with autoescape on. Handlers are plain functions, so FastAPI runs them in
its thread pool: the state's lock and git reads never block the event loop.

Every answer carries the same security headers (`SECURITY_HEADERS`); every
registered secret is replaced in the HTML once more before it leaves, so a secret
that somehow reached a page is still not shown.
"""

from __future__ import annotations

import functools
import importlib.resources
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from reconciler.base.clock import utcnow
from reconciler.base.logs import get_logger
from reconciler.base.redact import redact
from reconciler.core.engine_state import EngineState
from reconciler.formats.events import KeptnEvent
from reconciler.ingress.submit import Ingress
from reconciler.ledger.catalog import EventsView
from reconciler.ledger.gitledger import subject_scope
from reconciler.ledger.query import parse_since
from reconciler.runtime.statusview import matching, pending_approvals, sequence_status
from reconciler.ui import approvals as approvals_view
from reconciler.ui import contextview, evaluations, fmt, overview, upstreamhealth
from reconciler.ui.board import Board
from reconciler.ui.commits import CommitIndex
from reconciler.ui.session import COOKIE, SESSION_SECONDS, Sessions, safe_next, same_origin

log = get_logger("reconciler.ui")

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
PAGE_SIZE = 50
MAX_FORM_BYTES = 8192
SERVICES_TTL = 5.0
"""Seconds a stage's service list is reused when the view cannot say which commit it read."""
OUTCOMES = (
    "pass",
    "warning",
    "fail",
    "started",
    "waitingForApproval",
    "waiting",
    "paused",
    "timedOut",
    "aborted",
)


@dataclass(frozen=True)
class Page:
    name: str
    title: str
    href: str


NAV = (
    Page("overview", "Overview", "/ui/"),
    Page("sequences", "Sequences", "/ui/sequences"),
    Page("evaluations", "Evaluations", "/ui/evaluations"),
    Page("approvals", "Approvals", "/ui/approvals"),
    Page("upstream", "Upstream", "/ui/upstream"),
)


def _q(value: object) -> str:
    """A value as one URL path segment or query value: nothing in it can pick another path."""
    return quote(str(value), safe="")


def _query(params: Mapping[str, object]) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


class WebView:
    """The pages of one reconciler: its ingress, its status, the token that opens them."""

    def __init__(
        self,
        ingress: Ingress,
        sessions: Sessions,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.ingress = ingress
        self.sessions = sessions
        self.status = status
        self.board = Board()
        path, ref = getattr(ingress.ledger, "path", None), getattr(ingress.ledger, "ref_name", None)
        self.commits = CommitIndex(path, ref) if path is not None and ref else None
        self._services: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self._services_lock = threading.Lock()
        self.env = Environment(
            loader=PackageLoader("reconciler.ui", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            q=_q,
            ago=lambda ts, now: fmt.ago(ts or "", now),
            duration=fmt.duration,
            short=fmt.short_time,
            label=fmt.label,
            number=fmt.number,
            outcome=lambda record: fmt.outcome_of(record.state, record.result),
            short_sha=lambda sha: str(sha or "")[:12],
        )
        self.env.globals.update(nav=NAV, query=_query, outcomes=OUTCOMES)
        static = importlib.resources.files("reconciler.ui") / "static"
        self.static = {name: (static / name).read_bytes() for name in STATIC}
        ingress.state.before_compact.append(self._harvest)

    # -- reading ----------------------------------------------------------------------------

    def _harvest(self, state: EngineState) -> None:
        self.board.observe(state, utcnow(), keep=self.ingress.state.keep_finished)

    def events(self) -> Sequence[KeptnEvent]:
        """The ledger's events as of the state's last read (which refreshed the ledger)."""
        return self.ingress.ledger.events()

    def context_events(self, context: str) -> Sequence[KeptnEvent]:
        found = self.events()
        if isinstance(found, EventsView):
            return found.select(context=context)
        return [e for e in found if e.shkeptncontext == context]

    def commits_of(self, events: Sequence[KeptnEvent]) -> dict[str, str]:
        """Event id -> the ledger commit holding it, for those the index can vouch for."""
        found = self.events()
        if self.commits is None or not isinstance(found, EventsView):
            return {}
        wanted = [(p, e.id) for e in events if (p := found.position(e.id)) is not None]
        return {
            event_id: sha
            for (_, event_id), sha in zip(wanted, self.commits.commits_of(wanted), strict=True)
            if sha is not None
        }

    def stages(self) -> list[str]:
        shipyard = self.ingress.view.shipyard(None)
        return list(shipyard.stage_names) if shipyard is not None else []

    def sequence_names(self) -> list[str]:
        shipyard = self.ingress.view.shipyard(None)
        if shipyard is None:
            return []
        names: list[str] = []
        for stage in shipyard.spec.stages:
            names.extend(s.name for s in stage.sequences if s.name not in names)
        return names

    def services(self, stages: list[str]) -> set[str]:
        """Services on the stage branches as served (cached per served commit)."""
        view = self.ingress.view
        head_of = getattr(view, "stage_head", None)
        out: set[str] = set()
        for stage in stages:
            head = head_of(stage) if callable(head_of) else None
            key = (stage, str(head or ""))
            with self._services_lock:
                cached = self._services.get(key)
            if cached is not None and (head or time.monotonic() - cached[0] < SERVICES_TTL):
                out |= cached[1]
                continue
            try:
                names = view.services(stage) or frozenset()
            except Exception as exc:  # an unreadable branch shows no services, not an error page
                log.warning("ui_services_unreadable", stage=stage, error=redact(str(exc)))
                names = frozenset()
            with self._services_lock:
                self._services = {k: v for k, v in self._services.items() if k[0] != stage}
                self._services[key] = (time.monotonic(), names)
            out |= names
        return out

    def project(self, seen: Sequence[tuple[str, str, str]] = ()) -> str:
        if self.ingress.project:
            return self.ingress.project
        projects = sorted({k[0] for k in seen if k[0]})
        return projects[0] if projects else ""

    def board_now(self, now: datetime) -> tuple[dict[Any, Any], dict[Any, Any], int]:
        def fold(state: EngineState) -> tuple[dict[Any, Any], dict[Any, Any], int]:
            self.board.observe(state, now)
            return dict(self.board.newest(state, now)), dict(self.board.deployed), state.event_count

        return self.ingress.state.read(fold)

    def version(self) -> int:
        return self.ingress.state.read(lambda state: state.event_count)

    def warm(self) -> None:
        began = time.monotonic()
        try:
            self.board_now(utcnow())
            found = self.events()
            if len(found) and self.commits is not None:
                self.commits_of([found[-1]])
        except Exception as exc:  # the pages will say what is wrong when someone opens them
            log.warning("ui_warm_failed", error=redact(f"{type(exc).__name__}: {exc}"))
            return
        log.info("ui_ready", events=len(found), seconds=round(time.monotonic() - began, 2))

    # -- rendering --------------------------------------------------------------------------

    def render(
        self, request: Request, template: str, *, page: str, status_code: int = 200, **values: Any
    ) -> HTMLResponse:
        values.setdefault("now", utcnow())
        values.setdefault("live", False)
        values.setdefault("version", 0)
        values.setdefault("project", self.ingress.project)
        html = self.env.get_template(template).render(
            page=page,
            public=self.sessions.public,
            signed_in=self.sessions.cookie_ok(request.cookies.get(COOKIE, "")),
            **values,
        )
        return HTMLResponse(fmt.without_secrets(html), status_code=status_code, headers=SECURITY_HEADERS)

    def login_page(
        self, request: Request, *, status_code: int, problem: str = "", target: str | None = None
    ) -> HTMLResponse:
        if target is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.url.path.startswith("/ui/login"):
                target = request.query_params.get("next", "/ui/")
        return self.render(
            request,
            "login.html",
            page="login",
            status_code=status_code,
            next=safe_next(target),
            problem=problem,
            configured=self.sessions.configured,
            project="",  # nothing about the project before signing in
        )


def mount(
    app: FastAPI,
    ingress: Ingress,
    *,
    token: str | None,
    public: bool = False,
    status: Callable[[], dict[str, Any]] | None = None,
    warm: bool = False,
) -> WebView:
    """Add the /ui/ pages to `app` (the API's app: same port, same token).

    With `warm`, a background thread folds the ledger into the ingress state and reads
    the commit index once, so the first person opening a page does not wait for that
    (seconds at 100,000 events); the API's own reads of the state gain the same."""
    ui = WebView(ingress, Sessions(token, public=public), status)
    if warm:
        threading.Thread(target=ui.warm, name="ui-warm", daemon=True).start()

    def guarded(handler: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(handler)  # FastAPI reads the handler's signature through __wrapped__
        def wrapper(request: Request, **kwargs: Any) -> Response:
            if not ui.sessions.may_read(request):
                return ui.login_page(request, status_code=401)
            return handler(request, **kwargs)

        return wrapper

    @app.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307, headers=SECURITY_HEADERS)

    @app.get("/ui/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        body = ui.static.get(name)
        if body is None:
            return Response(b"not found", status_code=404, headers=SECURITY_HEADERS)
        headers = {**SECURITY_HEADERS, "cache-control": "public, max-age=300"}
        return Response(body, media_type=STATIC[name], headers=headers)

    # -- signing in -------------------------------------------------------------------------

    @app.get("/ui/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return ui.login_page(request, status_code=200)

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return ui.login_page(
                request, status_code=403, problem="refused: the form was not sent from this page"
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return ui.login_page(request, status_code=413, problem="refused: the form is too large")
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:
            return ui.login_page(request, status_code=400, problem="refused: expected a token and a page")
        given = (form.get("token") or [""])[0]
        target = safe_next((form.get("next") or ["/ui/"])[0])
        if not ui.sessions.configured:
            return ui.login_page(request, status_code=401, target=target)
        if not ui.sessions.token_ok(given):
            log.info("ui_login_refused")
            return ui.login_page(request, status_code=401, problem="wrong token", target=target)
        response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            ui.sessions.issue(),
            max_age=SESSION_SECONDS,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/ui/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        if not same_origin(request):
            return ui.login_page(
                request, status_code=403, problem="refused: the form was not sent from this page"
            )
        response = RedirectResponse("/ui/login", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
        return response

    # -- pages ------------------------------------------------------------------------------

    @app.get("/ui/version", include_in_schema=False)
    def version(request: Request) -> Response:
        """What live pages poll: the number of ledger events (a page reloads when it moves)."""
        if not ui.sessions.may_read(request):
            return JSONResponse(
                {"code": 401, "message": "sign in first"}, status_code=401, headers=SECURITY_HEADERS
            )
        out: dict[str, Any] = {"events": ui.version()}
        if request.query_params.get("upstream") and ui.status is not None:
            up = ui.status().get("upstream") or {}
            out["upstream"] = str(up.get("last_attempt") or "") + str(up.get("consecutive_failures") or "")
        return JSONResponse(out, headers=SECURITY_HEADERS)

    def overview_page(request: Request) -> Response:
        now = utcnow()
        params = request.query_params
        contains = params.get("service", "").strip()[:256]
        attention = params.get("only") == "attention"
        newest, deployed, count = ui.board_now(now)
        stages = ui.stages()
        project = ui.project(list(newest))
        view = overview.build(
            project,
            stages,
            ui.services(stages),
            newest,
            deployed,
            now,
            contains=contains,
            only_attention=attention,
            page=_page_number(params.get("page")),
        )
        keep = {"service": contains, "only": "attention" if attention else ""}
        return ui.render(
            request,
            "overview.html",
            page="overview",
            view=view,
            contains=contains,
            attention=attention,
            prev_href=f"/ui/?{_query({**keep, 'page': view.page - 1})}" if view.page > 1 else "",
            next_href=f"/ui/?{_query({**keep, 'page': view.page + 1})}" if view.page < view.pages else "",
            project=project,
            live=True,
            version=count,
            now=now,
        )

    app.get("/ui/", include_in_schema=False, response_class=HTMLResponse)(guarded(overview_page))

    def sequences_page(request: Request) -> Response:
        now = utcnow()
        params = request.query_params
        filters = {
            k: params.get(k, "").strip()[:256]
            for k in ("stage", "service", "sequence", "result", "since", "until")
        }
        page = _page_number(params.get("page"))
        problems = []
        bounds: dict[str, datetime | None] = {"since": None, "until": None}
        for name in ("since", "until"):
            if filters[name]:
                try:
                    bounds[name] = parse_since(filters[name], now)
                except ValueError:
                    problems.append(
                        f"{name}: expected a duration ago like 30m or 2h, an RFC 3339 time or Unix seconds"
                    )
        outcome = filters["result"] if filters["result"] in OUTCOMES else ""

        def rows(state: EngineState) -> tuple[list[Any], int, int]:
            found = matching(
                state,
                stage=filters["stage"] or None,
                service=filters["service"] or None,
                sequence=filters["sequence"] or None,
                outcomes=frozenset({outcome}) if outcome else None,
                since=bounds["since"],
                until=bounds["until"],
            )
            start = (page - 1) * PAGE_SIZE
            chosen = found[::-1][start : start + PAGE_SIZE]
            return [sequence_status(ex, now) for ex in chosen], len(found), state.event_count

        found, total, count = ui.ingress.state.read(rows)
        stages = ui.stages()
        keep = {k: v for k, v in filters.items() if v}
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
        return ui.render(
            request,
            "sequences.html",
            page="sequences",
            status_code=400 if problems else 200,
            rows=found,
            total=total,
            filters=filters,
            problems=problems,
            stages=stages,
            services=sorted(ui.services(stages)),
            sequence_names=ui.sequence_names(),
            page_number=page,
            pages=pages,
            prev_href=f"/ui/sequences?{_query({**keep, 'page': page - 1})}" if page > 1 else "",
            next_href=f"/ui/sequences?{_query({**keep, 'page': page + 1})}" if page < pages else "",
            json_command=_get_sequences_command(filters),
            live=page == 1,
            version=count,
            now=now,
        )

    app.get("/ui/sequences", include_in_schema=False, response_class=HTMLResponse)(guarded(sequences_page))

    def context_page(request: Request, context: str) -> Response:
        now = utcnow()
        count = ui.version()
        events = ui.context_events(context) if context else []
        if not events:
            return ui.render(
                request,
                "missing.html",
                page="sequences",
                status_code=404,
                what=f"no events with context {context}",
            )
        commits = ui.commits_of(events)
        view = contextview.build(context, events, now, commit_of=lambda e: commits.get(e.id))
        return ui.render(
            request,
            "context.html",
            page="sequences",
            view=view,
            live=view.active,
            version=count,
            now=now,
        )

    app.get("/ui/context/{context}", include_in_schema=False, response_class=HTMLResponse)(
        guarded(context_page)
    )

    def evaluations_page(request: Request) -> Response:
        now = utcnow()
        params = request.query_params
        count_seen = ui.version()
        stages = ui.stages()
        newest, _, _ = ui.board_now(now)
        project = ui.project(list(newest))
        services = sorted(ui.services(stages) | {k[2] for k in newest if k[0] == project})
        stage = params.get("stage", "")[:256] or (stages[0] if stages else "")
        service = params.get("service", "")[:256] or (services[0] if services else "")
        try:
            n = max(1, min(int(params.get("n", "") or evaluations.DEFAULT_COLUMNS), evaluations.MAX_COLUMNS))
        except ValueError:
            n = evaluations.DEFAULT_COLUMNS
        found = ui.events()
        if isinstance(found, EventsView):
            chosen: Sequence[KeptnEvent] = found.select(
                types=(evaluations.FINISHED,), scope=subject_scope(project, stage, service)
            )
            invalid = found.select(types=(evaluations.INVALIDATED,))
        else:
            chosen = [e for e in found if e.type == evaluations.FINISHED]
            invalid = [e for e in found if e.type == evaluations.INVALIDATED]
        view = evaluations.build(
            chosen,
            {e.triggeredid for e in invalid if e.triggeredid},
            project=project,
            stage=stage,
            service=service,
            count=n,
            selected=params.get("evaluation"),
        )
        return ui.render(
            request,
            "evaluations.html",
            page="evaluations",
            view=view,
            stages=stages,
            services=services,
            project=project,
            live=not params.get("evaluation"),
            version=count_seen,
            now=now,
        )

    app.get("/ui/evaluations", include_in_schema=False, response_class=HTMLResponse)(
        guarded(evaluations_page)
    )

    def approvals_page(request: Request) -> Response:
        now = utcnow()
        pending, count = ui.ingress.state.read(lambda state: (pending_approvals(state), state.event_count))
        cards = approvals_view.build(pending, ui.context_events, now)
        return ui.render(
            request,
            "approvals.html",
            page="approvals",
            cards=cards,
            token_configured=ui.sessions.configured,
            live=True,
            version=count,
            now=now,
        )

    app.get("/ui/approvals", include_in_schema=False, response_class=HTMLResponse)(guarded(approvals_page))

    def upstream_page(request: Request) -> Response:
        now = utcnow()
        count = ui.version()
        health = upstreamhealth.build(ui.status() if ui.status is not None else None, now)
        return ui.render(
            request,
            "upstream.html",
            page="upstream",
            health=health,
            live=True,
            live_upstream=True,
            version=count,
            now=now,
        )

    app.get("/ui/upstream", include_in_schema=False, response_class=HTMLResponse)(guarded(upstream_page))
    return ui


def _page_number(text: str | None) -> int:
    try:
        return max(1, min(int(text or 1), 100_000))
    except ValueError:
        return 1


def _get_sequences_command(filters: Mapping[str, str]) -> str:
    """The CLI command showing the same records (for the filters it has)."""
    parts = ["reconciler get sequences"]
    for name in ("stage", "service"):
        if filters.get(name):
            parts.append(f"--{name} {shlex.quote(filters[name])}")
    parts.append("--output json")
    return " ".join(parts)
