"""The HTTP API: its routes (`routes`, grouped: health, writes, sequences, reads) and its
server (`server`: uvicorn in a thread, bounded before any route runs); it mounts the web view.

Above `ingress` and `ui` in the layers: every route that writes goes through the one `Ingress`
pipeline, and the web view is mounted on the same app.
"""

from reconciler.api.routes import (
    API_MAX_EVENT_BYTES,
    MAX_ALERT_BYTES,
    api_token_problem,
    app_from_settings,
    create_app,
    read_body,
    standby_app,
)
from reconciler.api.server import ApiServer, ServerLimits, serve

__all__ = [
    "API_MAX_EVENT_BYTES",
    "MAX_ALERT_BYTES",
    "ApiServer",
    "ServerLimits",
    "api_token_problem",
    "app_from_settings",
    "create_app",
    "read_body",
    "serve",
    "standby_app",
]
