"""Approval by commit: a file under `approvals/` on `main` answers a pending manual approval.

    # approvals/2024-05-01-helloservice.yaml
    context: 5b3c8a1e-0d4f-4c55-9c7e-2f9a3c1d7e11   # shkeptncontext of the run
    stage: production                              # stage whose approval task waits
    decision: approve                              # approve | decline
    message: load test looked fine                 # optional
    service: helloservice                          # optional; only needed to pick one of several

The author of the last commit that touched the file is recorded as the approver,
so the approval goes through the same review and branch protection as every other
change to the upstream. The file keeps answering approvals of that context and
stage until it is removed; an answer is recorded once per approval task (its id is
derived from the task), so a file that stays in place is harmless.

This module is the file format; `reconciler.ingress.approvals` turns files into answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.formats.yamldoc import parse_model

SUFFIXES = (".yaml", ".yml")


class ApprovalFile(BaseModel):
    """One decision about one context and stage. Unknown keys are refused (a typo must not approve)."""

    model_config = ConfigDict(extra="forbid")

    context: str = Field(min_length=1, max_length=256)
    stage: str = Field(min_length=1, max_length=128)
    decision: Literal["approve", "decline"]
    message: str = Field(default="", max_length=4096)
    service: str = Field(default="", max_length=128)


@dataclass(frozen=True)
class CommittedFile:
    """An approval file as found at main's head, with the commit that last changed it."""

    path: str
    content: bytes
    author: str
    """`Name <email>` of that commit's author."""
    commit: str


def load_approval_file(data: bytes | str, file: str) -> ApprovalFile:
    return parse_model(ApprovalFile, data, file)


def is_approval_path(path: str, approval_dir: str) -> bool:
    prefix = approval_dir.strip("/") + "/"
    return path.startswith(prefix) and path.endswith(SUFFIXES)
