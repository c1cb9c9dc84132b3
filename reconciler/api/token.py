"""The API token check `reconciler run` makes before anything starts.

Kept apart from the routes so that a reconciler running without the API (`api_listen`
empty) never imports FastAPI, Starlette, uvicorn or Jinja2: ~8 MiB of idle RSS.
"""

from __future__ import annotations

from typing import Any


def api_token_problem(settings: Any) -> str | None:
    """Why the configured API token cannot be used, or None.

    A token file that is missing or empty used to start the API with every route refusing
    (401) and nothing else said: an outage found only by the first caller. The value itself
    is never part of the message.
    """
    if not settings.api_listen:
        return None
    value = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    path = settings.api_token_file
    if value or path is None:
        return None
    try:
        text = path.read_text()
    except FileNotFoundError:
        return f"api_token_file {path} does not exist; the HTTP API would refuse every request"
    except OSError as exc:
        return f"api_token_file {path} cannot be read ({exc.strerror or type(exc).__name__})"
    if not text.strip():
        return f"api_token_file {path} is empty; the HTTP API would refuse every request"
    return None
