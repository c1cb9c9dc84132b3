"""Which remediation action to run next for a problem (Keptn's get-action, spec 5.3 and 5.5).

Pure: the caller reads `<service>/remediation.yaml` and the ledger; this module
only decides. The outcome carries everything the `get-action.finished` event needs
(result, status, message, `action`, the next `actionIndex`), so the executor is a
thin shell and every branch here is unit-testable.

Escalation: round k of a remediation (the k-th `remediation` sequence of one
context) runs action k. The round number is the larger of two independent facts:
the `get-action.actionIndex` carried forward in the payload (Keptn's mechanism,
which our merge keeps intact because newer numbers overwrite older ones) and the
number of earlier rounds of the same context recorded in the ledger. Either alone
would do; taking the larger keeps escalating when one of them is lost (a
hand-written trigger without the index, a payload merged by Keptn's sticky-number
rule, a compacted history) and still honours an index a user sets on purpose.

May import: stdlib and `reconciler.formats`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.formats.remediation import Action, Remediation, RemediationEntry

DEFAULT_PROBLEM_TYPE = "default"


@dataclass(frozen=True)
class ProblemKey:
    """The two strings remediation.yaml is matched against (Keptn decodes them case-insensitively)."""

    title: str = ""
    root_cause: str = ""

    def describe(self) -> str:
        """How Keptn names the problem in its messages (spec 5.3 step 4)."""
        if self.root_cause:
            return f"root cause {self.root_cause}"
        if self.title:
            return f"problem title {self.title}"
        return f"problem type {DEFAULT_PROBLEM_TYPE}"


@dataclass(frozen=True)
class Selection:
    """What get-action answers: an action to run, or why there is none."""

    result: str
    status: str
    message: str
    action: Action | None = None
    index: int = 0
    """0-based position of `action` in its list (the round this is)."""
    problem_type: str = ""

    @property
    def next_index(self) -> int:
        """What `get-action.actionIndex` says after this round (Keptn: i + 1)."""
        return self.index + 1

    def finished_data(self) -> dict[str, Any]:
        """Task payload of `get-action.finished` (only on success, like Keptn)."""
        if self.action is None:
            return {}
        return {
            "action": self.action.payload(),
            "get-action": {"actionIndex": self.next_index, "problemType": self.problem_type},
            # The engine replaces `action` instead of merging it into the previous round's,
            # which would leave that round's `value`/`description` on this round's action.
            "reconciler": {"replace": ["action"]},
        }


def _lookup(obj: Mapping[str, Any], name: str) -> Any:
    """Case-insensitive key lookup, as Go's JSON decoder does for struct fields."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def problem_of(data: Mapping[str, Any]) -> ProblemKey:
    """`problem.problemTitle` / `problem.rootCause` of a payload; the alert spelling `ProblemTitle` works too."""
    problem = _lookup(data, "problem")
    if not isinstance(problem, Mapping):
        return ProblemKey()
    title = _lookup(problem, "problemTitle")
    cause = _lookup(problem, "rootCause")
    return ProblemKey(
        title=title if isinstance(title, str) else "",
        root_cause=cause if isinstance(cause, str) else "",
    )


def carried_index(data: Mapping[str, Any]) -> int:
    """`data["get-action"].actionIndex`, 0 when absent or not a non-negative integer."""
    block = _lookup(data, "get-action")
    if not isinstance(block, Mapping):
        return 0
    value = _lookup(block, "actionIndex")
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def round_index(data: Mapping[str, Any], earlier_rounds: int) -> int:
    """The action index for this round: see the module docstring for why the larger wins."""
    return max(carried_index(data), max(earlier_rounds, 0))


def find_entry(remediation: Remediation, problem: ProblemKey) -> RemediationEntry | None:
    """rootCause, then problemTitle, then `default`; first entry in file order with a list (spec 5.3)."""
    entries = [e for e in remediation.spec.remediations if e.actions_on_open is not None]
    for wanted in (problem.root_cause, problem.title, DEFAULT_PROBLEM_TYPE):
        for entry in entries:
            if entry.problem_type == wanted:  # an empty rootCause matches an untyped entry, as in Keptn
                return entry
    return None


def select(remediation: Remediation, problem: ProblemKey, index: int) -> Selection:
    """The action for round `index` (0-based), or a `fail` saying why there is none."""
    entry = find_entry(remediation, problem)
    if entry is None:
        return Selection(
            result="fail",
            status="succeeded",
            message=(
                f"unable to find action for {problem.describe()}: remediation.yaml has no problemType "
                f"{_wanted(problem)} and no {DEFAULT_PROBLEM_TYPE!r} entry"
            ),
            index=index,
        )
    actions = entry.actions_on_open or []
    if index >= len(actions):
        return Selection(
            result="fail",
            status="succeeded",
            message=(
                f"there is no action with index {index} for {problem.describe()}: all {len(actions)} "
                f"action(s) of problemType {entry.problem_type!r} were tried; remediation ends here"
            ),
            index=index,
            problem_type=entry.problem_type,
        )
    action = actions[index]
    return Selection(
        result="pass",
        status="succeeded",
        message=(
            f"action {index + 1} of {len(actions)} for {problem.describe()} "
            f"(problemType {entry.problem_type!r}): {action.action}"
            + (f" ({action.name})" if action.name else "")
        ),
        action=action,
        index=index,
        problem_type=entry.problem_type,
    )


def _wanted(problem: ProblemKey) -> str:
    names = [repr(n) for n in (problem.root_cause, problem.title) if n]
    return " or ".join(names) if names else "(the problem has neither rootCause nor problemTitle)"


def missing_file(service: str, stage: str, path: str, commit: str | None) -> Selection:
    """No remediation.yaml: an errored `fail`, as Keptn (with the path and commit we looked at)."""
    at = f" at commit {commit[:12]}" if commit else ""
    return Selection(
        result="fail",
        status="errored",
        message=(
            f"Could not get remediation.yaml file for services {service} in stage {stage}: "
            f"{path} does not exist on branch {stage}{at}"
        ),
    )


def invalid_file(detail: str) -> Selection:
    """remediation.yaml that does not parse: an errored `fail` naming the problem."""
    return Selection(
        result="fail",
        status="errored",
        message=(
            "Could not parse remediation.yaml file. Please validate it against the specification. " + detail
        ),
    )
