"""The events behind the user commands: trigger delivery/sequence, abort/pause/resume.

Pure builders: ids, context and time are arguments, so the CLI, the HTTP API and the
tests produce byte-identical events for the same input. Shapes follow the Keptn CLI
(spec 8.2 `keptn trigger delivery`, 2.11 `keptn trigger sequence`); control events
are the reconciler's own `reconciler.sequence.control` records the engine folds.

May import: stdlib, `reconciler.formats`, `reconciler.core`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from reconciler.core.engine_state import CONTROL_TYPE
from reconciler.core.merge import deep_merge
from reconciler.formats.events import KeptnEvent, format_time, sequence_type

CLI_SOURCE = "https://github.com/keptn/keptn/cli#configuration-change"
"""Keptn CLI's source for `trigger delivery` (spec 1.1); kept so Keptn users' filters still match."""

CONTROL_STATES = ("abort", "pause", "resume")


class CommandError(ValueError):
    """A malformed command argument; the message names the argument and the expected form."""


def parse_pairs(items: Iterable[str], *, option: str) -> list[tuple[str, str]]:
    """`k=v` items (comma-separated or repeated); exactly one `=` and a non-empty key each."""
    out: list[tuple[str, str]] = []
    for item in items:
        for part in item.split(","):
            if not part:
                continue
            if part.count("=") != 1:
                raise CommandError(f"{option} {part!r}: expected key=value (exactly one '=')")
            key, value = part.split("=")
            if not key:
                raise CommandError(f"{option} {part!r}: the key before '=' is empty")
            out.append((key, value))
    return out


def unfold(pairs: Iterable[tuple[str, str]], *, option: str) -> dict[str, Any]:
    """`a.b.c=v` into nested objects with string values (Keptn CLI's `--values`/`--data`)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.split(".")
        if any(not p for p in parts):
            raise CommandError(f"{option} {key}={value}: empty path segment in {key!r}")
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                if child is not None:
                    raise CommandError(f"{option} {key}={value}: {part!r} is already set to a value")
                child = {}
                node[part] = child
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise CommandError(f"{option} {key}={value}: {key!r} already holds nested values")
        node[parts[-1]] = value
    return root


def delivery_triggered(
    *,
    project: str,
    stage: str,
    service: str,
    values: Mapping[str, Any],
    source: str,
    event_id: str,
    context: str,
    now: datetime,
    commit: str | None = None,
    labels: Mapping[str, str] | None = None,
    sequence: str = "delivery",
) -> KeptnEvent:
    """The one `sh.keptn.event.<stage>.delivery.triggered` (spec 8.2): what `keptn trigger
    delivery` sends, and what a commit to a values file starts (pinned to `commit`)."""
    data: dict[str, Any] = {"project": project, "stage": stage, "service": service}
    if labels:
        data["labels"] = dict(labels)
    data["configurationChange"] = {"values": dict(values)}
    data["deployment"] = {"deploymentURIsLocal": None, "deploymentstrategy": ""}
    return _triggered(
        stage, sequence, data, source=source, event_id=event_id, context=context, now=now, commit=commit
    )


def delivery_event(
    *,
    project: str,
    stage: str,
    service: str,
    image: str,
    sequence: str = "delivery",
    labels: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
    event_id: str,
    context: str,
    now: datetime,
) -> KeptnEvent:
    """`keptn trigger delivery` from the CLI's options: image verbatim, `--values` merged over `{image}`."""
    return delivery_triggered(
        project=project,
        stage=stage,
        service=service,
        values=deep_merge({"image": image}, values or {}),
        source=CLI_SOURCE,
        event_id=event_id,
        context=context,
        now=now,
        labels=labels,
        sequence=sequence,
    )


def sequence_event(
    *,
    project: str,
    stage: str,
    service: str,
    sequence: str,
    labels: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
    event_id: str,
    context: str,
    now: datetime,
    source: str = "https://github.com/keptn/keptn/cli",
) -> KeptnEvent:
    """`keptn trigger sequence` (spec 2.11): the unfolded `--data` plus project/stage/service/labels."""
    payload: dict[str, Any] = dict(data or {})
    payload.update(project=project, stage=stage, service=service)
    if labels:
        payload["labels"] = dict(labels)
    return _triggered(stage, sequence, payload, source=source, event_id=event_id, context=context, now=now)


def _triggered(
    stage: str,
    sequence: str,
    data: dict[str, Any],
    *,
    source: str,
    event_id: str,
    context: str,
    now: datetime,
    commit: str | None = None,
) -> KeptnEvent:
    return KeptnEvent(
        id=event_id,
        source=source,
        type=sequence_type(stage, sequence, "triggered"),
        time=format_time(now),
        shkeptncontext=context,
        gitcommitid=commit,
        data=data,
    )


def control_event(
    *,
    context: str,
    state: str,
    stage: str = "",
    message: str = "",
    source: str,
    event_id: str,
    now: datetime,
) -> KeptnEvent:
    """abort/pause/resume of one context (optionally one stage), as the engine folds it (spec 2.9)."""
    if state not in CONTROL_STATES:
        raise CommandError(f"control state {state!r}: expected one of {', '.join(CONTROL_STATES)}")
    return KeptnEvent(
        id=event_id,
        source=source,
        type=CONTROL_TYPE,
        time=format_time(now),
        shkeptncontext=context,
        data={"context": context, "stage": stage, "state": state, "message": message},
    )
