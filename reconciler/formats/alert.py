"""Alertmanager's webhook payload (version 4), the body of its `webhook_configs` POSTs.

Lenient where Alertmanager may add fields in later versions (unknown keys are
ignored), strict where we act on a value: every alert needs a status, labels and a
start time, because they decide whether a remediation starts and which incident
(keptn context) it belongs to.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reconciler.formats.events import load_json
from reconciler.formats.gotime import TimestampError, parse_timestamp

MAX_ALERTS = 1000
"""Alerts per notification we look at; Alertmanager's own `max_alerts` defaults to unlimited."""


class AlertError(ValueError):
    """A payload that is not an Alertmanager webhook; the message names the field."""


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str = Field(alias="startsAt")
    ends_at: str = Field(default="", alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("starts_at")
    @classmethod
    def _time(cls, value: str) -> str:
        try:
            parse_timestamp(value)
        except TimestampError as exc:
            raise ValueError(f"startsAt {value!r} is not an RFC 3339 timestamp: {exc}") from None
        return value

    def identity(self) -> str:
        """Alertmanager's fingerprint, or a hash of the sorted labels when a sender omits it."""
        if self.fingerprint:
            return self.fingerprint
        return hashlib.sha256(json.dumps(sorted(self.labels.items())).encode()).hexdigest()[:16]


class AlertWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: str = "4"
    group_key: str = Field(default="", alias="groupKey")
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[Alert] = Field(max_length=MAX_ALERTS)


def parse_webhook(raw: bytes | str) -> AlertWebhook:
    """Validate a webhook body; errors name the field (`alerts.0.labels: ...`)."""
    try:
        obj = load_json(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, over-long numbers, NaN
        raise AlertError(f"Alertmanager webhook: not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AlertError(f"Alertmanager webhook: expected a JSON object, found {type(obj).__name__}")
    try:
        return AlertWebhook.model_validate(obj)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(payload)"
            msg = "required field is missing" if err["type"] == "missing" else err["msg"]
            parts.append(f"{loc}: {msg}")
        raise AlertError("Alertmanager webhook: " + "; ".join(parts[:10])) from None
