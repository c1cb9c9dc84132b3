"""`<service>/remediation.yaml` (spec.keptn.sh/0.1.4 Remediation).

Keptn decoded this file case-insensitively (YAML -> JSON -> Go struct), so
`ProblemType` and `problemType` both work; we accept the same spellings.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.formats.yamldoc import parse_model

API_VERSION = "spec.keptn.sh/0.1.4"


def _fold_keys(value: Any, names: dict[str, str]) -> Any:
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        canon = names.get(str(key).lower(), str(key))
        out[canon] = item
    return out


class _CaseInsensitive(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, value: Any) -> Any:
        names: dict[str, str] = {}
        for name, field in cls.model_fields.items():
            names[name.lower()] = field.alias or name
            if field.alias:
                names[field.alias.lower()] = field.alias
        return _fold_keys(value, names)


class Action(_CaseInsensitive):
    name: str = ""
    action: str
    description: str = ""
    value: Any = None

    def payload(self) -> dict[str, Any]:
        """`data.action` as Keptn shapes it: description/value omitted when empty."""
        out: dict[str, Any] = {"name": self.name, "action": self.action}
        if self.description:
            out["description"] = self.description
        if self.value not in (None, "", {}, []):
            out["value"] = self.value
        return out


class RemediationEntry(_CaseInsensitive):
    problem_type: str = Field(default="", alias="problemType")
    actions_on_open: list[Action] | None = Field(default=None, alias="actionsOnOpen")


class RemediationSpec(_CaseInsensitive):
    remediations: list[RemediationEntry] = Field(default_factory=list)

    @field_validator("remediations", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return [] if value is None else value


class Remediation(_CaseInsensitive):
    api_version: str = Field(alias="apiVersion")
    kind: str | None = "Remediation"
    metadata: dict[str, Any] | None = None
    spec: RemediationSpec

    @field_validator("api_version")
    @classmethod
    def _api(cls, value: str) -> str:
        if value != API_VERSION:
            raise ValueError(f"unsupported apiVersion {value!r}; expected exactly {API_VERSION!r}")
        return value


def load_remediation(data: bytes | str, file: str = "remediation.yaml") -> Remediation:
    return parse_model(Remediation, data, file)
