"""Delivery news from ledger events: what happened, said briefly, for Slack, Teams, JSON and CloudEvents.

`notice_for(event)` decides whether an event is news (a sequence finished, an evaluation
failed, an approval waits, a remediation started, an upstream commit was rejected) and
extracts the facts into a `Notice`; the builders turn a notice into each sink's body:

- Slack incoming webhooks: `text` (the fallback line) plus Block Kit `blocks` in mrkdwn,
  with `&`, `<` and `>` escaped as Slack requires, so event text cannot mention
  `<!channel>` or forge a link;
- Microsoft Teams: an Adaptive Card (1.4) in the `message`/`attachments` envelope that
  Teams workflow webhooks accept (the older Office 365 connector MessageCard is retired),
  markdown characters escaped;
- a generic JSON object with stable camelCase keys;
- a CloudEvent's attributes and data (`reconciler.notification.<kind>`, id derived from the
  event, so a resent notice is recognisable), encoded over HTTP by the adapter.

Messages are short: a title, one sentence, a few facts, at most 10 details (failing
SLIs, located problems), links to the web view (`<web>/ui/context/<context>`) and the
ledger commit. They carry no secrets: only event fields the ledger already shows, each
bounded and stripped of control characters; callers still pass bodies through the
process-wide redaction before sending.

May import: stdlib, `reconciler.formats`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.formats.events import EventType, KeptnEvent, derived_id, task_type
from reconciler.formats.notifications import NoticeKind, NotificationsConfig, Target
from reconciler.formats.problems import Problem
from reconciler.formats.upstreamrecords import REJECTED

MAX_TEXT = 300
MAX_DETAILS = 10
MAX_DETAIL = 200
UPSTREAM_REJECTED_TYPE = REJECTED
CLOUDEVENT_TYPE_PREFIX = "reconciler.notification."

_RESULT_WORDS = {"pass": "passed", "warning": "passed with warnings", "fail": "failed"}
_STATUS_WORDS = {"aborted": "was aborted", "errored": "errored"}


@dataclass(frozen=True)
class Links:
    """Where a notice points: the web view's base URL and a commit URL pattern with `{commit}`."""

    web: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    title: str
    text: str
    project: str
    stage: str
    service: str
    context: str
    event_id: str
    event_type: str
    time: str
    sequence: str = ""
    result: str | None = None
    commit: str | None = None
    web_url: str | None = None
    commit_url: str | None = None
    facts: tuple[tuple[str, str], ...] = ()
    details: tuple[str, ...] = ()
    hint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def clean(text: Any, limit: int = MAX_TEXT) -> str:
    """One line of plain text: control characters become spaces, long text is cut with an ellipsis."""
    value = "" if text is None else str(text)
    value = "".join(" " if (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) else c for c in value)
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def notice_for(
    event: KeptnEvent,
    *,
    links: Links | None = None,
    ledger_commit: str | None = None,
    approval_waits: Callable[[dict[str, Any]], bool] | None = None,
    trigger: KeptnEvent | None = None,
) -> Notice | None:
    """The notice an event makes, or None when it is not news.

    `ledger_commit` is the ledger commit that recorded the event (for the commit link);
    `approval_waits(data)` says whether an `approval.triggered` waits for a person (the
    approval executor's rule); `trigger` is a sequence's `.triggered` event, whose problem
    details a `remediation.started` notice quotes.
    """
    links = links or Links()
    etype = event.etype
    data = event.data
    kind: NoticeKind | None = None
    if event.type == UPSTREAM_REJECTED_TYPE:
        kind = NoticeKind.UPSTREAM_REJECTED
    elif etype is not None and etype.is_sequence and etype.kind == "finished":
        kind = NoticeKind.SEQUENCE_FINISHED
    elif (
        etype is not None
        and etype.is_sequence
        and etype.kind == "started"
        and etype.sequence == "remediation"
    ):
        kind = NoticeKind.REMEDIATION_STARTED
    elif event.type == task_type("evaluation", "finished") and event.result == "fail":
        kind = NoticeKind.EVALUATION_FAILED
    elif (
        event.type == task_type("approval", "triggered")
        and approval_waits is not None
        and approval_waits(data)
    ):
        kind = NoticeKind.APPROVAL_WAITING
    if kind is None:
        return None
    base = _base(event, kind, links, ledger_commit)
    if kind is NoticeKind.SEQUENCE_FINISHED:
        return _sequence_finished(event, etype, base)
    if kind is NoticeKind.EVALUATION_FAILED:
        return _evaluation_failed(event, base)
    if kind is NoticeKind.APPROVAL_WAITING:
        return _approval_waiting(event, base)
    if kind is NoticeKind.REMEDIATION_STARTED:
        return _remediation_started(event, base, trigger)
    return _upstream_rejected(event, base)


def may_be_news(event_type: str) -> bool:
    """Whether an event of this type can make a notice: the cheap test on a ledger entry's type
    before its event is decoded (`notice_for` decides)."""
    if event_type == UPSTREAM_REJECTED_TYPE:
        return True
    if event_type in (task_type("evaluation", "finished"), task_type("approval", "triggered")):
        return True
    etype = EventType.parse(event_type)
    if etype is None or not etype.is_sequence:
        return False
    return etype.kind == "finished" or (etype.kind == "started" and etype.sequence == "remediation")


def notification_key(notice: Notice, target: Target) -> str:
    """One delivery's identity: the same notice to the same target always has the same key (the
    `Idempotency-Key` header and the delivery record use it)."""
    return derived_id("notification", notice.event_id, target.name, str(notice.kind))


def addressees(notice: Notice, config: NotificationsConfig) -> list[Target]:
    """The targets that take `notice`, in the file's order. A rejected upstream commit has no
    stage; its branch stands in for the stage filter (a commit rejected on `production`)."""
    stage = notice.stage or str(notice.extra.get("branch") or "")
    return [
        t
        for t in config.targets
        if t.wants(notice.kind, stage=stage, service=notice.service, result=notice.result)
    ]


def _base(event: KeptnEvent, kind: NoticeKind, links: Links, commit: str | None) -> dict[str, Any]:
    context = clean(event.shkeptncontext, 128)
    web = None
    if links.web and context:
        web = f"{links.web.rstrip('/')}/ui/context/{urllib.parse.quote(context, safe='')}"
    commit_url = None
    if links.commit and commit:
        commit_url = links.commit.replace("{commit}", urllib.parse.quote(commit, safe=""))
    return {
        "kind": kind,
        "project": clean(event.project, 128),
        "stage": clean(event.stage, 128),
        "service": clean(event.service, 128),
        "context": context,
        "event_id": clean(event.id, 256),
        "event_type": clean(event.type, 256),
        "time": clean(event.time, 64),
        "commit": clean(commit, 64) or None,
        "web_url": web,
        "commit_url": commit_url,
    }


def _where(base: dict[str, Any]) -> str:
    service = f"{base['service']} in " if base["service"] else ""
    return f"{service}{base['stage'] or base['project']}"


def _sequence_finished(event: KeptnEvent, etype: EventType | None, base: dict[str, Any]) -> Notice:
    assert etype is not None
    sequence = clean(etype.sequence, 128)
    result = clean(event.result, 16) or None
    status = clean(event.status, 16)
    outcome = _STATUS_WORDS.get(status) or _RESULT_WORDS.get(
        result or "", f"finished ({result or 'no result'})"
    )
    service = f" for {base['service']}" if base["service"] else ""
    title = f"{base['stage']}.{sequence} {outcome}{service}"
    facts = [("Project", base["project"]), ("Stage", base["stage"]), ("Service", base["service"])]
    facts.append(("Result", result or "none"))
    if status and status != "succeeded":
        facts.append(("Status", status))
    return Notice(
        title=title,
        text=clean(event.data.get("message")) or f"The {sequence} sequence {outcome}.",
        sequence=sequence,
        result=result,
        facts=tuple((k, v) for k, v in facts if v),
        **base,
    )


def _evaluation_failed(event: KeptnEvent, base: dict[str, Any]) -> Notice:
    evaluation = event.data.get("evaluation") if isinstance(event.data.get("evaluation"), dict) else {}
    assert isinstance(evaluation, dict)
    score = evaluation.get("score")
    score_text = _number(score)
    details: list[str] = []
    failing = [
        r
        for r in evaluation.get("indicatorResults") or []
        if isinstance(r, dict) and str(r.get("status") or "") == "fail"
    ]
    for item in failing[:MAX_DETAILS]:
        details.append(_sli_line(item))
    if len(failing) > MAX_DETAILS:
        details.append(f"and {len(failing) - MAX_DETAILS} more")
    title = f"Evaluation failed for {_where(base)}" + (f" (score {score_text})" if score_text else "")
    text = clean(event.data.get("message")) or (
        f"{len(failing)} objective(s) failed." if failing else "The quality gate failed."
    )
    facts = [("Project", base["project"]), ("Stage", base["stage"]), ("Service", base["service"])]
    if score_text:
        facts.append(("Score", score_text))
    return Notice(
        title=title,
        text=text,
        result="fail",
        facts=tuple((k, v) for k, v in facts if v),
        details=tuple(details),
        **base,
    )


def _sli_line(item: dict[str, Any]) -> str:
    value = item.get("value") if isinstance(item.get("value"), dict) else {}
    assert isinstance(value, dict)
    name = clean(item.get("displayName") or value.get("metric") or "SLI", 80)
    shown = _number(value.get("value"))
    if value.get("success") is False:
        shown = "no value" + (f" ({clean(value.get('message'), 80)})" if value.get("message") else "")
    targets = item.get("passTargets") or []
    criteria = ", ".join(
        clean(t.get("criteria"), 40)
        for t in targets
        if isinstance(t, dict) and t.get("criteria") and t.get("violated")
    )
    key = " (key SLI)" if item.get("keySli") else ""
    return clean(f"{name}{key}: {shown}" + (f", violates {criteria}" if criteria else ""), MAX_DETAIL)


def _approval_waiting(event: KeptnEvent, base: dict[str, Any]) -> Notice:
    result = clean(event.result, 16)
    if not result and isinstance(event.data.get("evaluation"), dict):
        result = clean(event.data["evaluation"].get("result"), 16)
    stage = base["stage"]
    hint = f"reconciler approve {base['context']} --stage {stage}" if base["context"] and stage else ""
    return Notice(
        title=f"Approval waiting for {_where(base)}",
        text=f"The previous task's result is {result or 'unknown'}; a person must approve or decline.",
        result=result or None,
        facts=tuple(
            (k, v)
            for k, v in (("Project", base["project"]), ("Stage", stage), ("Service", base["service"]))
            if v
        ),
        hint=hint,
        **base,
    )


def _remediation_started(event: KeptnEvent, base: dict[str, Any], trigger: KeptnEvent | None) -> Notice:
    problem: dict[str, Any] = {}
    source = trigger.data if trigger is not None else event.data
    if isinstance(source.get("problem"), dict):
        problem = source["problem"]
    title_text = clean(problem.get("problemTitle") or problem.get("ProblemTitle"), 120)
    details = []
    if problem.get("problemDetails"):
        details.append(clean(problem.get("problemDetails"), MAX_DETAIL))
    return Notice(
        title=f"Remediation started for {_where(base)}",
        text=f"Problem: {title_text}." if title_text else "A problem was reported; remediation is running.",
        sequence="remediation",
        facts=tuple(
            (k, v)
            for k, v in (("Project", base["project"]), ("Stage", base["stage"]), ("Service", base["service"]))
            if v
        ),
        details=tuple(details),
        **base,
    )


def _upstream_rejected(event: KeptnEvent, base: dict[str, Any]) -> Notice:
    data = event.data
    branch = clean(data.get("branch"), 128)
    commit = clean(data.get("commit"), 64)
    serving = clean(data.get("serving"), 64)
    problems = [p for p in data.get("problems") or [] if isinstance(p, dict)]
    details: list[str] = []
    for raw in problems[:MAX_DETAILS]:
        try:
            details.append(clean(str(Problem.model_validate(raw)), MAX_DETAIL))
        except ValueError:
            details.append(clean(raw.get("message"), MAX_DETAIL))
    count = data.get("problemCount")
    total = count if isinstance(count, int) and count >= len(problems) else len(problems)
    if total > len(details):
        details.append(f"and {total - len(details)} more")
    still = f"still serving {serving[:12]}" if serving else "nothing served yet from this branch"
    facts = [
        ("Project", base["project"]),
        ("Branch", branch),
        ("Commit", commit[:12]),
        ("Problems", str(total)),
    ]
    return Notice(
        title=f"Upstream commit {commit[:12]} on {branch} rejected",
        text=f"{total} problem(s) found; {still}.",
        facts=tuple((k, v) for k, v in facts if v),
        details=tuple(details),
        extra={"branch": branch, "upstreamCommit": commit, "serving": serving or None},
        **base,
    )


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return clean(value, 40) if isinstance(value, str) else ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


# --- sinks ------------------------------------------------------------------------------------------------


_EMOJI = {"pass": ":white_check_mark:", "warning": ":warning:", "fail": ":x:"}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _links(notice: Notice) -> list[tuple[str, str]]:
    out = []
    if notice.web_url:
        out.append(("Open in reconciler", notice.web_url))
    if notice.commit_url:
        out.append(
            (f"Ledger commit {notice.commit[:12] if notice.commit else ''}".strip(), notice.commit_url)
        )
    return out


def slack_message(notice: Notice) -> dict[str, Any]:
    """A Slack incoming-webhook body: a fallback `text` and a few Block Kit blocks (mrkdwn)."""
    icon = _EMOJI.get(notice.result or "", ":information_source:")
    if notice.kind is NoticeKind.UPSTREAM_REJECTED or notice.kind is NoticeKind.EVALUATION_FAILED:
        icon = ":x:"
    elif notice.kind is NoticeKind.APPROVAL_WAITING:
        icon = ":raised_hand:"
    elif notice.kind is NoticeKind.REMEDIATION_STARTED:
        icon = ":ambulance:"
    title = _slack_escape(notice.title)
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{icon} *{title}*\n{_slack_escape(notice.text)}"},
        },
    ]
    if notice.facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{_slack_escape(k)}*\n{_slack_escape(v)}"}
                    for k, v in notice.facts[:10]
                ],
            }
        )
    if notice.details:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "\n".join(f"• {_slack_escape(d)}" for d in notice.details),
                },
            }
        )
    context: list[str] = []
    if notice.hint:
        context.append(f"`{_slack_escape(notice.hint).replace('`', '')}`")
    context.extend(f"<{_slack_url(url)}|{_slack_escape(label)}>" for label, url in _links(notice))
    if notice.commit and not notice.commit_url:
        context.append(f"ledger commit `{_slack_escape(notice.commit[:12])}`")
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    return {"text": _slack_escape(f"{notice.title}: {notice.text}"), "blocks": blocks}


def _slack_url(url: str) -> str:
    return url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")


_MD_SPECIAL = set("\\`*_[]()~#>|<&")


def _md_escape(text: str) -> str:
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def teams_message(notice: Notice) -> dict[str, Any]:
    """A Teams webhook body: an Adaptive Card 1.4 inside the `message` envelope."""
    color = {"pass": "Good", "warning": "Warning", "fail": "Attention"}.get(notice.result or "", "Default")
    if notice.kind in (NoticeKind.UPSTREAM_REJECTED, NoticeKind.EVALUATION_FAILED):
        color = "Attention"
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _md_escape(notice.title),
            "weight": "Bolder",
            "size": "Medium",
            "color": color,
            "wrap": True,
        },
        {"type": "TextBlock", "text": _md_escape(notice.text), "wrap": True},
    ]
    if notice.facts:
        body.append(
            {"type": "FactSet", "facts": [{"title": k, "value": _md_escape(v)} for k, v in notice.facts]}
        )
    for detail in notice.details:
        body.append({"type": "TextBlock", "text": "- " + _md_escape(detail), "wrap": True, "spacing": "None"})
    if notice.hint:
        body.append(
            {"type": "TextBlock", "text": _md_escape(notice.hint), "fontType": "Monospace", "wrap": True}
        )
    if notice.commit and not notice.commit_url:
        body.append(
            {"type": "TextBlock", "text": f"Ledger commit {_md_escape(notice.commit[:12])}", "wrap": True}
        )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    actions = [{"type": "Action.OpenUrl", "title": label, "url": url} for label, url in _links(notice)]
    if actions:
        card["actions"] = actions
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def generic_message(notice: Notice) -> dict[str, Any]:
    """A plain JSON object: the notice's facts under stable keys (also the CloudEvent's data)."""
    out: dict[str, Any] = {
        "kind": str(notice.kind),
        "title": notice.title,
        "text": notice.text,
        "project": notice.project,
        "stage": notice.stage,
        "service": notice.service,
        "sequence": notice.sequence or None,
        "result": notice.result,
        "context": notice.context,
        "eventId": notice.event_id,
        "eventType": notice.event_type,
        "time": notice.time,
        "ledgerCommit": notice.commit,
        "links": {"web": notice.web_url, "commit": notice.commit_url},
        "details": list(notice.details),
    }
    if notice.hint:
        out["hint"] = notice.hint
    out.update(notice.extra)
    return out


def cloudevent_parts(notice: Notice, *, source: str = "reconciler") -> tuple[dict[str, Any], dict[str, Any]]:
    """(attributes, data) of the notice as a CloudEvent 1.0."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": derived_id("notification", notice.event_id, str(notice.kind)),
        "source": source,
        "type": CLOUDEVENT_TYPE_PREFIX + str(notice.kind),
        "datacontenttype": "application/json",
    }
    subject = "/".join(p for p in (notice.project, notice.stage, notice.service) if p)
    if subject:
        attributes["subject"] = subject
    if notice.context:
        attributes["shkeptncontext"] = notice.context
    return attributes, generic_message(notice)


def message_for(kind: str, notice: Notice) -> dict[str, Any]:
    """The JSON body for a sink kind other than cloudevents."""
    if kind == "slack":
        return slack_message(notice)
    if kind == "teams":
        return teams_message(notice)
    return generic_message(notice)
