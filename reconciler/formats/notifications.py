"""`notifications.yaml` on `main`: delivery news the reconciler posts to chat and event sinks.

Keptn had no such file: teams subscribed webhooks to `evaluation.finished` and wrote the
message themselves in a webhook.yaml payload (that still works, see
`reconciler.formats.webhook`). This file is the reconciler's own, for the news Keptn could
not send (an upstream commit rejected) and for messages people do not have to template:

    apiVersion: reconciler/v1
    kind: Notifications
    spec:
      links:
        web: https://reconciler.example.com                          # <web>/ui/context/<context>
        commit: https://git.example.com/team/fulltour/commit/{commit}  # a ledger commit
      envFrom:                                                       # as in webhook.yaml
        - name: slackToken
          secretRef: {name: slack-webhook, key: token}
      targets:
        - name: team-chat
          kind: slack                         # slack | teams | generic | cloudevents
          url: https://hooks.slack.com/services/{{.env.slackToken}}
          events: [sequence.finished, evaluation.failed, approval.waiting,
                   remediation.started, upstream.rejected]
          stages: [production]                # optional filters
          services: [helloservice]
          results: [fail, warning]            # sequence.finished only
        - name: audit
          kind: cloudevents
          mode: structured                    # binary (default) | structured
          url: https://events.example.com/ingest
          headers: [{key: Authorization, value: "Bearer {{.env.sinkToken}}"}]

A target's URL and headers may use secrets only: the message is built by the reconciler,
never templated from event data. It lives on `main` (project level) next to
`shipyard.yaml`; stages and services are filters.

May import: stdlib, pydantic, `reconciler.formats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from reconciler.formats.problems import ConfigError, Problem
from reconciler.formats.webhook import (
    EnvFrom,
    HeaderModel,
    HeaderSpec,
    TemplateField,
    check_field,
    check_header,
)
from reconciler.formats.yamldoc import load_yaml, validate_doc

NOTIFICATIONS_FILE = "notifications.yaml"
API_VERSION = "reconciler/v1"
KIND = "Notifications"


class NoticeKind(StrEnum):
    SEQUENCE_FINISHED = "sequence.finished"
    EVALUATION_FAILED = "evaluation.failed"
    APPROVAL_WAITING = "approval.waiting"
    REMEDIATION_STARTED = "remediation.started"
    UPSTREAM_REJECTED = "upstream.rejected"


SinkKind = Literal["slack", "teams", "generic", "cloudevents"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _commit_link(value: str | None) -> str | None:
    if value is not None and "{commit}" not in value:
        raise ValueError("links.commit needs {commit} where the commit id goes, e.g. .../commit/{commit}")
    return value


def _base_link(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"link {value!r}: expected an http:// or https:// URL")
    return value


class LinksModel(_Strict):
    web: Annotated[str | None, AfterValidator(_base_link)] = None
    commit: Annotated[str | None, AfterValidator(_base_link), AfterValidator(_commit_link)] = None


class TargetModel(_Strict):
    name: str = Field(min_length=1, max_length=128)
    kind: SinkKind
    url: str
    events: list[NoticeKind] = Field(min_length=1)
    stages: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    results: list[Literal["pass", "warning", "fail"]] = Field(default_factory=list)
    headers: list[HeaderModel] = Field(default_factory=list)
    mode: Literal["binary", "structured"] | None = None

    @field_validator("stages", "services", "results", "headers", mode="before")
    @classmethod
    def _null(cls, value: object) -> object:
        return [] if value is None else value


class SpecModel(_Strict):
    links: LinksModel = Field(default_factory=LinksModel)
    env_from: list[EnvFrom] = Field(default_factory=list, alias="envFrom")
    targets: list[TargetModel] = Field(default_factory=list)

    @field_validator("env_from", "targets", mode="before")
    @classmethod
    def _null(cls, value: object) -> object:
        return [] if value is None else value


class NotificationsFile(_Strict):
    api_version: Literal["reconciler/v1"] = Field(alias="apiVersion")
    kind: Literal["Notifications"]
    spec: SpecModel


@dataclass(frozen=True)
class Target:
    index: int
    name: str
    kind: SinkKind
    url: TemplateField
    events: frozenset[NoticeKind]
    stages: frozenset[str]
    services: frozenset[str]
    results: frozenset[str]
    headers: tuple[HeaderSpec, ...]
    mode: Literal["binary", "structured"]

    def wants(self, kind: NoticeKind, *, stage: str, service: str, result: str | None) -> bool:
        """Whether this target takes a notice of `kind` about (stage, service, result)."""
        if kind not in self.events:
            return False
        if self.stages and stage not in self.stages:
            return False
        if self.services and service not in self.services:
            return False
        return not (self.results and kind is NoticeKind.SEQUENCE_FINISHED and result not in self.results)


@dataclass(frozen=True)
class NotificationsConfig:
    file: str
    web: str | None
    commit: str | None
    env_from: tuple[EnvFrom, ...]
    targets: tuple[Target, ...]

    def secret_refs(self) -> dict[str, EnvFrom]:
        return {e.name: e for e in self.env_from}


def load_notifications(data: bytes | str, file: str = NOTIFICATIONS_FILE) -> NotificationsConfig:
    """Parse and check notifications.yaml; raise `ConfigError` with every located problem."""
    doc = load_yaml(data, file)
    model = validate_doc(NotificationsFile, doc)
    problems: list[Problem] = []
    names = [e.name for e in model.spec.env_from]
    for k, name in enumerate(names):
        if names.index(name) != k:
            problems.append(
                doc.problem(("spec", "envFrom", k, "name"), f"envFrom name {name!r} is declared twice")
            )
    declared = set(names)
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for i, target in enumerate(model.spec.targets):
        loc = ("spec", "targets", i)
        if target.name in seen:
            problems.append(
                doc.problem(
                    (*loc, "name"),
                    f"target name {target.name!r} is used by targets {seen[target.name]} and {i}",
                )
            )
        seen.setdefault(target.name, i)
        if target.mode is not None and target.kind != "cloudevents":
            problems.append(doc.problem((*loc, "mode"), "mode applies to kind cloudevents only"))
        if target.results and NoticeKind.SEQUENCE_FINISHED not in target.events:
            problems.append(
                doc.problem(
                    (*loc, "results"), "results filters sequence.finished, which this target does not take"
                )
            )
        url = check_field(doc, target.url, (*loc, "url"), "url", declared, problems, event_data=False)
        headers = [
            check_header(doc, h.key, h.value, (*loc, "headers", k), declared, problems, event_data=False)
            for k, h in enumerate(target.headers)
        ]
        if url is None or any(h is None for h in headers):
            continue
        targets.append(
            Target(
                index=i,
                name=target.name,
                kind=target.kind,
                url=url,
                events=frozenset(target.events),
                stages=frozenset(target.stages),
                services=frozenset(target.services),
                results=frozenset(target.results),
                headers=tuple(h for h in headers if h is not None),
                mode=target.mode or "binary",
            )
        )
    if problems:
        raise ConfigError(problems)
    return NotificationsConfig(
        file=file,
        web=model.spec.links.web,
        commit=model.spec.links.commit,
        env_from=tuple(model.spec.env_from),
        targets=tuple(targets),
    )
