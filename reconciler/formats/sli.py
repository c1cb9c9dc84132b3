"""`prometheus/sli.yaml`: SLI name -> query, merged project -> stage -> service."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.formats.yamldoc import parse_model


class SLIConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    spec_version: str | None = None
    indicators: dict[str, str] = Field(default_factory=dict)

    @field_validator("spec_version", mode="before")
    @classmethod
    def _ver(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @field_validator("indicators", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, dict):
            bad = [k for k, v in value.items() if not isinstance(v, str)]
            if bad:
                raise ValueError(f"indicator {bad[0]!r} must be a query string")
        return value


def load_sli(data: bytes | str, file: str = "prometheus/sli.yaml") -> SLIConfig:
    return parse_model(SLIConfig, data, file)


def merge_sli(*levels: SLIConfig | None) -> dict[str, str]:
    """Later levels override earlier keys (spec 7.2: project -> stage -> service)."""
    out: dict[str, str] = {}
    for level in levels:
        if level is not None:
            out.update(level.indicators)
    return out
