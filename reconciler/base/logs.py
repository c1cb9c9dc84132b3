"""Loggers: structlog's, named per module. What a line looks like is `runtime.observability`'s
business (configured once at start), so every layer may log without knowing it."""

from __future__ import annotations

from typing import Any

import structlog


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
