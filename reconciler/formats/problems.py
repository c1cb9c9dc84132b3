"""Problems found in upstream files, located precisely enough to fix them.

Every parser and check in the project reports through `Problem`, so `reconciler
validate`, the poll loop's rejection records and the ledger all speak the same
shape: branch, file, line, column, field path and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel


class Problem(BaseModel):
    """One thing wrong with one file (or with the links between files)."""

    file: str
    message: str
    branch: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None
    severity: Literal["error", "warning"] = "error"

    def location(self) -> str:
        where = f"{self.branch}:{self.file}" if self.branch else self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        field = f" {self.field}:" if self.field else ""
        return f"{self.location()}:{field} {self.message}"


class ConfigError(ValueError):
    """Raised when a file cannot be accepted; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid configuration")

    def with_branch(self, branch: str) -> ConfigError:
        return ConfigError([p.model_copy(update={"branch": p.branch or branch}) for p in self.problems])


def field_path(loc: Iterable[str | int]) -> str:
    """Render a pydantic/our location tuple as `spec.stages[0].name`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
