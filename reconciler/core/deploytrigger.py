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
  newest commit that touched its values file — and only when the file differs
  from the one being served (a revert or a force-push replaying it deploys nothing);
- the first commit accepted on a branch is adopted, not deployed (a reconciler
  started on an existing upstream does not redeploy every service);
- commits carrying a `Reconciler-Origin:` trailer were made by the reconciler
  itself and never trigger (when the newest commit touching the file is one of
  those, nothing triggers: the reconciler's write is the current state);
- ids are derived from (commit, service), so a re-poll after a crash records once.

Everything here is pure: commits and file contents in, events out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.core.commands import delivery_triggered
from reconciler.core.observations import CommitInfo
from reconciler.formats.events import KeptnEvent, derived_id
from reconciler.formats.layout import service_of
from reconciler.formats.problems import Problem
from reconciler.formats.yamldoc import parse_model

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
            raise ValueError(
                f"invalid image {value!r}; expected a reference like registry/name:tag without spaces"
            )
        return value


def load_values(data: bytes | str, file: str) -> DeploymentValues:
    """Parse a values file; raises `ConfigError` with the line and what was expected."""
    return parse_model(DeploymentValues, data, file)


def values_path(service: str) -> str:
    return f"{service}/{VALUES_FILE}"


def service_of_values(path: str) -> str | None:
    """`helloservice/values.yaml` -> `helloservice`; anything else (nested, other files, a directory
    that is not a service, such as `-rf/` or `--set=image=evil/`) -> None."""
    service = service_of(path)
    return service if service is not None and path == values_path(service) else None


def by_reconciler(commit: CommitInfo) -> bool:
    return ORIGIN_TRAILER in commit.trailers


def newest_values_commits(commits: Sequence[CommitInfo]) -> dict[str, CommitInfo]:
    """Service -> the newest commit (of `commits`, oldest first) that touched its values file."""
    newest: dict[str, CommitInfo] = {}
    for commit in commits:
        for path in commit.paths:
            service = service_of_values(path)
            if service is not None:
                newest[service] = commit
    return newest


def plan_deliveries(commits: Sequence[CommitInfo]) -> dict[str, str]:
    """Service -> commit to deliver: the newest commit touching its values file.

    Services whose newest such commit was made by the reconciler are left out.
    """
    newest = newest_values_commits(commits)
    return {svc: c.sha for svc, c in sorted(newest.items()) if not by_reconciler(c)}


def delivery_event(
    *,
    project: str,
    stage: str,
    service: str,
    commit: str,
    values: dict[str, Any],
    now: datetime,
    sequence: str = DELIVERY,
) -> KeptnEvent:
    """The event `keptn trigger delivery` would send, pinned to `commit`, with ids derived from
    (commit, service) so a re-poll records it once."""
    return delivery_triggered(
        project=project,
        stage=stage,
        service=service,
        values=values,
        source=SOURCE,
        event_id=derived_id("deploy", commit, service),
        context=derived_id("deploy-context", commit, service),
        now=now,
        commit=commit,
        sequence=sequence,
    )


def delivery_triggers(
    commits: Sequence[CommitInfo],
    *,
    project: str,
    stage: str,
    read: Callable[[str, str], bytes | None],
    changed: Collection[str] | None = None,
    tip: str | None = None,
    sequence: str = DELIVERY,
    now: datetime,
) -> tuple[list[KeptnEvent], list[Problem]]:
    """Triggers for the new commits of one stage branch; `read(commit, path)` returns file bytes.

    `changed`: the paths that differ between the commit being served and the new
    one; a values file that ends up as it was (reverted, or replayed by a
    force-push) deploys nothing. `tip`: the commit to pin when a changed values
    file was touched only by commits older than those listed (a long history was
    truncated). A values file missing at its commit (deleted) triggers nothing; one
    that does not parse is a problem instead of an event.
    """
    events: list[KeptnEvent] = []
    problems: list[Problem] = []
    plan = plan_deliveries(commits)
    if tip is not None and changed is not None:
        seen = newest_values_commits(commits)
        for path in changed:
            service = service_of_values(path)
            if service is not None and service not in seen:
                plan[service] = tip
    for service, commit in sorted(plan.items()):
        path = values_path(service)
        if changed is not None and path not in changed:
            continue
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
                now=now,
            )
        )
    return events, problems
