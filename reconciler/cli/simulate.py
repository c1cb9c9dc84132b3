"""`reconciler simulate`: what a shipyard change will do, before it is merged.

The shell around `reconciler.core.simulation`: read the files, build the engine policy
from the same settings the running reconciler uses (so deadlines and the loop cap
match), print a timeline or JSON. Bad input exits 2 with located problems.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from reconciler.cli.common import echo_json, make_settings, output_option
from reconciler.core.engine_state import CONTROLLER
from reconciler.core.simulation import SimulationResult, load_outcomes, next_sequences, offset, project_name
from reconciler.core.simulation import simulate as run_simulation
from reconciler.formats.events import KEPTN_PREFIX
from reconciler.formats.problems import ConfigError
from reconciler.formats.shipyard import Shipyard, load_shipyard

EXIT_BAD_INPUT = 2


def _split(value: str | None, option: str) -> tuple[str, str]:
    parts = (value or "").split(".")
    if len(parts) != 2 or not all(parts):
        raise click.BadParameter(f"{value!r}: expected STAGE.SEQUENCE, e.g. qa.delivery", param_hint=option)
    return parts[0], parts[1]


def _bad_input(exc: ConfigError) -> None:
    for problem in exc.problems:
        click.echo(f"error: {problem}", err=True)
    raise SystemExit(EXIT_BAD_INPUT)


def _load_shipyard(path: Path) -> Shipyard:
    return load_shipyard(path.read_bytes(), str(path))


@click.command()
@click.option(
    "--shipyard",
    "shipyard_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The shipyard.yaml to simulate (e.g. the one in a pull request).",
)
@click.option("--trigger", metavar="STAGE.SEQUENCE", help="The sequence to trigger, e.g. qa.delivery.")
@click.option(
    "--outcomes",
    "outcomes_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML list answering each dispatched task in dispatch order.",
)
@click.option("--service", default="service", show_default=True, help="Service name in the events.")
@click.option(
    "--project", default=None, help="Project name. Default: the shipyard's metadata.name, else 'simulation'."
)
@click.option(
    "--max-iterations",
    type=click.IntRange(min=1),
    default=None,
    help="Runs of one sequence per context before the loop cap fires. Default: remediation_max_iterations (10).",
)
@click.option("--next", "next_mode", is_flag=True, help="Only print what a finished sequence triggers.")
@click.option("--finished", metavar="STAGE.SEQUENCE", help="With --next: the sequence that finished.")
@click.option("--result", type=click.Choice(["pass", "warning", "fail"]), help="With --next: its result.")
@click.option(
    "--last-task", default=None, help="With --next: the task that ran last. Default: its last task."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Reconciler config file (task deadlines, loop cap). Env: RECONCILER_CONFIG.",
)
@output_option
def simulate(
    shipyard_path: Path,
    trigger: str | None,
    outcomes_path: Path | None,
    service: str,
    project: str | None,
    max_iterations: int | None,
    next_mode: bool,
    finished: str | None,
    result: str | None,
    last_task: str | None,
    config_file: Path | None,
    output: str,
) -> None:
    """Run the real engine on a shipyard with scripted task outcomes and a simulated clock.

    \b
    reconciler simulate --shipyard shipyard.yaml --trigger qa.delivery --outcomes qa-pass.yaml
    reconciler simulate --next --shipyard shipyard.yaml --finished qa.delivery --result warning
    """
    if next_mode:
        if trigger or outcomes_path:
            raise click.UsageError("--next takes --finished and --result, not --trigger or --outcomes")
        if not finished or not result:
            raise click.UsageError("--next needs --finished STAGE.SEQUENCE and --result pass|warning|fail")
        stage, sequence = _split(finished, "--finished")
        try:
            shipyard = _load_shipyard(shipyard_path)
            fired = next_sequences(
                shipyard, stage, sequence, result, last_task, shipyard_file=str(shipyard_path)
            )
        except ConfigError as exc:
            _bad_input(exc)
            return
        if output == "json":
            echo_json({"triggered": fired})
        elif fired:
            for item in fired:
                click.echo(f"{item['stage']}.{item['sequence']}")
        else:
            click.echo(f"nothing: no sequence is triggered by {finished}.finished with result {result}")
        return

    if finished or result or last_task:
        raise click.UsageError("--finished, --result and --last-task belong to --next")
    if not trigger or outcomes_path is None:
        raise click.UsageError("simulate needs --trigger STAGE.SEQUENCE and --outcomes FILE (or --next)")
    stage, sequence = _split(trigger, "--trigger")
    from reconciler.controller.loop import policy_from

    settings = make_settings(config_file)
    try:
        shipyard = _load_shipyard(shipyard_path)
        script = load_outcomes(outcomes_path.read_bytes(), str(outcomes_path))
        name = project_name(shipyard, project)
        try:
            policy = policy_from(settings)
        except ValueError as exc:  # an unparsable deadline in the settings
            raise click.UsageError(f"invalid settings: {exc}") from None
        if max_iterations is not None:
            policy = replace(policy, max_iterations=max_iterations)
        outcome = run_simulation(
            shipyard,
            stage,
            sequence,
            script,
            service=service,
            project=name,
            policy=policy,
            shipyard_file=str(shipyard_path),
        )
    except ConfigError as exc:
        _bad_input(exc)
        return
    if output == "json":
        echo_json(outcome.summary())
    else:
        click.echo(render(outcome))


def _short(event_type: str) -> str:
    return event_type[len(KEPTN_PREFIX) :] if event_type.startswith(KEPTN_PREFIX) else event_type


def render(res: SimulationResult) -> str:
    """A timeline a person reads in a pull-request log."""
    lines = [
        f"Simulated {res.stage}.{res.sequence} for service {res.service} in project {res.project}",
        "",
        f"  {'time':8} {'event':40} {'from':24} outcome",
    ]
    notes_at: dict[int, list[str]] = {}
    for note in res.notes:
        if note.kind == "unused-outcomes":
            continue
        notes_at.setdefault(note.after, []).append(f"{note.kind}: {note.message}")
    for index, step in enumerate(res.steps):
        ev = step.event
        etype = ev.etype
        outcome = ""
        if etype is not None and etype.kind == "finished":
            outcome = f"{ev.result or '(no result)'}/{ev.status or '(no status)'}"
            message = str(ev.data.get("message") or "")
            if message:
                outcome += "  " + (message if len(message) <= 70 else message[:67] + "...")
        if etype is not None and etype.is_sequence and etype.kind == "started" and ev.source == CONTROLLER:
            outcome = "(reconciler's addition, not sent by Keptn)"
        lines.append(
            f"  {offset(step.at - res.start):8} {_short(ev.type):40} {ev.source:24} {outcome}".rstrip()
        )
        for text in notes_at.get(index, []):
            lines.append(f"  {'':8} ! {text}")
    lines.append("")
    lines.append("Sequences:")
    for seq in res.sequences:
        verdict = f"{seq['result']}/{seq['status']}" if seq["result"] or seq["status"] else ""
        lines.append(f"  {seq['stage'] + '.' + seq['sequence']:32} {seq['state']:20} {verdict}".rstrip())
    lines.append("")
    if res.waiting_for:
        w = res.waiting_for
        lines.append(
            f"Waiting for: task {w['task']} of {w['stage']}.{w['sequence']} "
            "(no outcome entry left, or nobody answers)"
        )
    else:
        lines.append("Waiting for: nothing; every sequence has ended")
    for note in (n for n in res.notes if n.kind == "unused-outcomes"):
        lines.append(f"Note: {note.message}")
    return "\n".join(lines)
