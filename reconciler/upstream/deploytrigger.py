"""Commit-to-deploy: a changed `<service>/values.yaml` on a stage branch starts a delivery.

The file is the service's deployment values, a YAML mapping with at least `image`::

    # qa branch: helloservice/values.yaml
    image: ghcr.io/podtato-head/podtatoserver:v0.1.2
    replicaCount: 1          # any further keys travel along unchanged

Committing it is the GitOps spelling of `keptn trigger delivery --image=…`: the
reconciler emits `sh.keptn.event.<stage>.delivery.triggered` shaped exactly like
the CLI's event (spec 8.2) with `configurationChange.values` = the file's mapping,
and pins the sequence to the commit (`gitcommitid`). Rules:

- several commits since the last poll yield one trigger per service, for the
  newest commit that touched its values file;
- commits carrying a `Reconciler-Origin:` trailer were made by the reconciler
  itself and never trigger (when the newest commit touching the file is one of
  those, nothing triggers: the reconciler's write is the current state);
- ids are derived from (commit, service), so a re-poll after a crash records once.

Everything here is pure: commits and file contents in, events out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.formats.events import KeptnEvent, derived_id, sequence_type
from reconciler.formats.problems import Problem
from reconciler.formats.yamldoc import parse_model
from reconciler.upstream.poll import CommitInfo

VALUES_FILE = "values.yaml"
ORIGIN_TRAILER = "Reconciler-Origin"
SOURCE = "reconciler-upstream"
DELIVERY = "delivery"


class DeploymentValues(BaseModel):
    """`<service>/values.yaml`: the image to deploy plus any chart values."""

    model_config = ConfigDict(extra="allow")

    image: str = Field(min_length=1)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if value != value.strip() or any(ch.isspace() for ch in value):
            raise ValueError(f"invalid image {value!r}; expected a reference like registry/name:tag without spaces")
        return value


def load_values(data: bytes | str, file: str) -> DeploymentValues:
    """Parse a values file; raises `ConfigError` with the line and what was expected."""
    return parse_model(DeploymentValues, data, file)


def values_path(service: str) -> str:
    return f"{service}/{VALUES_FILE}"


def service_of_values(path: str) -> str | None:
    """`helloservice/values.yaml` -> `helloservice`; anything else (nested, other files) -> None."""
    head, sep, rest = path.partition("/")
    return head if sep and rest == VALUES_FILE and head and not head.startswith((".", "_")) else None


def by_reconciler(commit: CommitInfo) -> bool:
    return ORIGIN_TRAILER in commit.trailers


def plan_deliveries(commits: Sequence[CommitInfo]) -> dict[str, str]:
    """Service -> commit to deliver: the newest commit (of `commits`, oldest first) touching its values.

    Services whose newest such commit was made by the reconciler are left out.
    """
    newest: dict[str, CommitInfo] = {}
    for commit in commits:
        for path in commit.paths:
            service = service_of_values(path)
            if service is not None:
                newest[service] = commit
    return {svc: c.sha for svc, c in sorted(newest.items()) if not by_reconciler(c)}


def delivery_event(
    *, project: str, stage: str, service: str, commit: str, values: dict[str, Any], sequence: str = DELIVERY
) -> KeptnEvent:
    """The event `keptn trigger delivery` would send, pinned to `commit`, with a deterministic id."""
    return KeptnEvent(
        id=derived_id("deploy", commit, service),
        source=SOURCE,
        type=sequence_type(stage, sequence, "triggered"),
        shkeptncontext=derived_id("deploy-context", commit, service),
        gitcommitid=commit,
        data={
            "project": project,
            "stage": stage,
            "service": service,
            "configurationChange": {"values": values},
            "deployment": {"deploymentURIsLocal": None, "deploymentstrategy": ""},
        },
    )


def delivery_triggers(
    commits: Sequence[CommitInfo],
    *,
    project: str,
    stage: str,
    read: Callable[[str, str], bytes | None],
    sequence: str = DELIVERY,
) -> tuple[list[KeptnEvent], list[Problem]]:
    """Triggers for the new commits of one stage branch; `read(commit, path)` returns file bytes.

    A values file that is missing at its commit (deleted) triggers nothing; one
    that does not parse is reported as a problem instead of an event.
    """
    events: list[KeptnEvent] = []
    problems: list[Problem] = []
    for service, commit in plan_deliveries(commits).items():
        path = values_path(service)
        data = read(commit, path)
        if data is None:
            continue
        try:
            values = load_values(data, path)
        except ValueError as exc:
            errors = getattr(exc, "problems", None) or [Problem(file=path, message=str(exc))]
            problems.extend(p.model_copy(update={"branch": p.branch or stage}) for p in errors)
            continue
        events.append(
            delivery_event(
                project=project,
                stage=stage,
                service=service,
                commit=commit,
                values=values.model_dump(mode="json"),
                sequence=sequence,
            )
        )
    return events, problems
