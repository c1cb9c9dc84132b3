"""The HTTP API: its routes (`routes`, grouped: health, writes, sequences, reads) and its
server (`server`: uvicorn in a thread, bounded before any route runs); it mounts the web view.

Above `ingress` and `ui` in the layers: every route that writes goes through the one `Ingress`
pipeline, and the web view is mounted on the same app.

The names below load on first use (PEP 562): a reconciler running without the API imports
`reconciler.api.token` only, not FastAPI, Starlette, uvicorn and Jinja2 (~8 MiB idle).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names' real types for mypy; at run time __getattr__ loads them
    from reconciler.api.routes import API_MAX_EVENT_BYTES as API_MAX_EVENT_BYTES
    from reconciler.api.routes import MAX_ALERT_BYTES as MAX_ALERT_BYTES
    from reconciler.api.routes import app_from_settings as app_from_settings
    from reconciler.api.routes import create_app as create_app
    from reconciler.api.routes import read_body as read_body
    from reconciler.api.routes import standby_app as standby_app
    from reconciler.api.server import ApiServer as ApiServer
    from reconciler.api.server import ServerLimits as ServerLimits
    from reconciler.api.server import serve as serve
    from reconciler.api.token import api_token_problem as api_token_problem

_WHERE = {
    "API_MAX_EVENT_BYTES": "routes",
    "MAX_ALERT_BYTES": "routes",
    "app_from_settings": "routes",
    "create_app": "routes",
    "read_body": "routes",
    "standby_app": "routes",
    "ApiServer": "server",
    "ServerLimits": "server",
    "serve": "server",
    "api_token_problem": "token",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"reconciler.api.{module}"), name)
