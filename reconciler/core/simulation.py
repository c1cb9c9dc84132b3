"""Dry-run a shipyard: the real engine, a simulated clock, and scripted task answers.

`reconciler simulate` answers "what will this shipyard change do?" before it is
merged. It drives `reconciler.core.planning.decide` — the very engine the running
reconciler uses, not a model of it — and replaces only the world around it: the
clock moves only when everything is waiting (a `triggeredAfter` delay, a deadline),
and each dispatched task is answered from an outcomes script instead of by
executors. Approvals are answered by the approval-service's own decision logic
(`core.approval`) when the shipyard makes them automatic, and by a script entry when
a person would decide.

Pure: a parsed shipyard, an outcomes script and a policy in, a result out; no files,
no wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from reconciler.core.approval import SOURCE as APPROVAL_SOURCE
from reconciler.core.approval import decision, strategy
from reconciler.core.engine import decide
from reconciler.core.engine_state import (
    CONTROLLER,
    REASON_LOOP_LIMIT,
    REASON_START_FAILED,
    TIMEOUT_REASONS,
    EngineState,
    Execution,
    TaskRun,
)
from reconciler.core.outcomes import finished_event, started_event
from reconciler.core.planning import Plan, Policy
from reconciler.core.triggers import matching_triggers
from reconciler.formats.events import KeptnEvent, derived_id, format_time, sequence_type
from reconciler.formats.problems import ConfigError, Problem, field_path
from reconciler.formats.shipyard import Sequence, Shipyard
from reconciler.formats.yamldoc import YamlDoc, load_yaml, problems_from_validation

SIMULATION_START = datetime(2024, 1, 1, tzinfo=UTC)
"""A fixed start so the same inputs always print the same timeline (diffable in CI)."""

TRIGGER_SOURCE = "reconciler-simulate"
DEFAULT_PROJECT = "simulation"
DEFAULT_SERVICE = "service"
MAX_STEPS = 10_000
"""Answers plus clock jumps per simulation; the engine's own loop cap ends real loops long before."""

DEFAULT_SOURCES = {
    "approval": "reconciler-cli",  # a manual approval is a person's answer
    "evaluation": "lighthouse-service",
    "get-action": "remediation-service",
}
JOB_SOURCE = "job-executor-service"
_RESERVED_DATA = ("project", "stage", "service", "status", "result", "message")


def default_source(task: str) -> str:
    """Keptn's service names, so a simulated timeline reads like a real one."""
    return DEFAULT_SOURCES.get(task, JOB_SOURCE)


# --------------------------------------------------------------------------------------------
# The outcomes script
# --------------------------------------------------------------------------------------------


class Answer(BaseModel):
    """One executor's `.finished`. Defaults follow the go-utils SDK: no result means pass."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, min_length=1, max_length=256)
    result: Literal["pass", "warning", "fail", ""] = "pass"
    status: Literal["succeeded", "errored", "aborted", "unknown", ""] = "succeeded"
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_envelope_keys(self) -> Answer:
        bad = [k for k in _RESERVED_DATA if k in self.data]
        if bad:
            raise ValueError(
                f"data may not set {', '.join(bad)}: the engine sets project/stage/service, and "
                "result/status/message are fields of the answer itself"
            )
        return self


class Outcome(BaseModel):
    """How the executors of one dispatched task answer."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    started_by: int = Field(default=1, ge=0, le=100)
    finished: list[Answer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _counts(self) -> Outcome:
        if self.task == "approval":
            if len(self.finished) > 1:
                raise ValueError(
                    f"a manual approval takes one decision; found {len(self.finished)} finished answers"
                )
            return self
        if len(self.finished) > self.started_by:
            raise ValueError(
                f"{len(self.finished)} finished answers but started_by is {self.started_by}: "
                f"every executor that finishes must have started; set started_by: {len(self.finished)}"
            )
        return self


_OUTCOMES = TypeAdapter(list[Outcome])


@dataclass(frozen=True)
class OutcomeScript:
    """The parsed outcomes file, remembering where each entry was written."""

    file: str
    entries: list[Outcome]
    doc: YamlDoc | None = None

    def problem(self, index: int, name: str, message: str) -> Problem:
        loc: tuple[str | int, ...] = (index, name)
        if self.doc is not None:
            return self.doc.problem(loc, message)
        return Problem(file=self.file, field=field_path(loc), message=message)


def load_outcomes(data: bytes | str, file: str = "outcomes.yaml") -> OutcomeScript:
    """Parse an outcomes file (a YAML list of entries); problems name the entry and line."""
    doc = load_yaml(data, file)
    if doc.value is None:
        raise ConfigError(
            [
                Problem(
                    file=file, message="file is empty; expected a list of outcome entries (use [] for none)"
                )
            ]
        )
    if not isinstance(doc.value, list):
        raise ConfigError(
            [
                doc.problem(
                    (),
                    f"expected a list of outcome entries ('- task: <name>'), found {type(doc.value).__name__}",
                )
            ]
        )
    try:
        entries = _OUTCOMES.validate_python(doc.value)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(doc, exc)) from None
    return OutcomeScript(file=file, entries=entries, doc=doc)


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One event the engine received or emitted, at simulated time `at`."""

    event: KeptnEvent
    at: datetime
    received: bool


@dataclass(frozen=True)
class Note:
    """Something a reader of the timeline should not miss (timeouts, the loop cap, ...)."""

    kind: str  # timeout | iteration-limit | start-failed | approval | unused-outcomes
    message: str
    after: int  # index into the timeline
    stage: str = ""
    sequence: str = ""
    task: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "message": self.message}
        for key in ("stage", "sequence", "task"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass
class SimulationResult:
    project: str
    service: str
    stage: str
    sequence: str
    start: datetime
    steps: list[Step] = field(default_factory=list)
    sequences: list[dict[str, str]] = field(default_factory=list)
    waiting_for: dict[str, str] | None = None
    notes: list[Note] = field(default_factory=list)
    outcomes_used: int = 0

    @property
    def events(self) -> list[str]:
        return [s.event.type for s in self.steps]

    def summary(self) -> dict[str, Any]:
        """The `--output json` document."""
        return {
            "project": self.project,
            "service": self.service,
            "trigger": {"stage": self.stage, "sequence": self.sequence},
            "events": self.events,
            "sequences": self.sequences,
            "waiting_for": self.waiting_for,
            "notes": [n.as_dict() for n in self.notes],
            "outcomes_used": self.outcomes_used,
        }


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------


@dataclass
class _StaticConfig:
    """The engine's view of an upstream that holds only this shipyard (no commits to pin)."""

    shipyard_doc: Shipyard
    project: str

    def shipyard(self, commit: str | None = None) -> Shipyard | None:
        return self.shipyard_doc

    def main_commit(self) -> str | None:
        return None

    def stage_head(self, stage: str) -> str | None:
        return None


def project_name(shipyard: Shipyard, given: str | None) -> str:
    """`--project`, else the shipyard's `metadata.name`, else `simulation`."""
    return given or shipyard.project or DEFAULT_PROJECT


def find_sequence(shipyard: Shipyard, stage: str, sequence: str, *, file: str, option: str) -> Sequence:
    """The sequence `stage.sequence` names, or a ConfigError saying what exists."""
    st = shipyard.stage(stage)
    if st is None:
        raise ConfigError(
            [
                Problem(
                    file=file,
                    field="spec.stages",
                    message=f"{option} {stage}.{sequence}: no stage named {stage!r}; "
                    f"stages are {', '.join(shipyard.stage_names) or '(none)'}",
                )
            ]
        )
    seq = st.sequence(sequence)
    if seq is None:
        names = [s.name for s in st.sequences]
        if "evaluation" not in names:
            names.append("evaluation (built in)")
        index = shipyard.stage_names.index(stage)
        raise ConfigError(
            [
                Problem(
                    file=file,
                    field=f"spec.stages[{index}].sequences",
                    message=f"{option} {stage}.{sequence}: stage {stage!r} has no sequence named "
                    f"{sequence!r}; its sequences are {', '.join(names)}",
                )
            ]
        )
    return seq


class _Simulation:
    def __init__(
        self,
        shipyard: Shipyard,
        stage: str,
        sequence: str,
        outcomes: OutcomeScript,
        *,
        service: str,
        project: str,
        policy: Policy,
        start: datetime,
    ) -> None:
        self.config = _StaticConfig(shipyard, project)
        self.outcomes = outcomes
        self.policy = policy
        self.now = start
        self.state = EngineState()
        self.result = SimulationResult(project, service, stage, sequence, start)
        self.position: dict[str, int] = {}  # task triggered id -> timeline index (dispatch order)
        self.owner: dict[str, Execution] = {}  # task triggered id -> its execution
        self.handled: set[str] = set()
        self.next_entry = 0
        self.auto_approved: list[tuple[int, Execution]] = []  # (timeline index, execution)
        self.trigger = KeptnEvent(
            id=derived_id("simulate", project, stage, sequence, service),
            source=TRIGGER_SOURCE,
            type=sequence_type(stage, sequence, "triggered"),
            time=format_time(start),
            shkeptncontext=derived_id("simulate-context", project, stage, sequence, service),
            data={"project": project, "stage": stage, "service": service},
        )

    # -- recording -------------------------------------------------------------------------

    def deliver(self, event: KeptnEvent | None) -> None:
        """Hand one event to the engine (or only let time pass) and record what it emits."""
        if event is not None:
            self._record(event, received=True)
        self._record_plan(decide(self.state, self.config, event, self.now, self.policy))

    def _record_plan(self, plan: Plan) -> None:
        for ev in plan.events:
            self._record(ev, received=False)
            self._note(ev)

    def _record(self, event: KeptnEvent, *, received: bool) -> None:
        self.result.steps.append(Step(event, self.now, received))
        etype = event.etype
        if etype is not None and etype.is_task and etype.kind == "triggered" and event.source == CONTROLLER:
            seq_id = str(getattr(event, "sequencetriggeredid", "") or "")
            ex = self.state.executions.get(seq_id)
            if ex is not None:
                self.position[event.id] = len(self.result.steps) - 1
                self.owner[event.id] = ex

    def _add_note(
        self,
        kind: str,
        message: str,
        stage: str = "",
        sequence: str = "",
        task: str = "",
        *,
        after: int | None = None,
    ) -> None:
        at = len(self.result.steps) - 1 if after is None else after
        self.result.notes.append(Note(kind, message, at, stage, sequence, task))

    def _note(self, event: KeptnEvent) -> None:
        etype = event.etype
        meta = event.data.get("reconciler")
        reason = str(meta.get("reason") or "") if isinstance(meta, dict) else ""
        if etype is None or not reason:
            return
        message = str(event.data.get("message") or "")
        if etype.is_task and etype.kind == "finished" and reason in TIMEOUT_REASONS:
            ex = self.owner.get(event.triggeredid or "")
            self._add_note(
                "timeout",
                message,
                ex.stage if ex else event.stage,
                ex.sequence if ex else "",
                etype.task or "",
            )
        elif etype.is_sequence and etype.kind == "finished" and reason == REASON_LOOP_LIMIT:
            self._add_note("iteration-limit", message, etype.stage or "", etype.sequence or "")
        elif etype.is_sequence and etype.kind == "finished" and reason == REASON_START_FAILED:
            self._add_note("start-failed", message, etype.stage or "", etype.sequence or "")

    # -- answering tasks -----------------------------------------------------------------------

    def _unanswered(self) -> list[tuple[Execution, TaskRun]]:
        open_tasks = [
            (ex, run) for ex, run in self.state.open_tasks() if run.triggered.id not in self.handled
        ]
        return sorted(open_tasks, key=lambda pair: self.position.get(pair[1].triggered.id, 0))

    def _answer_event(self, event: KeptnEvent, *parts: str) -> KeptnEvent:
        """Stamp an answer with simulated time and an id unique within the script."""
        return event.model_copy(
            update={
                "id": derived_id(event.triggeredid or "", "simulate", *parts),
                "time": format_time(self.now),
            }
        )

    def _take(self, ex: Execution, run: TaskRun) -> tuple[int, Outcome] | None:
        entries = self.outcomes.entries
        if self.next_entry >= len(entries):
            return None
        index = self.next_entry
        entry = entries[index]
        if entry.task != run.name:
            hint = ""
            if run.name == "approval":
                result, strat = strategy(run.triggered.data)
                hint = (
                    f"; this approval is manual (strategy for result '{result or '(none)'}' is {strat}): "
                    "answer it with an entry '- task: approval' (finished: [] leaves it pending)"
                )
            elif entry.task == "approval" and self.auto_approved:
                _, approved = self.auto_approved[-1]
                hint = (
                    f"; the approval in {approved.stage}.{approved.sequence} was answered automatically "
                    "(its shipyard properties say automatic), so it takes no entry"
                )
            raise ConfigError(
                [
                    self.outcomes.problem(
                        index,
                        "task",
                        f"outcome entry [{index}] is for task {entry.task!r}, but the engine dispatches task "
                        f"{run.name!r} next (stage {ex.stage}, sequence {ex.sequence}){hint}",
                    )
                ]
            )
        self.next_entry += 1
        self.result.outcomes_used = self.next_entry
        return index, entry

    def answer(self, ex: Execution, run: TaskRun) -> bool:
        """Answer one dispatched task; False when the script has no entry left for it."""
        self.handled.add(run.triggered.id)
        if run.name == "approval":
            return self._approval(ex, run)
        taken = self._take(ex, run)
        if taken is None:
            return False
        index, entry = taken
        default = default_source(run.name)
        sources = [a.source or default for a in entry.finished]
        for i in range(len(sources), entry.started_by):
            sources.append(default if i == 0 else f"{default}-{i + 1}")
        triggered = run.triggered
        for i in range(entry.started_by):
            self.deliver(
                self._answer_event(
                    started_event(triggered, sources[i], now=self.now), str(index), "started", str(i)
                )
            )
        for i, ans in enumerate(entry.finished):
            ev = finished_event(
                triggered,
                sources[i],
                result=ans.result,
                status=ans.status,
                message=ans.message,
                data=ans.data,
                now=self.now,
            )
            self.deliver(self._answer_event(ev, str(index), "finished", str(i)))
        return True

    def _approval(self, ex: Execution, run: TaskRun) -> bool:
        """The approval-service's logic decides; a manual approval takes the next script entry."""
        triggered = run.triggered
        result, strat = strategy(triggered.data)
        started = started_event(
            triggered,
            APPROVAL_SOURCE,
            {"message": f"Approval strategy for result '{result}': {strat}"},
            now=self.now,
        )
        self.deliver(started.model_copy(update={"time": format_time(self.now)}))
        verdict = decision(triggered.data)
        if verdict is not None:
            finished = finished_event(
                triggered, APPROVAL_SOURCE, result=verdict, status="succeeded", now=self.now
            )
            at = len(self.result.steps)
            self.deliver(finished.model_copy(update={"time": format_time(self.now)}))
            self.auto_approved.append((at, ex))
            self._add_note(
                "approval",
                f"answered automatically: strategy for result '{result or '(none)'}' is {strat} -> {verdict}",
                ex.stage,
                ex.sequence,
                "approval",
                after=at,
            )
            return True
        taken = self._take(ex, run)
        if taken is None:
            return False
        index, entry = taken
        for ans in entry.finished:
            ev = finished_event(
                triggered,
                ans.source or default_source("approval"),
                result=ans.result,
                status=ans.status,
                message=ans.message,
                data=ans.data,
                now=self.now,
            )
            self.deliver(self._answer_event(ev, str(index), "finished", "0"))
        return True

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        self.deliver(self.trigger)
        for _ in range(MAX_STEPS):
            pending = self._unanswered()
            if pending:
                if not self.answer(*pending[0]):
                    break  # the script ran out: stop where the engine waits
                continue
            # Every executor has said what it will say: let simulated time pass to the
            # engine's next deadline or delay, if it has one.
            step = decide(self.state, self.config, None, self.now, self.policy)
            self._record_plan(step)
            if step.events:
                continue
            if step.wake_at is None or step.wake_at <= self.now:
                break
            self.now = step.wake_at
        else:
            raise RuntimeError(f"simulation did not settle within {MAX_STEPS} steps")
        return self._finish()

    def _finish(self) -> SimulationResult:
        res = self.result
        res.sequences = [
            {
                "stage": ex.stage,
                "sequence": ex.sequence,
                "service": ex.service,
                "state": ex.display_state,
                "result": ex.result,
                "status": ex.status,
            }
            for ex in (self.state.executions[t] for t in self.state.order)
        ]
        open_tasks = sorted(
            self.state.open_tasks(), key=lambda pair: self.position.get(pair[1].triggered.id, 0)
        )
        if open_tasks:
            ex, run = open_tasks[0]
            res.waiting_for = {"stage": ex.stage, "sequence": ex.sequence, "task": run.name}
        left = len(self.outcomes.entries) - self.next_entry
        if left > 0 and not open_tasks:
            first = self.outcomes.entries[self.next_entry]
            self._add_note(
                "unused-outcomes",
                f"{left} outcome entr{'y' if left == 1 else 'ies'} not used (from entry [{self.next_entry}], "
                f"task {first.task!r}): the engine dispatched no further task",
            )
        return res


def simulate(
    shipyard: Shipyard,
    stage: str,
    sequence: str,
    outcomes: OutcomeScript,
    *,
    service: str = DEFAULT_SERVICE,
    project: str | None = None,
    policy: Policy | None = None,
    shipyard_file: str = "shipyard.yaml",
    start: datetime = SIMULATION_START,
) -> SimulationResult:
    """Trigger `stage.sequence` and run the engine until it finishes or waits for an answer.

    Raises `ConfigError` for a trigger the shipyard does not define and for a script
    entry that does not match the task the engine dispatches (both located).
    """
    find_sequence(shipyard, stage, sequence, file=shipyard_file, option="--trigger")
    name = project_name(shipyard, project)
    policy = policy or Policy()
    sim = _Simulation(
        shipyard, stage, sequence, outcomes, service=service, project=name, policy=policy, start=start
    )
    return sim.run()


def next_sequences(
    shipyard: Shipyard,
    stage: str,
    sequence: str,
    result: str,
    last_task: str | None = None,
    *,
    shipyard_file: str = "shipyard.yaml",
) -> list[dict[str, str]]:
    """The sequences a finished `stage.sequence` triggers (spec 2.7), as `{stage, sequence}`.

    `last_task` defaults to the sequence's last task: the one that ran last whenever
    the sequence did not stop early on a failure.
    """
    seq = find_sequence(shipyard, stage, sequence, file=shipyard_file, option="--finished")
    names = [t.name for t in seq.tasks]
    if last_task is None:
        last_task = names[-1] if names else ""
    elif last_task not in names:
        raise ConfigError(
            [
                Problem(
                    file=shipyard_file,
                    field="spec.stages",
                    message=f"--last-task {last_task}: sequence {stage}.{sequence} has no task named "
                    f"{last_task!r}; its tasks are {', '.join(names) or '(none)'}",
                )
            ]
        )
    return [
        {"stage": s, "sequence": q}
        for s, q in matching_triggers(shipyard, stage, sequence, result, last_task)
    ]


def offset(delta: timedelta) -> str:
    """Simulated time since the trigger, Go-duration style (`+0s`, `+10m`, `+2h5m`)."""
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return "+" + (text or "0s")
