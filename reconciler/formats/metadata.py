"""`metadata.yaml`: the project's name on the main branch (Keptn's resource-service wrote it).

Keptn kept `projectName` (and a creation timestamp) on the default branch and a
`ServiceName` file per service; users who migrate keep those files, so they are read
leniently and unknown keys are ignored. The project name is the only field the
reconciler acts on: events carry it as `data.project`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.formats.yamldoc import parse_model

PROJECT_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
"""Keptn's project and service name rule: a lower-case letter, then lower-case letters, digits, '-'."""


class ProjectMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    project_name: str | None = Field(default=None, alias="projectName")
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    is_using_directory_structure: bool | None = Field(default=None, alias="isUsingDirectoryStructure")

    @field_validator("project_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not PROJECT_NAME.match(value):
            raise ValueError(f"invalid project name {value!r}; expected a lower-case letter, then [a-z0-9-]")
        return value

    @field_validator("creation_timestamp", mode="before")
    @classmethod
    def _str(cls, value: Any) -> Any:
        return None if value is None else str(value)


def load_project_metadata(data: bytes | str, file: str = "metadata.yaml") -> ProjectMetadata:
    """Parse `metadata.yaml`; an empty file is the same as one without a project name."""
    return parse_model(ProjectMetadata, data, file, empty=ProjectMetadata)
