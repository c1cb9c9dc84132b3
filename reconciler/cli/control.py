"""`reconciler approve|decline` and `reconciler abort|pause|resume`: steer a running context.

Approve/decline find the pending approval task of the context in the ledger-replayed
state and record the answer a person gives (approver: `--approver`, default
`$USER`, else the git identity); with no pending approval they say so and record
nothing. Abort/pause/resume record a `reconciler.sequence.control` event the engine
folds; they refuse when they would change nothing (finished, not paused, ...).
Like `trigger`, they append to the ledger in `--data-dir`, or post to `--api`.
"""

from __future__ import annotations

import click

from reconciler.cli.common import echo_json
from reconciler.cli.trigger import Where, approver_name, open_target, report, run_command, target_options


def _approval(
    approve: bool,
    context: str,
    stage: str,
    service: str,
    message: str,
    approver: str | None,
    where: Where,
) -> None:
    who = approver or approver_name()

    def act() -> None:
        target = open_target(where, need_status=True)
        try:
            if target.client is not None:
                body = {
                    "stage": stage,
                    "decision": "approve" if approve else "decline",
                    "approver": who,
                    "message": message,
                    "service": service,
                }
                recorded = target.client.approval(target.project, context, body)["recorded"]
            else:
                assert target.ingress is not None
                receipts = target.ingress.answer_approval(
                    context, stage=stage, approve=approve, approver=who, message=message, service=service
                )
                recorded = [r.as_dict() for r in receipts]
            if where.output == "json":
                echo_json(recorded)
                return
            verb = "approved" if approve else "declined"
            for r in recorded:
                click.echo(f"{verb} by {who}: {stage} of context {r['keptnContext']}", err=True)
            click.echo(context)
        finally:
            target.close()

    run_command(act)


def _approval_command(approve: bool) -> click.Command:
    verb = "approve" if approve else "decline"

    @click.command(verb)
    @click.argument("context")
    @click.option("--stage", required=True, help="Stage whose approval task is waiting.")
    @click.option("--service", default="", help="Only this service (when several wait in the stage).")
    @click.option("--message", "-m", default="", help="Why; recorded with the answer.")
    @click.option(
        "--approver", default=None, help="Name recorded as approver (default: $USER, else git user)."
    )
    @target_options
    def command(
        context: str, stage: str, service: str, message: str, approver: str | None, where: Where
    ) -> None:
        _approval(approve, context, stage, service, message, approver, where)

    command.help = (
        f"{verb.capitalize()} the pending approval of CONTEXT in a stage "
        f"({'the sequence continues' if approve else 'the sequence finishes with result fail'})."
    )
    return command


approve = _approval_command(True)
decline = _approval_command(False)


def _control_command(state: str, help_text: str) -> click.Command:
    @click.command(state)
    @click.argument("context")
    @click.option("--stage", default="", help="Only this stage of the context.")
    @click.option("--message", "-m", default="", help="Recorded with the control event (abort: the reason).")
    @target_options
    def command(
        context: str,
        stage: str,
        message: str,
        where: Where,
    ) -> None:
        def act() -> None:
            target = open_target(where, need_status=True)
            try:
                body = {"state": state, "stage": stage, "message": message}
                if target.client is not None:
                    receipt = target.client.control(target.project, context, body)
                else:
                    assert target.ingress is not None
                    receipt = target.ingress.control(
                        context, state, stage=stage, message=message, source="reconciler-cli"
                    ).as_dict()
                report(receipt, where.output, f"{state} recorded" + (f" for stage {stage}" if stage else ""))
            finally:
                target.close()

        run_command(act)

    command.help = help_text
    return command


abort = _control_command("abort", "Abort every unfinished sequence of CONTEXT (or of one stage of it).")
pause = _control_command(
    "pause", "Hold the next tasks of CONTEXT (running tasks finish; nothing new starts)."
)
resume = _control_command("resume", "Release a paused CONTEXT.")
