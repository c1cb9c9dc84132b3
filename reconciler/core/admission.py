"""Which events the outside world may record, and how they are stamped on the way in.

Pure: the caller supplies the accepted upstream configuration (`UpstreamView`), the
project, and the open tasks of the ledger-replayed engine state. Every ingress (CLI,
HTTP API, inbox, Alertmanager) runs the same `admit`, so an event that one of them
refuses no other one records. A refusal is a `Rejected` with one line a person can
act on; nothing is recorded for it.

What is accepted (spec 1.6, extended): a sequence trigger
`sh.keptn.event.<stage>.<sequence>.triggered` for a stage and sequence of the
accepted shipyard and a service of that stage; an executor's answer to an open
task (`<task>.started`, `<task>.finished`, `<task>.status.changed`); and
`sh.keptn.event.evaluation.invalidated`. Task `.triggered`, sequence
`.started`/`.finished` and the reconciler's own `reconciler.*` records are written
by the engine only.

May import: stdlib, `reconciler.formats`, `reconciler.core`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlparse

from reconciler.core import deploytrigger
from reconciler.core.observations import UpstreamChanges
from reconciler.core.validation import ValidationResult, Validator
from reconciler.formats.events import (
    KEPTN_PREFIX,
    EventType,
    IncomingEvent,
    KeptnEvent,
    context_from_string,
    derived_id,
    format_time,
)
from reconciler.formats.problems import Problem
from reconciler.formats.shipyard import Shipyard
from reconciler.formats.upstreamrecords import (
    ACCEPTED,
    BRANCH_DELETED,
    FORCE_PUSHED,
    REJECTED,
    UpstreamRecords,
)
from reconciler.formats.upstreamrecords import SOURCE as UPSTREAM_SOURCE

API_SOURCE = "https://github.com/keptn/keptn/api"
"""Keptn API's source for events whose own source is not a URL (spec 1.1)."""

RESULTS = ("pass", "warning", "fail")
STATUSES = ("succeeded", "errored", "aborted", "unknown")


class Rejected(ValueError):
    """An event we will not record; `str()` is the one-line reason."""


class UpstreamView(Protocol):
    """What admission needs to know about the accepted upstream configuration."""

    def shipyard(self, commit: str | None = None) -> Shipyard | None: ...

    def services(self, stage: str) -> frozenset[str] | None:
        """Services (directories with files) on the stage's branch; None when that cannot be said."""
        ...


@dataclass(frozen=True)
class Admitted:
    """An accepted event and what it is, for logs and responses."""

    event: KeptnEvent
    kind: str  # "sequence" | "answer" | "invalidation"


def _names(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def _require(data: Mapping[str, Any], *fields: str) -> None:
    for name in fields:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise Rejected(f"data.{name} is missing or empty; expected the {name} name as a non-empty string")


def _check_labels(data: Mapping[str, Any]) -> None:
    labels = data.get("labels")
    if labels is None:
        return
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise Rejected("data.labels must be an object mapping strings to strings")


def _check_project(data: Mapping[str, Any], project: str) -> None:
    if project and data.get("project") != project:
        raise Rejected(f"unknown project {data.get('project')!r}: this reconciler serves project {project!r}")


def admit(
    event: KeptnEvent,
    *,
    view: UpstreamView,
    project: str,
    open_task: Callable[[str], KeptnEvent | None] = lambda _id: None,
) -> Admitted:
    """Accept `event` or raise `Rejected` saying why. `open_task(id)` finds an open task's `.triggered`."""
    if not event.type.startswith(KEPTN_PREFIX):
        if event.type.startswith("reconciler."):
            raise Rejected(
                f"type {event.type!r} is written by the reconciler itself, not accepted from outside"
            )
        raise Rejected(f"type {event.type!r} is not a Keptn event type (expected sh.keptn.event.…)")
    etype = EventType.parse(event.type)
    if etype is None:  # KeptnEvent validation already refuses these; kept for direct callers
        raise Rejected(f"type {event.type!r} is not a valid Keptn event type")
    data = event.data
    _check_labels(data)
    if etype.is_sequence and etype.sequence == "status" and etype.kind == "changed":
        return _admit_answer(event, etype.stage or "", "status.changed", data, project, open_task)
    if etype.is_sequence:
        if etype.kind != "triggered":
            raise Rejected(
                f"{event.type} is written by the engine; from outside a sequence can only be "
                "triggered (sh.keptn.event.<stage>.<sequence>.triggered)"
            )
        return _admit_trigger(event, etype, data, view, project)
    task = etype.task or ""
    if etype.kind == "triggered":
        raise Rejected(
            f"{event.type} is dispatched by the engine only; to run task {task!r}, trigger a sequence "
            f"that contains it (sh.keptn.event.<stage>.<sequence>.triggered)"
        )
    if etype.kind in ("started", "finished"):
        return _admit_answer(event, task, etype.kind, data, project, open_task)
    if etype.kind == "invalidated" and task == "evaluation":
        _require(data, "project", "stage", "service")
        _check_project(data, project)
        if not event.triggeredid:
            raise Rejected("triggeredid is missing; expected the id of the evaluation to invalidate")
        return Admitted(event, "invalidation")
    raise Rejected(
        f"{event.type}: {etype.kind!r} is not an event kind accepted here; expected "
        "sh.keptn.event.<stage>.<sequence>.triggered, sh.keptn.event.<task>.started|finished|status.changed "
        "or sh.keptn.event.evaluation.invalidated"
    )


def _admit_trigger(
    event: KeptnEvent, etype: EventType, data: Mapping[str, Any], view: UpstreamView, project: str
) -> Admitted:
    stage_in_type, sequence = etype.stage or "", etype.sequence or ""
    _require(data, "project", "stage", "service")
    if data["stage"] != stage_in_type:
        raise Rejected(
            f"data.stage {data['stage']!r} does not match the stage {stage_in_type!r} in type {event.type}"
        )
    _check_project(data, project)
    shipyard = view.shipyard(None)
    if shipyard is None:
        raise Rejected("no accepted shipyard.yaml yet: the upstream's main branch has no valid shipyard")
    stage = shipyard.stage(stage_in_type)
    if stage is None:
        raise Rejected(
            f"no stage {stage_in_type!r} in shipyard.yaml (stages: {_names(shipyard.stage_names)})"
        )
    seq = stage.sequence(sequence)
    if seq is None:
        known = [s.name for s in stage.sequences]
        if "evaluation" not in known:
            known.append("evaluation")
        raise Rejected(
            f"no sequence {sequence!r} in stage {stage_in_type!r} of shipyard.yaml (sequences: {_names(known)})"
        )
    if not seq.tasks:
        raise Rejected(f"sequence {sequence!r} in stage {stage_in_type!r} has no tasks")
    services = view.services(stage_in_type)
    service = str(data["service"])
    if services is not None and service not in services:
        raise Rejected(
            f"no service {service!r} on branch {stage_in_type!r} (services: {_names(sorted(services))})"
        )
    return Admitted(event, "sequence")


def _admit_answer(
    event: KeptnEvent,
    task: str,
    kind: str,
    data: Mapping[str, Any],
    project: str,
    open_task: Callable[[str], KeptnEvent | None],
) -> Admitted:
    if not event.triggeredid:
        raise Rejected(
            f"{event.type}: triggeredid is missing; expected the id of the {task}.triggered it answers"
        )
    _require(data, "project", "stage", "service")
    _check_project(data, project)
    if kind == "finished":
        if data.get("result") not in RESULTS:
            raise Rejected(f"data.result {data.get('result')!r} is not one of {', '.join(RESULTS)}")
        if data.get("status") not in STATUSES:
            raise Rejected(f"data.status {data.get('status')!r} is not one of {', '.join(STATUSES)}")
    triggered = open_task(event.triggeredid)
    if triggered is None:
        raise Rejected(
            f"{event.type}: no open task has triggeredid {event.triggeredid!r} "
            "(it finished already, timed out, or never existed)"
        )
    etype = triggered.etype
    if etype is None or etype.task != task:
        raise Rejected(
            f"{event.type}: triggeredid {event.triggeredid!r} is a {triggered.type}, not a {task} task"
        )
    if event.shkeptncontext != triggered.shkeptncontext:
        raise Rejected(
            f"shkeptncontext {event.shkeptncontext!r} is not the context {triggered.shkeptncontext!r} "
            f"of task {event.triggeredid}"
        )
    return Admitted(event, "answer")


def stamp(
    event: KeptnEvent,
    *,
    now: datetime,
    new_id: str,
    new_context: str,
    open_task: Callable[[str], KeptnEvent | None] = lambda _id: None,
) -> KeptnEvent:
    """Keptn API's rewriting of an incoming event (spec 1.1), made deterministic by the caller's ids.

    id := `new_id`; time := now;
    source kept when Go would parse it as a URL reference, else Keptn's API source;
    shkeptncontext kept when it is a UUID, derived from the string otherwise, `new_context`
    when empty. Difference: an answer to an open task without a context gets that task's.
    """
    context = event.shkeptncontext
    if not context and event.triggeredid:
        triggered = open_task(event.triggeredid)
        if triggered is not None:
            context = triggered.shkeptncontext
    context = context_from_string(context) if context else new_context
    update = {
        "datacontenttype": "application/json",
        "source": event.source if _is_url(event.source) else API_SOURCE,
        "shkeptncontext": context,
    }
    if isinstance(event, IncomingEvent):  # from JSON: becomes a whole event only now
        return event.stamped(id_=new_id, time=format_time(now), **update)
    return event.model_copy(update={"id": new_id, "time": format_time(now), **update})


def _is_url(value: str) -> bool:
    """Whether Go's url.Parse would take it: it accepts relative references, so plain names
    such as `job-executor-service` stay; only blanks, whitespace and control characters fail."""
    if not value or any(ch.isspace() or not ch.isprintable() for ch in value):
        return False
    try:
        urlparse(value)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# The upstream: what a poll's commits mean
# ----------------------------------------------------------------------------------------------

MAX_PROBLEMS = 50
"""Problems recorded per rejection; the count says how many more there were."""


@dataclass(frozen=True)
class UpstreamAdmission:
    """The records a poll implies, in the order to record them, and what was judged.

    Within a branch, the record that marks its commit as handled (accepted, rejected) comes
    last, so a caller that appends one by one and dies halfway gets the rest next poll."""

    events: tuple[KeptnEvent, ...]
    project: str
    result: ValidationResult
    """Validation of the pins the poll leaves served (the snapshot is built from it)."""
    rejected: tuple[tuple[str, str, tuple[Problem, ...]], ...] = ()
    """(branch, commit, problems) rejected by this poll, for the log."""
    deploy_problems: tuple[Problem, ...] = ()
    """values.yaml files that did not parse (the commit is still accepted; nothing deploys)."""


def project_of(result: ValidationResult | None, default_project: str) -> str:
    """metadata.yaml's `projectName`, else the configured project, else the shipyard's name."""
    if result is not None:
        if result.config.project:
            return result.config.project
        if not default_project and result.config.shipyard is not None:
            return result.config.shipyard.project or ""
    return default_project


def admit_upstream(
    changes: UpstreamChanges,
    records: UpstreamRecords,
    validator: Validator,
    *,
    main_branch: str,
    default_project: str,
    deploy_on_commit: bool = True,
) -> UpstreamAdmission:
    """What a poll means, given what is recorded. Changes nothing; reads files only through
    `validator`, at pinned commits (whose content never changes), and commit-to-deploy reads
    only what the poll observed (`changes.since_served`, `changes.values`).

    A commit is a proposal: the upstream is validated with each changed branch at its tip and
    every other at the commit being served; a changed branch with errors (or one that breaks
    an unchanged branch) is rejected and keeps serving its last good commit."""
    served = dict(records.accepted)
    pins, blame, result = _judge(changes.tips, served, validator, main_branch)
    relevant = set(result.config.revisions) | {main_branch} | set(blame) | set(served)
    project = project_of(result if result.config.shipyard is not None else None, default_project)
    context = derived_id(
        "upstream-poll", *sorted(f"{b}@{c}" for b, c in changes.tips.items() if b in relevant)
    )
    out = _Records(project, main_branch, context, format_time(changes.polled_at))
    order = _order(result, relevant, main_branch)
    _history_records(out, changes, records, served, relevant, order)
    rejected, problems = _verdicts(
        out,
        changes,
        records,
        served,
        pins,
        blame,
        result,
        sorted(relevant, key=lambda b: order.get(b, len(order))),
        deploy_on_commit=deploy_on_commit,
    )
    return UpstreamAdmission(tuple(out.events), project, result, tuple(rejected), tuple(problems))


def _judge(
    tips: Mapping[str, str], served: Mapping[str, str], validator: Validator, main_branch: str
) -> tuple[dict[str, str], dict[str, list[Problem]], ValidationResult]:
    """The pins to serve, the problems blamed on each rejected branch, and their validation."""
    proposal = dict(tips)
    for branch, commit in served.items():
        proposal.setdefault(branch, commit)  # deleted upstream: keep the last good commit
    proposed = {b for b, c in proposal.items() if served.get(b) != c}
    pins = dict(proposal)
    blame: dict[str, list[Problem]] = {}
    # problems the served config already has (e.g. a stricter validator since) blame no one
    known = {str(p) for p in validator.validate(served).errors} if served else set()
    result = validator.validate(pins)
    for _ in range(len(pins) + 1):
        relevant = set(result.config.revisions) | {main_branch}
        by_branch: dict[str, list[Problem]] = {}
        for p in result.errors:
            by_branch.setdefault(p.branch or main_branch, []).append(p)
        bad = {b for b in by_branch if b in proposed and b in pins}
        orphans = [p for b, ps in by_branch.items() if b not in bad for p in ps if str(p) not in known]
        if orphans:  # an unchanged branch broke: the change is to blame, all of it
            bad |= {b for b in proposed if b in pins and b in relevant}
        if not bad:
            break
        for b in bad:
            blame.setdefault(b, []).extend(by_branch.get(b, []) + orphans)
            if b in served:
                pins[b] = served[b]
            else:
                pins.pop(b)
        proposed -= bad
        result = validator.validate(pins)
    return pins, blame, result


@dataclass
class _Records:
    project: str
    main_branch: str
    context: str
    time: str
    events: list[KeptnEvent] = field(default_factory=list)

    def add(self, type_: str, branch: str, commit: str, extra: dict[str, Any], *id_parts: str) -> None:
        stage = "" if branch == self.main_branch else branch
        self.events.append(
            KeptnEvent(
                id=derived_id("upstream", type_, branch, commit, *id_parts),
                source=UPSTREAM_SOURCE,
                type=type_,
                time=self.time,
                shkeptncontext=self.context,
                gitcommitid=commit or None,
                data={"project": self.project, "stage": stage, "branch": branch, "commit": commit, **extra},
            )
        )


def _order(result: ValidationResult, relevant: Iterable[str], main_branch: str) -> dict[str, int]:
    names = [main_branch]
    if result.config.shipyard is not None:
        names += result.config.shipyard.stage_names
    names += sorted(set(relevant) - set(names))
    return {n: i for i, n in enumerate(dict.fromkeys(names))}


def _history_records(
    out: _Records,
    changes: UpstreamChanges,
    records: UpstreamRecords,
    served: Mapping[str, str],
    relevant: set[str],
    order: Mapping[str, int],
) -> None:
    """Branches deleted upstream, and histories rewritten."""
    for change in sorted(changes.branches, key=lambda c: order.get(c.branch, len(order))):
        if change.branch not in relevant:
            continue
        if change.deleted and change.branch not in records.deleted:
            out.add(
                BRANCH_DELETED,
                change.branch,
                change.old or "",
                {
                    "message": f"branch {change.branch!r} was deleted upstream; still serving "
                    f"{(served.get(change.branch) or 'nothing')[:12]}",
                    "serving": served.get(change.branch),
                },
            )
        elif change.forced and change.old and change.new:
            out.add(
                FORCE_PUSHED,
                change.branch,
                change.new,
                {
                    "previous": change.old,
                    "message": f"history of {change.branch!r} was rewritten "
                    f"({change.old[:12]} is no longer an ancestor of {change.new[:12]}); the old commits stay readable",
                },
                change.old,
            )


def _verdicts(
    out: _Records,
    changes: UpstreamChanges,
    records: UpstreamRecords,
    served: Mapping[str, str],
    pins: Mapping[str, str],
    blame: Mapping[str, list[Problem]],
    result: ValidationResult,
    branches: Sequence[str],
    *,
    deploy_on_commit: bool,
) -> tuple[list[tuple[str, str, tuple[Problem, ...]]], list[Problem]]:
    """Each moved branch's commit accepted (after its commit-to-deploy triggers) or rejected."""
    rejected: list[tuple[str, str, tuple[Problem, ...]]] = []
    deploy_problems: list[Problem] = []
    for branch in branches:
        tip = changes.tips.get(branch)
        if tip is None:
            continue
        seen = records.seen.get(branch)
        if branch in blame:
            rej = records.rejected.get(branch)
            if rej is not None and rej.commit == tip and seen == tip:
                continue
            problems = tuple({str(p): p for p in blame[branch]}.values())
            _rejection(out, branch, tip, seen, served, problems)
            rejected.append((branch, tip, problems))
        elif pins.get(branch) == tip and (served.get(branch) != tip or seen != tip):
            moved = changes.get(branch)
            previous = served.get(branch)
            if deploy_on_commit and branch != out.main_branch and previous:
                # before the acceptance: it marks the commit as handled, so appending these
                # one by one and crashing in between still leads to the trigger on restart
                deploy_problems += _deliveries(out, changes, result, branch, tip)
            out.add(
                ACCEPTED,
                branch,
                tip,
                {
                    "previous": previous,
                    "forced": bool(moved and moved.forced),
                    "services": sorted(moved.services) if moved is not None else [],
                    "message": f"serving {tip[:12]} on {branch!r}"
                    + (f" (was {previous[:12]})" if previous else ""),
                },
                seen or "",
            )
    return rejected, deploy_problems


def _rejection(
    out: _Records,
    branch: str,
    tip: str,
    seen: str | None,
    served: Mapping[str, str],
    problems: Sequence[Problem],
) -> None:
    shown = [p.model_dump(mode="json", exclude_none=True) for p in problems[:MAX_PROBLEMS]]
    still = f"still serving {served[branch][:12]}" if branch in served else "nothing served yet"
    first = str(problems[0]) if problems else "(none)"
    out.add(
        REJECTED,
        branch,
        tip,
        {
            "serving": served.get(branch),
            "problems": shown,
            "problemCount": len(problems),
            "message": f"commit {tip[:12]} on {branch!r} rejected: {len(problems)} problem(s); {still}. First: {first}",
        },
        seen or "",
    )


def _deliveries(
    out: _Records, changes: UpstreamChanges, result: ValidationResult, stage: str, tip: str
) -> list[Problem]:
    """Delivery triggers for the values files changed between the served and the accepted commit
    (the range the poll observed, `changes.since_served`)."""
    shipyard = result.config.shipyard
    stage_def = shipyard.stage(stage) if shipyard is not None else None
    change = changes.since_served.get(stage)
    if stage_def is None or stage_def.sequence(deploytrigger.DELIVERY) is None or change is None:
        return []
    events, problems = deploytrigger.delivery_triggers(
        change.commits,
        project=out.project,
        stage=stage,
        read=lambda commit, path: changes.values.get(f"{commit}:{path}"),
        changed=change.paths,
        tip=tip if change.commits_truncated else None,
        now=changes.polled_at,
    )
    out.events.extend(events)
    return problems
