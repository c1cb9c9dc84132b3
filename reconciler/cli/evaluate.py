"""`reconciler evaluate` and `reconciler sli render`: the quality gate on plain files.

`evaluate` runs exactly the scoring the evaluation executor runs, on an SLO file,
an SLI provider's answer and earlier evaluations, so a gate can be tried (or
reproduced from the ledger) without Prometheus or a running reconciler. Its JSON
output is a published contract: keys never change. A failing gate exits 0 (the
verdict is in the output); so does an evaluation that errors on unusable input,
with `status: errored` and a message naming the file and field. Only missing
files and bad options exit non-zero (2, click's usage error).

`sli render` prints the exact PromQL an SLI would run, built-in queries included.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import TypeAdapter, ValidationError

from reconciler.core.scoring import Evaluation, IndicatorResult, PreviousEvaluation, SLIAnswer
from reconciler.core.scoring import evaluate as score
from reconciler.core.sliquery import QueryContext, QueryError, deployment_of, render_query
from reconciler.formats.gotime import TimestampError, go_float, parse_time_arg
from reconciler.formats.problems import ConfigError
from reconciler.formats.sli import load_sli
from reconciler.formats.slo import load_slo

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
MAX_INPUT_BYTES = 16 * 1024 * 1024


def _validation_text(file: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "required field is missing" if err["type"] == "missing" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return f"{file}: " + "; ".join(parts)


class _InputError(Exception):
    pass


def _read_json(file: Path, what: str) -> Any:
    data = file.read_bytes()
    if len(data) > MAX_INPUT_BYTES:
        raise _InputError(f"{file}: larger than {MAX_INPUT_BYTES} bytes; expected {what}")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _InputError(f"{file}: not valid JSON ({exc}); expected {what}") from None


def _answer(file: Path) -> SLIAnswer:
    raw = _read_json(file, "the SLI provider's answer as a JSON object")
    if not isinstance(raw, dict):
        raise _InputError(f"{file}: expected a JSON object with result, status, indicator_values")
    try:
        return SLIAnswer.model_validate(raw)
    except ValidationError as exc:
        raise _InputError(_validation_text(file, exc)) from None


def _previous(file: Path | None) -> list[PreviousEvaluation]:
    if file is None:
        return []
    raw = _read_json(file, "a JSON list of earlier evaluations, newest first")
    if not isinstance(raw, list):
        raise _InputError(f"{file}: expected a JSON list of earlier evaluations, newest first")
    try:
        return TypeAdapter(list[PreviousEvaluation]).validate_python(raw)
    except ValidationError as exc:
        raise _InputError(_validation_text(file, exc)) from None


def _unusable(message: str) -> Evaluation:
    return Evaluation(result="fail", score=0.0, event_result="fail", status="errored", message=message)


def _targets_text(result: IndicatorResult) -> str:
    parts = []
    for label, targets in (("pass", result.pass_targets), ("warning", result.warning_targets)):
        if targets:
            shown = ", ".join(
                f"{t.criteria} ({go_float(t.target_value)}{', violated' if t.violated else ''})"
                for t in targets
            )
            parts.append(f"{label}: {shown}")
    return "; ".join(parts) or "-"


def _table(verdict: Evaluation) -> str:
    rows = [("OBJECTIVE", "VALUE", "CRITERIA", "STATUS", "SCORE")]
    for r in verdict.indicator_results or []:
        name = r.display_name or r.sli
        if r.key_sli:
            name += " (key)"
        if r.value is None:
            value = "-"
        elif r.value.success:
            value = go_float(r.value.value)
        else:
            value = f"error: {r.value.message}"
        rows.append((name, value, _targets_text(r), r.status, go_float(r.score)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]
    summary = f"result: {verdict.result} (score {go_float(verdict.score)})"
    if verdict.event_result != verdict.result or verdict.status != "succeeded":
        summary += f"; event result: {verdict.event_result}, status: {verdict.status}"
    lines += ["", summary]
    if verdict.message:
        lines.append(f"message: {verdict.message}")
    return "\n".join(lines)


@click.command("evaluate")
@click.option(
    "--slo", "slo_file", type=_FILE, required=True, help="Keptn slo.yaml (empty file: no SLO configured)"
)
@click.option("--sli", "sli_file", type=_FILE, required=True, help="SLI provider answer (JSON)")
@click.option("--previous", "previous_file", type=_FILE, help="Earlier evaluations, newest first (JSON list)")
@click.option("--project", default="", help="Project name for messages")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def evaluate(slo_file: Path, sli_file: Path, previous_file: Path | None, project: str, output: str) -> None:
    """Score SLI values against an SLO exactly as the evaluation task does."""
    verdict: Evaluation
    try:
        slo = load_slo(slo_file.read_bytes(), str(slo_file))
    except ConfigError as exc:
        verdict = _unusable(f"error retrieving SLO file: {exc}")
    else:
        try:
            verdict = score(slo, _answer(sli_file), _previous(previous_file), project=project)
        except _InputError as exc:
            verdict = _unusable(str(exc))
    if verdict.status == "errored":
        click.echo(f"error: {verdict.message}", err=True)
    if output == "json":
        click.echo(json.dumps(verdict.contract()))
    else:
        click.echo(_table(verdict))


@click.group("sli")
def sli() -> None:
    """Inspect SLI definitions (prometheus/sli.yaml)."""


def _pairs(option: str, values: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected key=value", param_hint=option)
        out.append((key, value))
    return out


def _time(option: str, text: str) -> Any:
    try:
        return parse_time_arg(text)
    except (TimestampError, ValueError, OverflowError):
        raise click.BadParameter(
            f"{text!r}: expected RFC 3339 (2024-01-01T10:00:00Z) or Unix seconds", param_hint=option
        ) from None


@sli.command("render")
@click.option("--sli", "sli_file", type=_FILE, help="prometheus/sli.yaml (without: built-in SLIs only)")
@click.option("--metric", required=True, help="SLI name")
@click.option("--project", required=True)
@click.option("--stage", required=True)
@click.option("--service", required=True)
@click.option("--start", required=True, help="RFC 3339 or Unix seconds")
@click.option("--end", required=True, help="RFC 3339 or Unix seconds")
@click.option(
    "--deployment", default="", help="$DEPLOYMENT (a 'deployment' label overrides it; default primary)"
)
@click.option("--label", "labels", multiple=True, help="k=v, for $LABEL.k")
@click.option("--filter", "filters", multiple=True, help="k=v, an SLO filter entry")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def render(
    sli_file: Path | None,
    metric: str,
    project: str,
    stage: str,
    service: str,
    start: str,
    end: str,
    deployment: str,
    labels: Sequence[str],
    filters: Sequence[str],
    output: str,
) -> None:
    """Print the PromQL an SLI runs, placeholders resolved as prometheus-service does."""
    queries: dict[str, str] = {}
    if sli_file is not None:
        try:
            queries = load_sli(sli_file.read_bytes(), str(sli_file)).indicators
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    label_map = dict(_pairs("--label", labels))
    ctx = QueryContext(
        project=project,
        stage=stage,
        service=service,
        start=_time("--start", start),
        end=_time("--end", end),
        deployment=deployment_of(deployment, label_map),
        labels=label_map,
        filters=_pairs("--filter", filters),
    )
    try:
        query = render_query(metric, queries, ctx)
    except QueryError:
        where = f"{sli_file}" if sli_file is not None else "no --sli file given"
        raise click.ClickException(
            f"SLI {metric!r} has no query ({where}) and is not a built-in SLI "
            "(throughput, error_rate, response_time_p50, response_time_p90, response_time_p95)"
        ) from None
    if output == "json":
        click.echo(json.dumps({"metric": metric, "query": query}))
    else:
        click.echo(query)
