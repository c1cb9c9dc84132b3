"""The built-in get-action task (Keptn's remediation-service, spec 5).

Reads `<service>/remediation.yaml` of the event's stage at the pinned commit, asks
`core.remediation` which action this round runs, and answers. The `action` task
itself is not ours: the job executor runs it from `job/config.yaml`, matching on
`$.data.action.action`, which the engine's payload merge fills from our
`.finished` (spec 5.4).

Every answer carries a result of its own: an inherited `result: fail` in the
trigger payload (the failed evaluation that re-triggered the remediation) is never
copied, which is what kept Keptn's loop from reaching its second action (spec 5.5).
"""

from __future__ import annotations

from reconciler.core.outcomes import Failed, Outcome, Succeeded, started_event
from reconciler.core.remediation import Selection, invalid_file, missing_file, problem_of, round_index, select
from reconciler.executors.base import TaskContext, TaskExecutor
from reconciler.formats.events import KeptnEvent, task_type
from reconciler.formats.problems import ConfigError
from reconciler.formats.remediation import load_remediation

SOURCE = "remediation-service"
TASK = "get-action"
FILE = "remediation.yaml"
REMEDIATION_UNREADABLE = "RemediationFileUnreadable"


def earlier_rounds(event: KeptnEvent, ctx: TaskContext) -> int:
    """Rounds of this context (same stage and service) that already picked an action."""
    seen: set[str] = set()
    for ev in ctx.events(type_=task_type(TASK, "finished"), context=event.shkeptncontext):
        if ev.source != SOURCE or ev.triggeredid == event.id or not ev.triggeredid:
            continue
        if ev.stage != event.stage or ev.service != event.service:
            continue
        if isinstance(ev.data.get("action"), dict):
            seen.add(ev.triggeredid)
    return len(seen)


def choose(event: KeptnEvent, ctx: TaskContext) -> Selection:
    """Read the file at the pinned commit and decide; every failure becomes a Selection with a reason."""
    path = f"{event.service}/{FILE}"
    raw = ctx.read_file(event.stage, path, event.gitcommitid or None)
    if raw is None:
        return missing_file(event.service, event.stage, path, event.gitcommitid)
    try:
        remediation = load_remediation(raw, f"{event.stage}:{path}")
    except ConfigError as exc:
        return invalid_file(str(exc))
    index = round_index(event.data, earlier_rounds(event, ctx))
    return select(remediation, problem_of(event.data), index)


class GetActionExecutor(TaskExecutor):
    """Answers `sh.keptn.event.get-action.triggered` from remediation.yaml."""

    name = SOURCE

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        return event.type == task_type(TASK, "triggered")

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        if not started:
            ctx.emit(started_event(event, SOURCE, now=ctx.now()))
        choice = choose(event, ctx)
        if choice.status == "errored":  # no readable remediation.yaml: nothing to choose from
            return Failed(REMEDIATION_UNREADABLE, choice.message, data=choice.finished_data())
        if choice.result == "pass":
            return Succeeded(result="pass", message=choice.message, data=choice.finished_data())
        return Succeeded(result="fail", message=choice.message, data=choice.finished_data())
