"""Alertmanager webhook receiver: each firing alert starts `<stage>.remediation` (spec 7.5).

`plan_alerts` is pure: a parsed webhook, the label/title mapping and the engine
state in, the `remediation.triggered` events to record and the alerts skipped (with
why) out. `receive_alerts` is the shell the HTTP endpoint calls.

The keptn context is derived from the alert's fingerprint and `startsAt` (SHA-256,
first 16 bytes as a version-4 UUID, as Keptn's prometheus-service did), so
Alertmanager's repeats of one incident land in one context. A repeat while a
remediation of that context is still running starts nothing; a repeat after it
ended starts the next round in the same context, which continues the action list
(see core.remediation) until the iteration cap. Resolved alerts start nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.base.logs import get_logger
from reconciler.core.admission import Rejected
from reconciler.core.engine_state import EngineState
from reconciler.formats.alert import Alert, AlertWebhook, parse_webhook
from reconciler.formats.events import KeptnEvent, derived_id, format_time, sequence_type
from reconciler.ingress.submit import Ingress, Receipt

log = get_logger("reconciler.ingress.alertmanager")

SOURCE = "prometheus"
"""Keptn's prometheus-service sent alert-born triggers with this source (spec 1.1)."""
SEQUENCE = "remediation"
TITLE_FALLBACK = "labels.alertname"


@dataclass(frozen=True)
class AlertMapping:
    """Where project/stage/service and the problem title come from (settings `alert_*`)."""

    title_source: str = "annotations.summary"
    project_label: str = "project"
    stage_label: str = "stage"
    service_label: str = "service"
    project: str = ""
    """This reconciler's project: used when an alert has no project label."""


@dataclass
class AlertPlan:
    events: list[KeptnEvent] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(alert fingerprint, why nothing was started)."""


def incident_context(alert: Alert) -> str:
    digest = hashlib.sha256((alert.identity() + alert.starts_at).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _field(alert: Alert, source: str) -> str:
    """`annotations.<name>` or `labels.<name>` of an alert, "" when absent."""
    where, _, name = source.partition(".")
    table: Mapping[str, str] = alert.annotations if where == "annotations" else alert.labels
    if where not in ("annotations", "labels") or not name:
        return ""
    return table.get(name, "")


def problem_title(alert: Alert, mapping: AlertMapping) -> str:
    return _field(alert, mapping.title_source) or _field(alert, TITLE_FALLBACK)


def remediation_trigger(alert: Alert, mapping: AlertMapping, *, round_: int, now: datetime) -> KeptnEvent:
    """The `sh.keptn.event.<stage>.remediation.triggered` for one firing alert."""
    labels = alert.labels
    project = labels.get(mapping.project_label) or mapping.project
    stage = labels.get(mapping.stage_label, "")
    service = labels.get(mapping.service_label, "")
    context = incident_context(alert)
    problem: dict[str, Any] = {
        "state": "OPEN",
        "problemID": alert.identity(),
        "problemTitle": problem_title(alert, mapping),
        "problemDetails": {
            "problemDetails": alert.annotations.get("description", ""),
            "alertname": labels.get("alertname", ""),
            "startsAt": alert.starts_at,
        },
        "problemURL": alert.generator_url,
        "impactedEntity": labels.get("pod_name") or labels.get("pod") or service,
        "project": project,
        "stage": stage,
        "service": service,
        "labels": dict(labels),
    }
    data: dict[str, Any] = {"project": project, "stage": stage, "service": service, "problem": problem}
    if alert.generator_url:
        data["labels"] = {"Problem URL": alert.generator_url}
    return KeptnEvent(
        id=derived_id("alert", context, stage, str(round_)),
        source=SOURCE,
        type=sequence_type(stage or "unknown", SEQUENCE, "triggered"),
        time=format_time(now),
        shkeptncontext=context,
        data=data,
    )


def plan_alerts(webhook: AlertWebhook, mapping: AlertMapping, state: EngineState, now: datetime) -> AlertPlan:
    out = AlertPlan()
    for alert in webhook.alerts:
        ident = alert.identity()
        if alert.status != "firing":
            out.skipped.append((ident, "alert is resolved: nothing to remediate"))
            continue
        missing = [
            label for label in (mapping.stage_label, mapping.service_label) if not alert.labels.get(label)
        ]
        if missing:
            out.skipped.append(
                (
                    ident,
                    f"alert {alert.labels.get('alertname', ident)!r} has no label {missing[0]!r}; "
                    f"expected labels {mapping.stage_label!r} and {mapping.service_label!r} naming the stage and service",
                )
            )
            continue
        context = incident_context(alert)
        stage = alert.labels[mapping.stage_label]
        earlier = [ex for ex in state.by_context(context) if ex.stage == stage and ex.sequence == SEQUENCE]
        if any(ex.active for ex in earlier):
            out.skipped.append((ident, f"remediation of this alert is still running (context {context})"))
            continue
        out.events.append(remediation_trigger(alert, mapping, round_=len(earlier), now=now))
    return out


@dataclass
class AlertReceipt:
    recorded: list[Receipt] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "started": [r.as_dict() for r in self.recorded],
            "skipped": [{"fingerprint": f, "reason": why} for f, why in self.skipped],
        }


def receive_alerts(ingress: Ingress, raw: bytes | str, mapping: AlertMapping) -> AlertReceipt:
    """Parse (AlertError on a bad payload), plan, admit and record. Rejected alerts are skipped with why."""
    webhook = parse_webhook(raw)
    plan = ingress.state.read(lambda state: plan_alerts(webhook, mapping, state, ingress.clock()))
    receipt = AlertReceipt(skipped=list(plan.skipped))
    for event in plan.events:
        try:
            receipt.recorded.append(ingress.record(event, origin="alertmanager"))
        except Rejected as exc:
            receipt.skipped.append((str(event.data["problem"]["problemID"]), str(exc)))
    for fingerprint, reason in receipt.skipped:
        log.info("alert_skipped", fingerprint=fingerprint, reason=reason)
    return receipt
