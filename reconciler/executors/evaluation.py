"""The evaluation task: lighthouse and its SLI provider in one executor (spec 4.1-4.11, 7).

On `evaluation.triggered` it records the same conversation Keptn's services have
(`evaluation.started`, `get-sli.triggered`, `get-sli.started`, `get-sli.finished`,
`evaluation.finished`), so Keptn tooling reading the ledger sees familiar events
and `reconciler events` alone answers "why did the gate pass or fail": every SLI
value in `get-sli.finished` and in `evaluation.finished` carries the resolved
query (`query`, our extension).

Every id derives from the evaluation.triggered id, and work already recorded is
reused on a re-run (the window of a recorded `get-sli.triggered`, the values of a
recorded `get-sli.finished`), so a restart after a crash records nothing twice
and never re-measures into a different verdict.

Inputs are pinned: `<service>/slo.yaml` and the stage and service levels of
`prometheus/sli.yaml` are read at the event's `gitcommitid`; the project level
(`prometheus/sli.yaml` on the main branch) at the main commit the reconciler
accepted (Keptn read the tip; keptn-differences J20).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from reconciler.adapters import locuststats, prometheus
from reconciler.base.logs import get_logger
from reconciler.base.redact import register_secrets
from reconciler.core.outcomes import (
    STALLED_ANSWERED,
    Failed,
    Outcome,
    PartHealth,
    Stalled,
    Succeeded,
    finished_event,
    started_event,
)
from reconciler.core.scoring import (
    Evaluation,
    PreviousEvaluation,
    SLIAnswer,
    SLIValue,
    evaluate,
    provider_result,
)
from reconciler.core.sliquery import SLIRequest
from reconciler.core.timeframe import TimeframeError, Window, resolve_window
from reconciler.executors.base import TaskContext, TaskExecutor
from reconciler.formats.events import KeptnEvent, derived_id, format_time, task_type
from reconciler.formats.problems import ConfigError
from reconciler.formats.sli import SLIConfig, load_sli
from reconciler.formats.slo import SLO, load_slo
from reconciler.settings import Settings

log = get_logger(__name__)

SOURCE = "lighthouse-service"
EVALUATION_ERRORED = "EvaluationErrored"
PROVIDER_SOURCES = {"prometheus": "prometheus-service", "locust": "locust-service"}

EVALUATION_TRIGGERED = task_type("evaluation", "triggered")
EVALUATION_FINISHED = task_type("evaluation", "finished")
EVALUATION_INVALIDATED = task_type("evaluation", "invalidated")
GET_SLI_TRIGGERED = task_type("get-sli", "triggered")
GET_SLI_FINISHED = task_type("get-sli", "finished")
SLI_FILE = "prometheus/sli.yaml"


class _CustomQueriesError(Exception):
    pass


class EvaluationExecutor(TaskExecutor):
    """Answers `sh.keptn.event.evaluation.triggered` as lighthouse-service."""

    name = SOURCE

    def claims(self, event: KeptnEvent, ctx: TaskContext) -> bool:
        return event.type == EVALUATION_TRIGGERED

    def attempt(self, event: KeptnEvent, ctx: TaskContext, *, started: bool) -> Outcome:
        if _answer(ctx, EVALUATION_FINISHED, event) is not None:
            return Stalled(STALLED_ANSWERED, "the evaluation's .finished is recorded")
        if not started:
            ctx.emit(started_event(event, self.name, now=ctx.now()))

        trigger = _recorded(ctx, GET_SLI_TRIGGERED, event.shkeptncontext, _get_sli_id(event))
        if trigger is not None:
            block = trigger.data.get("get-sli") or {}
            window = Window(start=str(block.get("start") or ""), end=str(block.get("end") or ""))
        else:
            try:
                window = resolve_window(event.data, ctx.now())
            except TimeframeError as exc:
                return _errored(event, str(exc), Window("", ""))

        slo_path = f"{event.service}/slo.yaml"
        raw = ctx.read_file(event.stage, slo_path, event.gitcommitid)
        slo: SLO | None = None
        if raw is None:
            missing = _missing_level(event, ctx)
            if missing:
                return _errored(event, f"error retrieving SLO file: {missing}", window)
        else:
            try:
                slo = load_slo(raw, slo_path)
            except ConfigError as exc:
                message = (
                    f"error retrieving SLO file: Could not parse SLO file for service {event.service} "
                    f"in stage {event.stage} in project {event.project}: {exc.with_branch(event.stage)}"
                )
                return _errored(event, message, window)

        if trigger is None:
            trigger = _get_sli_triggered(event, slo, window, ctx)
            ctx.emit(trigger)
        answer_event = _answer(ctx, GET_SLI_FINISHED, trigger)
        health: tuple[PartHealth, ...] = ()
        if answer_event is None:
            answer_event, health = self._provide(trigger, event, ctx)
        answer = _answer_of(answer_event)

        previous, compared = _previous(event, slo, ctx)
        verdict = evaluate(slo, answer, previous, project=event.project)
        log.info(
            "evaluated",
            event_type=event.type,
            context=event.shkeptncontext,
            project=event.project,
            stage=event.stage,
            service=event.service,
            result=verdict.event_result,
            score=verdict.score,
        )
        content = base64.b64encode(raw).decode() if raw else ""
        return _outcome(verdict, window, content, compared, answer_event.data.get("labels"), health)

    # ----------------------------------------------------------------------------------------

    def _provide(
        self, trigger: KeptnEvent, evaluation: KeptnEvent, ctx: TaskContext
    ) -> tuple[KeptnEvent, tuple[PartHealth, ...]]:
        """The in-process SLI provider: started, measure, finished (and how its source did)."""
        block = trigger.data.get("get-sli") or {}
        provider = str(block.get("sliProvider") or "prometheus")
        source = PROVIDER_SOURCES.get(provider, PROVIDER_SOURCES["prometheus"])
        ctx.emit(started_event(trigger, source, now=ctx.now()))
        try:
            fetched = self._measure(provider, trigger, evaluation, ctx)
        except _CustomQueriesError as exc:
            message = f"unable to retrieve custom queries for project {trigger.project}: {exc}"
            done = finished_event(
                trigger, source, result="fail", status="errored", message=message, now=ctx.now()
            )
            ctx.emit(done)
            return done, ()
        values = fetched.values
        result = provider_result(values)
        done = finished_event(
            trigger,
            source,
            result=result,
            message="unable to retrieve metrics" if result == "fail" else "",
            data={
                "get-sli": {
                    "start": block.get("start", ""),
                    "end": block.get("end", ""),
                    "indicatorValues": [v.keptn() for v in values],
                }
            },
            now=ctx.now(),
        )
        ctx.emit(done)
        return done, fetched.health

    def _measure(
        self, provider: str, trigger: KeptnEvent, evaluation: KeptnEvent, ctx: TaskContext
    ) -> prometheus.SLIFetch:
        block = trigger.data.get("get-sli") or {}
        indicators = [str(i) for i in block.get("indicators") or []]
        if provider == "locust":
            stats_dir = str(block.get(locuststats.STATS_DIR_KEY) or "")
            return prometheus.SLIFetch(
                locuststats.get_slis(indicators, stats_dir, Path(ctx.settings.data_dir))
            )
        queries = _custom_queries(evaluation, ctx)
        labels = trigger.data.get("labels") or {}
        request = SLIRequest(
            project=trigger.project,
            stage=trigger.stage,
            service=trigger.service,
            start=str(block.get("start") or ""),
            end=str(block.get("end") or ""),
            indicators=indicators,
            filters=[
                (str(f.get("key")), str(f.get("value") or "")) for f in block.get("customFilters") or []
            ],
            labels={str(k): str(v) for k, v in labels.items()},
            deployment=str(trigger.data.get("deployment") or ""),
        )
        return prometheus.fetch_slis(
            request, queries, endpoint_for(ctx.settings, trigger.project, trigger.stage)
        )


def _outcome(
    verdict: Evaluation,
    window: Window,
    slo_content: str,
    compared: Sequence[str],
    labels: Any,
    health: tuple[PartHealth, ...] = (),
) -> Outcome:
    """A scored evaluation succeeded (whatever its result); one that could not be scored failed."""
    data: dict[str, Any] = {
        "evaluation": verdict.keptn(
            time_start=window.start,
            time_end=window.end,
            slo_file_content=slo_content,
            compared_events=compared,
        )
    }
    if labels:
        data["labels"] = labels
    if verdict.status == "errored":
        return Failed(EVALUATION_ERRORED, verdict.message, data=data, health=health)
    result = verdict.event_result if verdict.event_result in ("pass", "warning") else "fail"
    return Succeeded(result=result, message=verdict.message, data=data, health=health)


def _errored(event: KeptnEvent, message: str, window: Window) -> Outcome:
    verdict = Evaluation(result="fail", event_result="fail", status="errored", message=message)
    return _outcome(verdict, window, "", (), event.data.get("labels"))


# --------------------------------------------------------------------------------------------


def _get_sli_id(evaluation: KeptnEvent) -> str:
    return derived_id(evaluation.id, SOURCE, "get-sli.triggered")


def _recorded(ctx: TaskContext, type_: str, context: str, event_id: str) -> KeptnEvent | None:
    return next((e for e in ctx.events(type_=type_, context=context) if e.id == event_id), None)


def _answer(ctx: TaskContext, type_: str, triggered: KeptnEvent) -> KeptnEvent | None:
    return next(
        (
            e
            for e in ctx.events(type_=type_, context=triggered.shkeptncontext)
            if e.triggeredid == triggered.id
        ),
        None,
    )


def _missing_level(event: KeptnEvent, ctx: TaskContext) -> str:
    """Keptn's "not found" errors; an existing service without slo.yaml is "no SLO", not an error."""
    if not ctx.list_files(event.stage, "", event.gitcommitid):
        return f"stage {event.stage} not found"
    if not ctx.list_files(event.stage, event.service, event.gitcommitid):
        return f"service {event.service} not found"
    return ""


def _get_sli_triggered(
    evaluation: KeptnEvent, slo: SLO | None, window: Window, ctx: TaskContext
) -> KeptnEvent:
    """lighthouse's request to the SLI provider (spec 4.4): same context, no triggeredid."""
    block: dict[str, Any] = {
        "sliProvider": slo.sli_provider if slo is not None else "prometheus",
        "start": window.start,
        "end": window.end,
    }
    indicators = [o.sli for o in slo.objectives] if slo is not None else []
    if indicators:
        block["indicators"] = indicators
    if slo is not None and slo.filter:
        block["customFilters"] = [{"key": k, "value": v} for k, v in slo.filter.items()]
    if block["sliProvider"] == "locust":
        test = evaluation.data.get("test")
        stats_dir = test.get(locuststats.STATS_DIR_KEY) if isinstance(test, dict) else None
        if isinstance(stats_dir, str) and stats_dir:
            block[locuststats.STATS_DIR_KEY] = stats_dir
    data: dict[str, Any] = {
        "project": evaluation.project,
        "stage": evaluation.stage,
        "service": evaluation.service,
    }
    if evaluation.data.get("labels"):
        data["labels"] = evaluation.data["labels"]
    data["get-sli"] = block
    data["deployment"] = _first_deployment_name(evaluation.data)
    return KeptnEvent(
        id=_get_sli_id(evaluation),
        source=SOURCE,
        type=GET_SLI_TRIGGERED,
        shkeptncontext=evaluation.shkeptncontext,
        gitcommitid=evaluation.gitcommitid,
        time=format_time(ctx.now()),
        data=data,
    )


def _first_deployment_name(data: dict[str, Any]) -> str:
    deployment = data.get("deployment")
    names = deployment.get("deploymentNames") if isinstance(deployment, dict) else None
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return ""


def _custom_queries(evaluation: KeptnEvent, ctx: TaskContext) -> dict[str, str]:
    """prometheus/sli.yaml merged project -> stage -> service (spec 7.2)."""
    levels = [
        (ctx.settings.main_branch, SLI_FILE, None),
        (evaluation.stage, SLI_FILE, evaluation.gitcommitid),
        (evaluation.stage, f"{evaluation.service}/{SLI_FILE}", evaluation.gitcommitid),
    ]
    merged: dict[str, str] = {}
    for branch, path, commit in levels:
        raw = ctx.read_file(branch, path, commit)
        if raw is None:
            continue
        try:
            config: SLIConfig = load_sli(raw, path)
        except ConfigError as exc:
            raise _CustomQueriesError(str(exc.with_branch(branch))) from None
        merged.update(config.indicators)
        if not merged:
            raise _CustomQueriesError(f"{branch}:{path}: missing required field: indicators")
    return merged


def _answer_of(event: KeptnEvent) -> SLIAnswer:
    block = event.data.get("get-sli") if isinstance(event.data.get("get-sli"), dict) else {}
    assert isinstance(block, dict)
    values = []
    for item in block.get("indicatorValues") or []:
        try:
            values.append(SLIValue.model_validate(item))
        except ValueError:
            continue
    result = event.result if event.result in ("pass", "warning", "fail") else "fail"
    status = event.status if event.status in ("succeeded", "errored", "aborted") else "succeeded"
    return SLIAnswer.model_validate(
        {
            "result": result,
            "status": status,
            "message": event.data.get("message") or "",
            "indicatorValues": values,
        }
    )


@runtime_checkable
class _ServiceHistory(Protocol):
    """A context that can narrow a type's events to one service before decoding them (the app's)."""

    def events_of_service(
        self, type_: str, *, project: str, stage: str, service: str
    ) -> Sequence[KeptnEvent]: ...


def _finished_evaluations(evaluation: KeptnEvent, ctx: TaskContext) -> Sequence[KeptnEvent]:
    """evaluation.finished events, narrowed to the evaluated service where the context can:
    at 100,000 ledger events there are thousands, and decoding them all took a second."""
    if isinstance(ctx, _ServiceHistory):
        return ctx.events_of_service(
            EVALUATION_FINISHED,
            project=evaluation.project,
            stage=evaluation.stage,
            service=evaluation.service,
        )
    return ctx.events(type_=EVALUATION_FINISHED)


def _previous(
    evaluation: KeptnEvent, slo: SLO | None, ctx: TaskContext
) -> tuple[list[PreviousEvaluation], list[str]]:
    """Earlier evaluations of the same project/stage/service, newest first (spec 4.5)."""
    if slo is None:
        return [], []
    comparison = slo.effective_comparison
    wanted = max(comparison.requested, 0)
    include = comparison.include_result_with_score.lower()
    accepted = {"pass": ("pass",), "pass_or_warn": ("pass", "warning")}.get(include)
    invalidated = {e.triggeredid for e in ctx.events(type_=EVALUATION_INVALIDATED) if e.triggeredid}
    candidates = [
        e
        for e in _finished_evaluations(evaluation, ctx)
        if e.project == evaluation.project
        and e.stage == evaluation.stage
        and e.service == evaluation.service
        and e.triggeredid != evaluation.id
        and e.triggeredid not in invalidated
        and (accepted is None or e.result in accepted)
    ]
    ordered = [
        e for _, e in sorted(enumerate(candidates), key=lambda p: (p[1].timestamp, p[0]), reverse=True)
    ]
    chosen = ordered[:wanted]
    return [PreviousEvaluation.from_keptn(e.id, e.data) for e in chosen], [e.id for e in chosen]


def endpoint_for(settings: Settings, project: str, stage: str) -> prometheus.PrometheusEndpoint:
    """`prometheus_urls["project/stage"]`, else `["project"]`, else `prometheus_url`."""
    urls = settings.prometheus_urls
    url = urls.get(f"{project}/{stage}") or urls.get(project) or settings.prometheus_url
    password = settings.secret("prometheus_password")
    token = settings.secret("prometheus_token")
    register_secrets([password, token])
    return prometheus.PrometheusEndpoint(
        url=url.rstrip("/"),
        username=settings.prometheus_user or None,
        password=password,
        token=token,
        timeout=settings.prometheus_timeout,
    )
