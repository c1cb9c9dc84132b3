"""`webhook/webhook.yaml` (Keptn's webhook-service, `webhookconfig.keptn.sh/v1beta1` and `v1alpha1`).

One file may live at the project (`main:webhook/webhook.yaml`), stage
(`<stage>:webhook/webhook.yaml`) and service (`<stage>:<service>/webhook/webhook.yaml`)
levels, as Keptn read it. Each entry of `spec.webhooks` names the event type it handles
(`type`, a NATS subject pattern: `*` one word, `>` the rest), `subscriptionID`,
`sendStarted`/`sendFinished`, `envFrom` (secrets bound to `{{.env.NAME}}`) and `requests`:
in v1beta1 mappings of `url`, `method`, `headers`, `payload`, `options` (extra curl
options); in v1alpha1 curl command lines.

Both forms become the same `RequestSpec`. Curl lines are split like a POSIX shell would
(`shlex`, nothing is executed), after every `{{...}}` has been protected so quotes and
spaces inside an action stay in it, and each word is then a template of its own: the
option names are literal, and event data can never add a word. Options the sender does not
implement are refused with the request's location rather than ignored.

Unlike Keptn (which ignored unknown keys and found template mistakes only when a request
ran), every problem is reported when the file is loaded: unknown keys, unknown template
fields, secrets not declared in `envFrom` or used where they may not go, a URL whose
scheme, host or port could come from event data, header names that are not tokens.

May import: stdlib, pydantic, `reconciler.formats.yamldoc`, `reconciler.formats.gotemplate`.
"""

from __future__ import annotations

import re
import shlex
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from reconciler.formats import gotemplate as wt
from reconciler.formats.problems import ConfigError, Problem
from reconciler.formats.yamldoc import Loc, YamlDoc, load_yaml, validate_doc

API_V1ALPHA1 = "webhookconfig.keptn.sh/v1alpha1"
API_V1BETA1 = "webhookconfig.keptn.sh/v1beta1"
API_VERSIONS = (API_V1BETA1, API_V1ALPHA1)
KIND = "WebhookConfig"
WEBHOOK_FILE = "webhook/webhook.yaml"

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
"""Keptn's v1beta1 code took GET/HEAD/POST/PUT, its spec GET/POST/PUT/PATCH/DELETE; any of them here."""

EVENT_ROOTS = (
    "data",
    "id",
    "type",
    "source",
    "specversion",
    "time",
    "shkeptncontext",
    "shkeptnspecversion",
    "triggeredid",
    "gitcommitid",
    "contenttype",
    "datacontenttype",
)
"""The event's attributes a template may read, besides `.env` (Keptn's map of the CloudEvent)."""

MAX_TIMEOUT = 300.0
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    }
)
"""Headers the HTTP client sets itself; a file setting them would fight the connection it makes."""

_PROTECT_OPEN = "\ue000"
_PROTECT_CLOSE = "\ue001"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _text(value: Any) -> Any:
    """YAML scalars people write unquoted (`value: 123`, `key: true`) are strings here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class SecretRef(_Strict):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SECRET_NAME.match(value):
            raise ValueError(
                f"secret name {value!r} is not a valid Kubernetes name; expected lower-case letters, "
                "digits, '-' and '.'"
            )
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not SECRET_KEY.match(value):
            raise ValueError(
                f"secret key {value!r} is not a valid key; expected letters, digits, '-', '_', '.'"
            )
        return value


class EnvFrom(_Strict):
    name: str = Field(min_length=1, max_length=253)
    secret_ref: SecretRef = Field(alias="secretRef")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if any(ord(c) < 0x20 or c in "{}" for c in value):
            raise ValueError(f"envFrom name {value!r} contains control characters or braces")
        return value


class HeaderModel(_Strict):
    key: str
    value: str

    _coerce = field_validator("key", "value", mode="before")(_text)


class BetaRequest(_Strict):
    url: str
    method: str
    headers: list[HeaderModel] = Field(default_factory=list)
    payload: str = ""
    options: str = ""

    @field_validator("headers", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("payload", "options", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        return "" if value is None else _text(value)


class Metadata(_Strict):
    name: str = ""


def _curl_item(value: Any) -> Any:
    if isinstance(value, dict):
        raise ValueError(
            f"{API_V1ALPHA1} requests are curl command lines; found a mapping "
            f"(url/method mappings need apiVersion {API_V1BETA1})"
        )
    return value


def _beta_item(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            f"{API_V1BETA1} requests are mappings with url and method; found a curl command line "
            f"(those need apiVersion {API_V1ALPHA1})"
        )
    return value


def _some(what: str) -> Any:
    def check(value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError(f"{what} is empty; expected at least one")
        return value

    return AfterValidator(check)


class _EntryBase(_Strict):
    type: str = Field(min_length=1, max_length=512)
    subscription_id: str | None = Field(default=None, alias="subscriptionID")
    send_finished: bool | None = Field(default=None, alias="sendFinished")
    send_started: bool | None = Field(default=None, alias="sendStarted")
    env_from: list[EnvFrom] = Field(default_factory=list, alias="envFrom")
    requests: Sequence[Any]

    @field_validator("env_from", "requests", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("subscription_id", mode="before")
    @classmethod
    def _sid(cls, value: Any) -> Any:
        return _text(value)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        problem = type_pattern_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class AlphaEntry(_EntryBase):
    requests: Annotated[list[Annotated[str, BeforeValidator(_curl_item)]], _some("requests")]


class BetaEntry(_EntryBase):
    requests: Annotated[list[Annotated[BetaRequest, BeforeValidator(_beta_item)]], _some("requests")]


class _FileBase(_Strict):
    api_version: str = Field(alias="apiVersion")
    kind: str = KIND
    metadata: Metadata | None = None

    @field_validator("api_version")
    @classmethod
    def _api(cls, value: str) -> str:
        if value not in API_VERSIONS:
            raise ValueError(
                f"unsupported webhook configuration version {value!r}; expected {API_V1BETA1} or {API_V1ALPHA1}"
            )
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value != KIND:
            raise ValueError(f"kind {value!r}; expected {KIND}")
        return value


class AlphaSpec(_Strict):
    webhooks: Annotated[list[AlphaEntry], _some("webhooks")]


class BetaSpec(_Strict):
    webhooks: Annotated[list[BetaEntry], _some("webhooks")]


class AlphaFile(_FileBase):
    spec: AlphaSpec


class BetaFile(_FileBase):
    spec: BetaSpec


WebhookEntry = AlphaEntry | BetaEntry


def type_pattern_problem(pattern: str) -> str | None:
    """Why a webhook `type` can never match a Keptn event, or None."""
    if not pattern.startswith("sh.keptn."):
        return f"type {pattern!r} is not a Keptn event type; expected sh.keptn.event.<task>.<kind> (or a pattern)"
    words = pattern.split(".")
    for i, word in enumerate(words):
        if not word:
            return f"type {pattern!r} has an empty word"
        if word == ">" and i != len(words) - 1:
            return f"type {pattern!r}: '>' matches the rest and must be the last word"
        if ("*" in word or ">" in word) and word not in ("*", ">"):
            return f"type {pattern!r}: '*' and '>' stand for whole words only"
    return None


def type_matches(pattern: str, event_type: str) -> bool:
    """NATS subject matching, as Keptn's subscriptions did: `*` one word, `>` one or more."""
    want = pattern.split(".")
    have = event_type.split(".")
    for i, word in enumerate(want):
        if word == ">":
            return len(have) > i
        if i >= len(have) or (word != "*" and word != have[i]):
            return False
    return len(have) == len(want)


def executor_task(pattern: str) -> str | None:
    """The task a webhook answers as a task executor: only an explicit `sh.keptn.event.<task>.triggered`.

    A wildcard that happens to match `.triggered` events (`sh.keptn.>`) only notifies;
    in Keptn it also answered every task it matched.
    """
    words = pattern.split(".")
    if (
        len(words) == 5
        and words[:3] == ["sh", "keptn", "event"]
        and words[4] == "triggered"
        and words[3] not in ("*", ">")
    ):
        return words[3]
    return None


# --- the normalised model ----------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateField:
    """A templated value and where it came from (for errors)."""

    text: str
    template: wt.Template
    loc: Loc
    what: str  # "url", "header X-Token", "payload", ...
    where: Problem | None = None  # file, line, column and field of `loc`, for errors found later

    @property
    def is_literal(self) -> bool:
        return not self.template.actions() and not self.template.has_blocks


@dataclass(frozen=True)
class HeaderSpec:
    key: str
    value: TemplateField


@dataclass(frozen=True)
class RequestSpec:
    """One request of a webhook, whichever form it was written in."""

    index: int
    loc: Loc
    method: str
    url: TemplateField
    headers: tuple[HeaderSpec, ...] = ()
    payload: TemplateField | None = None
    json_payload: bool = False
    json_contexts: dict[int, wt.JsonContext] = field(default_factory=dict)
    user: TemplateField | None = None
    proxy: str | None = None
    insecure: bool = False
    follow_redirects: bool = False
    max_time: float | None = None
    connect_timeout: float | None = None
    curl: str | None = None

    def header(self, name: str) -> HeaderSpec | None:
        for h in self.headers:
            if h.key.lower() == name.lower():
                return h
        return None


@dataclass(frozen=True)
class Webhook:
    index: int
    loc: Loc
    type: str
    subscription_id: str | None
    send_finished: bool | None
    send_started: bool | None
    env_from: tuple[EnvFrom, ...]
    requests: tuple[RequestSpec, ...]
    file: str

    @property
    def identity(self) -> str:
        """What a more specific level overrides: the subscription, else this file's entry."""
        return self.subscription_id or f"{self.file}#{self.index}"

    @property
    def task(self) -> str | None:
        return executor_task(self.type)

    @property
    def sends_started(self) -> bool:
        return self.send_started is not False

    @property
    def sends_finished(self) -> bool:
        """Keptn's code: `sendFinished` unset is false (its README said otherwise)."""
        return bool(self.send_finished)

    def matches(self, event_type: str) -> bool:
        return type_matches(self.type, event_type)

    def secret_refs(self) -> dict[str, SecretRef]:
        return {e.name: e.secret_ref for e in self.env_from}


@dataclass(frozen=True)
class WebhookConfig:
    api_version: str
    file: str
    webhooks: tuple[Webhook, ...]
    warnings: tuple[Problem, ...] = ()


# --- loading ---------------------------------------------------------------------------------------------


def load_webhook_config(data: bytes | str, file: str = WEBHOOK_FILE) -> WebhookConfig:
    """Parse and check a webhook.yaml; raise `ConfigError` with every located problem."""
    doc = load_yaml(data, file)
    api = doc.value.get("apiVersion") if isinstance(doc.value, dict) else None
    model: AlphaFile | BetaFile = (
        validate_doc(AlphaFile, doc) if api == API_V1ALPHA1 else validate_doc(BetaFile, doc)
    )
    checker = _Checker(doc, model.api_version)
    webhooks = [checker.webhook(i, entry) for i, entry in enumerate(model.spec.webhooks)]
    checker.cross_checks(webhooks)
    if checker.errors:
        raise ConfigError(checker.errors)
    return WebhookConfig(
        api_version=model.api_version,
        file=file,
        webhooks=tuple(w for w in webhooks if w is not None),
        warnings=tuple(checker.warnings),
    )


def check_field(
    doc: YamlDoc,
    text: str,
    loc: Loc,
    what: str,
    declared: set[str],
    problems: list[Problem],
    *,
    event_data: bool = True,
) -> TemplateField | None:
    """Compile one templated value of another file with this format's rules (URL rules when `what` is "url").

    `event_data=False` allows only secrets (`{{.env.NAME}}`): for values the reconciler
    fills in itself, such as a notification target's URL.
    """
    checker = _Checker(doc, "", event_data=event_data)
    tf = checker.template(text, loc, what, declared, allow_env=True)
    problems.extend(checker.errors)
    return tf


def check_header(
    doc: YamlDoc,
    key: str,
    value: str,
    loc: Loc,
    declared: set[str],
    problems: list[Problem],
    *,
    event_data: bool = True,
) -> HeaderSpec | None:
    """A header of another file, checked as webhook.yaml headers are."""
    checker = _Checker(doc, "", event_data=event_data)
    spec = checker.header(key, value, loc, declared)
    problems.extend(checker.errors)
    return spec


class _Checker:
    def __init__(self, doc: YamlDoc, api_version: str, *, event_data: bool = True) -> None:
        self.doc = doc
        self.api_version = api_version
        self.event_data = event_data
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        self.in_curl = False  # while reading words of a curl line: template errors get a hint

    def error(self, loc: Loc, message: str) -> None:
        self.errors.append(self.doc.problem(loc, message))

    def warn(self, loc: Loc, message: str) -> None:
        self.warnings.append(self.doc.problem(loc, message).model_copy(update={"severity": "warning"}))

    # -- one webhook -----------------------------------------------------------------------------------

    def webhook(self, index: int, entry: _EntryBase) -> Webhook | None:
        loc: Loc = ("spec", "webhooks", index)
        names = [e.name for e in entry.env_from]
        for k, name in enumerate(names):
            if names.index(name) != k:
                self.error((*loc, "envFrom", k, "name"), f"envFrom name {name!r} is declared twice")
        declared = set(names)
        if executor_task(entry.type) is not None and entry.send_finished is None:
            self.warn(
                (*loc, "type"),
                "sendFinished is not set: as in Keptn, no .finished is sent and the task waits for "
                "the receiver to send it through POST /v1/event; set sendFinished: true to finish the "
                "task when the requests succeed",
            )
        requests: list[RequestSpec] = []
        ok = True
        raws: list[str | BetaRequest] = list(entry.requests)
        for j, raw in enumerate(raws):
            rloc: Loc = (*loc, "requests", j)
            before = len(self.errors)
            if isinstance(raw, str):
                spec = self.curl_request(j, rloc, raw, declared)
            else:
                spec = self.beta_request(j, rloc, raw, declared)
            if spec is not None and len(self.errors) == before:
                requests.append(spec)
            else:
                ok = False
        if not ok:
            return None
        return Webhook(
            index=index,
            loc=loc,
            type=entry.type,
            subscription_id=entry.subscription_id or None,
            send_finished=entry.send_finished,
            send_started=entry.send_started,
            env_from=tuple(entry.env_from),
            requests=tuple(requests),
            file=self.doc.file,
        )

    def cross_checks(self, webhooks: Sequence[Webhook | None]) -> None:
        seen_ids: dict[str, int] = {}
        seen_tasks: dict[str, int] = {}
        for hook in webhooks:
            if hook is None:
                continue
            if hook.subscription_id:
                if hook.subscription_id in seen_ids:
                    self.error(
                        (*hook.loc, "subscriptionID"),
                        f"subscriptionID {hook.subscription_id!r} is used by webhooks "
                        f"{seen_ids[hook.subscription_id]} and {hook.index}; expected one webhook per subscription",
                    )
                seen_ids.setdefault(hook.subscription_id, hook.index)
            task = hook.task
            if task is not None:
                if task in seen_tasks:
                    self.error(
                        (*hook.loc, "type"),
                        f"webhooks {seen_tasks[task]} and {hook.index} both answer {hook.type}; one task "
                        "has one executor (put further requests into one webhook)",
                    )
                seen_tasks.setdefault(task, hook.index)

    # -- v1beta1 ---------------------------------------------------------------------------------------

    def beta_request(self, index: int, loc: Loc, raw: BetaRequest, declared: set[str]) -> RequestSpec | None:
        method = raw.method.strip().upper()
        if method not in METHODS:
            self.error(
                (*loc, "method"),
                f"method {raw.method!r} is not supported; expected one of {', '.join(METHODS)}",
            )
        url = self.template(raw.url, (*loc, "url"), "url", declared, allow_env=True)
        headers: list[HeaderSpec] = []
        for k, header in enumerate(raw.headers):
            spec = self.header(header.key, header.value, (*loc, "headers", k), declared)
            if spec is not None:
                headers.append(spec)
        parts = _CurlParts()
        if raw.options.strip():
            parts = self.curl_words(raw.options, (*loc, "options"), declared, command=False) or _CurlParts()
        if parts.method and parts.method != method:
            self.error(
                (*loc, "options"),
                f"options set the method to {parts.method} but method is {method}; keep one",
            )
        if parts.data is not None and raw.payload:
            self.error((*loc, "options"), "options send data and payload is set too; keep the payload")
        headers.extend(parts.headers)
        payload_text = raw.payload if raw.payload else parts.data
        payload = (
            self.template(payload_text, (*loc, "payload"), "payload", declared, allow_env=True)
            if payload_text
            else None
        )
        if url is None or (payload_text and payload is None):
            return None
        return self.finish(
            RequestSpec(
                index=index,
                loc=loc,
                method=method,
                url=url,
                headers=tuple(headers),
                payload=payload,
                user=parts.user,
                proxy=parts.proxy,
                insecure=parts.insecure,
                follow_redirects=parts.location,
                max_time=parts.max_time,
                connect_timeout=parts.connect_timeout,
            ),
            json_forced=parts.json,
        )

    # -- v1alpha1 ---------------------------------------------------------------------------------------

    def curl_request(self, index: int, loc: Loc, command: str, declared: set[str]) -> RequestSpec | None:
        parts = self.curl_words(command, loc, declared, command=True)
        if parts is None:
            return None
        if parts.url is None:
            self.error(loc, "curl command has no URL; expected curl [options] https://...")
            return None
        url = parts.url
        payload = (
            self.template(parts.data, loc, "curl data", declared, allow_env=True)
            if parts.data is not None
            else None
        )
        if parts.data is not None and payload is None:
            return None
        method = parts.method or ("HEAD" if parts.head else ("POST" if parts.data is not None else "GET"))
        return self.finish(
            RequestSpec(
                index=index,
                loc=loc,
                method=method,
                url=url,
                headers=tuple(parts.headers),
                payload=payload,
                user=parts.user,
                proxy=parts.proxy,
                insecure=parts.insecure,
                follow_redirects=parts.location,
                max_time=parts.max_time,
                connect_timeout=parts.connect_timeout,
                curl=command,
            ),
            json_forced=parts.json,
        )

    def finish(self, spec: RequestSpec, *, json_forced: bool) -> RequestSpec | None:
        """Decide whether the payload is JSON (escaped per value) and where its values land."""
        if spec.payload is None:
            return spec
        json_payload = json_forced or _looks_json(spec)
        if not json_payload:
            return spec
        try:
            contexts = wt.json_contexts(spec.payload.template)
        except wt.TemplateError as exc:
            self.error(spec.payload.loc, f"{spec.payload.what}: {exc}")
            return None
        return replace(spec, json_payload=True, json_contexts=contexts)

    def curl_words(self, text: str, loc: Loc, declared: set[str], *, command: bool) -> _CurlParts | None:
        """Split a curl command line (or v1beta1 `options`) into words and read its options."""
        self.in_curl = True
        try:
            return self._curl_words(text, loc, declared, command=command)
        finally:
            self.in_curl = False

    def _curl_words(self, text: str, loc: Loc, declared: set[str], *, command: bool) -> _CurlParts | None:
        where = "curl command" if command else "options"
        if _PROTECT_OPEN in text or _PROTECT_CLOSE in text:
            self.error(loc, f"{where} contains private-use characters U+E000/U+E001; expected plain text")
            return None
        try:
            spans = wt.action_spans(text)
        except wt.TemplateError as exc:
            self.error(loc, f"{where}: {exc}")
            return None
        protected: list[str] = []
        masked: list[str] = []
        pos = 0
        for start, end in spans:
            masked.append(text[pos:start])
            masked.append(f"{_PROTECT_OPEN}{len(protected)}{_PROTECT_CLOSE}")
            protected.append(text[start:end])
            pos = end
        masked.append(text[pos:])
        try:
            words = shlex.split("".join(masked), posix=True)
        except ValueError as exc:
            self.error(loc, f"{where} cannot be split into words ({exc}); check its quotes")
            return None

        def restore(word: str) -> str:
            return re.sub(
                f"{_PROTECT_OPEN}(\\d+){_PROTECT_CLOSE}", lambda m: protected[int(m.group(1))], word
            )

        parts = _CurlParts()
        if command:
            if not words or words[0] != "curl":
                self.error(loc, "only curl commands can be used; expected the request to start with 'curl'")
                return None
            words = words[1:]
        i = 0
        data: list[str] = []
        json_data: list[str] = []
        while i < len(words):
            word = words[i]
            i += 1
            if word.startswith("-") and len(word) > 1 and word != "--":
                if word[1] == _PROTECT_OPEN or (word.startswith("--") and _PROTECT_OPEN in word):
                    self.error(loc, f"{where}: curl option names cannot use templates ({restore(word)!r})")
                    return None
                # short options may be bundled (-sSL) or carry their value (-XPOST, -H'X: y')
                todo: list[tuple[str, str | None]] = []
                if word.startswith("--"):
                    todo.append((word, None))
                else:
                    k = 1
                    while k < len(word):
                        opt = "-" + word[k]
                        rest = word[k + 1 :]
                        if opt in _VALUED:
                            todo.append((opt, rest or None))
                            break
                        todo.append((opt, None))
                        k += 1
                for opt, inline in todo:
                    if opt in _VALUED:
                        if inline is None:
                            if i >= len(words):
                                self.error(loc, f"{where}: curl option {opt} needs a value")
                                return None
                            inline = words[i]
                            i += 1
                        if not self.curl_option(
                            parts, opt, restore(inline), loc, declared, where, data, json_data
                        ):
                            return None
                    elif opt in _FLAGS:
                        setattr(parts, _FLAGS[opt], True)
                    elif opt in _NOOP_FLAGS:
                        continue
                    else:
                        self.error(loc, f"{where}: {_refusal(opt)}")
                        return None
                continue
            if word == "--":
                continue
            if not command:
                self.error(loc, f"options cannot name a URL ({restore(word)!r}); put it into url")
                return None
            if parts.url is not None:
                self.error(loc, "curl command names more than one URL; expected one request per line")
                return None
            parts.url = self.template(restore(word), loc, "URL", declared, allow_env=True)
            if parts.url is None:
                return None
        if data and json_data:
            self.error(loc, f"{where}: --json and --data cannot be mixed")
            return None
        if data:
            parts.data = "&".join(data)
        elif json_data:
            parts.data = "".join(json_data)
            parts.json = True
            if not any(h.key.lower() == "content-type" for h in parts.headers):
                parts.headers.append(self.literal_header("Content-Type", "application/json", loc))
            if not any(h.key.lower() == "accept" for h in parts.headers):
                parts.headers.append(self.literal_header("Accept", "application/json", loc))
        return parts

    def curl_option(
        self,
        parts: _CurlParts,
        opt: str,
        value: str,
        loc: Loc,
        declared: set[str],
        where: str,
        data: list[str],
        json_data: list[str],
    ) -> bool:
        role = _VALUED[opt]
        literal_roles = ("request", "proxy", "max-time", "connect-timeout")
        if role in literal_roles and "{{" in value:
            self.error(loc, f"{where}: the value of {opt} cannot use templates")
            return False
        if role == "request":
            method = value.strip().upper()
            if method not in METHODS:
                self.error(
                    loc, f"{where}: method {value!r} is not supported; expected one of {', '.join(METHODS)}"
                )
                return False
            parts.method = method
        elif role == "header":
            key, sep, rest = value.partition(":")
            if not sep:
                self.error(loc, f"{where}: header {value.split(';')[0]!r} has no ':'; expected 'Name: value'")
                return False
            spec = self.header(key.strip(), rest.strip(), loc, declared)
            if spec is None:
                return False
            parts.headers.append(spec)
        elif role in ("data", "data-raw"):
            if role == "data" and value.startswith("@"):
                self.error(
                    loc,
                    f"{where}: {opt} @file reads a file on the reconciler's machine; refused (as Keptn did)",
                )
                return False
            data.append(value)
        elif role == "json":
            if value.startswith("@"):
                self.error(loc, f"{where}: --json @file reads a file on the reconciler's machine; refused")
                return False
            json_data.append(value)
        elif role == "user":
            parts.user = self.template(value, loc, f"{opt} credentials", declared, allow_env=True)
            return parts.user is not None
        elif role == "user-agent":
            spec = self.header("User-Agent", value, loc, declared)
            if spec is None:
                return False
            parts.headers.append(spec)
        elif role == "url":
            if parts.url is not None:
                self.error(loc, "curl command names more than one URL; expected one request per line")
                return False
            parts.url = self.template(value, loc, "URL", declared, allow_env=True)
            return parts.url is not None
        elif role == "proxy":
            problem = _proxy_problem(value)
            if problem:
                self.error(loc, f"{where}: {problem}")
                return False
            parts.proxy = value
        elif role in ("max-time", "connect-timeout"):
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not 0 < seconds <= MAX_TIMEOUT:
                self.error(loc, f"{where}: {opt} {value!r}; expected seconds between 0 and {MAX_TIMEOUT:g}")
                return False
            if role == "max-time":
                parts.max_time = seconds
            else:
                parts.connect_timeout = seconds
        return True

    # -- fields -------------------------------------------------------------------------------------------

    def header(self, key: str, value: str, loc: Loc, declared: set[str]) -> HeaderSpec | None:
        if "{{" in key:
            self.error(loc, f"header name {key!r} cannot use templates; expected a literal name")
            return None
        if not HEADER_NAME.match(key):
            self.error(loc, f"header name {key!r} is not a valid HTTP header name")
            return None
        if key.lower() in RESERVED_HEADERS:
            self.error(loc, f"header {key} is set by the HTTP client; remove it")
            return None
        if not value:
            self.error(loc, f"header {key} has an empty value (Keptn refused those too)")
            return None
        tf = self.template(value, loc, f"header {key}", declared, allow_env=True)
        return HeaderSpec(key, tf) if tf is not None else None

    def literal_header(self, key: str, value: str, loc: Loc) -> HeaderSpec:
        return HeaderSpec(
            key, TemplateField(value, wt.parse(value), loc, f"header {key}", self.doc.problem(loc, ""))
        )

    def template(
        self, text: str, loc: Loc, what: str, declared: set[str], *, allow_env: bool
    ) -> TemplateField | None:
        try:
            template = wt.parse(text)
        except wt.TemplateError as exc:
            hint = ""
            if self.in_curl and ("unclosed {{" in exc.message or "unexpected {{" in exc.message):
                hint = "; a {{if}}/{{with}}/{{range}} block must open and close inside one curl word"
            self.error(loc, f"{what}: {exc}{hint}")
            return None
        before = len(self.errors)
        for ref in template.references():
            self.reference(ref, loc, what, declared, allow_env=allow_env)
        if what == "URL" or what == "url":
            self.url_shape(template, loc)
        if len(self.errors) != before:
            return None
        return TemplateField(text, template, loc, what, self.doc.problem(loc, ""))

    def reference(
        self, ref: wt.Reference, loc: Loc, what: str, declared: set[str], *, allow_env: bool
    ) -> None:
        path = ref.path
        if not path:
            self.error(
                loc,
                f"{what}: {ref.source} would print the whole event and its secrets; name the fields "
                "you need, e.g. {{.data.project}}",
            )
            return
        root = path[0]
        if root == "env":
            if not allow_env:
                self.error(loc, f"{what}: secrets (.env) cannot be used here")
            elif len(path) == 1:
                self.error(
                    loc, f"{what}: {ref.source} names all secrets; expected one, e.g. {{{{.env.NAME}}}}"
                )
            elif ref.dynamic:
                self.error(loc, f"{what}: {ref.source}: a secret must be named literally")
            elif len(path) > 2:
                self.error(loc, f"{what}: {ref.source}: a secret is a string and has no fields")
            elif path[1] not in declared:
                known = ", ".join(sorted(declared)) or "none"
                self.error(
                    loc,
                    f"{what}: secret .env.{path[1]} is not declared in envFrom (declared: {known}); "
                    "expected an envFrom entry with this name",
                )
            return
        if not self.event_data:
            self.error(
                loc,
                f"{what}: {ref.source}: only secrets ({{{{.env.NAME}}}}) can be used here, not event fields",
            )
            return
        if root not in EVENT_ROOTS:
            hint = (
                " (Bridge wrote {{.secret.NAME.KEY}} as {{.env.NAME}} plus an envFrom entry)"
                if root == "secret"
                else ""
            )
            self.error(
                loc,
                f"{what}: unknown field .{root} in {ref.source}; expected .data..., .env.NAME or one of "
                f"{', '.join('.' + r for r in EVENT_ROOTS if r != 'data')}{hint}",
            )
            return
        if root != "data" and len(path) > 1:
            self.error(loc, f"{what}: .{root} is a string and has no field .{path[1]}")

    def url_shape(self, template: wt.Template, loc: Loc) -> None:
        """Event data may fill the path, query and fragment, never the scheme, host or port.

        Walks the URL's pieces: literal text up to the first '/', '?' or '#' after the
        scheme is the authority; an action there (or before it) must read secrets only.
        A URL that starts with a secret takes its scheme and host from it, and event
        data may follow only after a literal '/', '?' or '#'.
        """
        if template.has_blocks:
            self.error(
                loc, "URL cannot use {{if}}, {{with}} or {{range}}; put alternatives into separate webhooks"
            )
            return
        state = "start"  # -> "authority" (after scheme://) or "secret" (a secret opens the URL) -> "path"
        authority: list[str | None] = []  # None: a secret's share of the host
        for node in template.nodes:
            if isinstance(node, wt.Text):
                text = node.text
                if state == "start":
                    m = re.match(r"(?i)(https?)://", text)
                    if not m:
                        scheme = text.split("://", 1)[0] if "://" in text else ""
                        self.error(
                            loc,
                            f"URL scheme {scheme!r} is not supported; expected http:// or https://"
                            if scheme
                            else "URL must start with http:// or https:// (or with a secret holding the whole URL)",
                        )
                        return
                    state = "authority"
                    text = text[m.end() :]
                if state in ("authority", "secret"):
                    cuts = [text.find(c) for c in "/?#" if c in text]
                    cut = min(cuts) if cuts else -1
                    if state == "authority":
                        authority.append(text if cut < 0 else text[:cut])
                    if cut >= 0:
                        state = "path"
            elif isinstance(node, wt.Action) and state != "path":
                refs = [r.path[0] if r.path else "" for r in wt.action_references(node)]
                if not refs or any(r != "env" for r in refs):
                    self.error(
                        loc,
                        f"URL: {node.source} would let event data choose the scheme, host or port; "
                        "template only the path, query or fragment (after the host's first '/')",
                    )
                    return
                if state == "start":
                    state = "secret"
                    authority.append(None)
                elif state == "authority":
                    authority.append(None)
        if state == "start":
            self.error(loc, "URL is empty; expected http:// or https://")
        elif None not in authority:
            problem = _authority_problem("".join(a for a in authority if a is not None))
            if problem:
                self.error(loc, f"URL: {problem}")


def _authority_problem(authority: str) -> str | None:
    if not authority:
        return "URL has no host"
    if any(c in authority for c in " \t\r\n\\") or any(ord(c) < 0x20 for c in authority):
        return f"host {authority!r} contains spaces, backslashes or control characters"
    try:
        parts = urllib.parse.urlsplit("http://" + authority)
        port = parts.port
    except ValueError as exc:
        return f"host {authority!r} cannot be parsed ({exc})"
    if not parts.hostname:
        return f"URL has no host in {authority!r}"
    if port == 0:
        return "port 0 is not a port"
    return None


def _proxy_problem(value: str) -> str | None:
    parts = urllib.parse.urlsplit(value if "://" in value else "http://" + value)
    if parts.scheme != "http":
        return f"proxy {value!r}: only http:// proxies are supported"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"proxy {value!r} has an invalid port"
    if not parts.hostname:
        return f"proxy {value!r} has no host"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"proxy {value!r}: expected http://host:port"
    return None


def _looks_json(spec: RequestSpec) -> bool:
    """A payload is JSON when its Content-Type says so, or, without one, when it starts like JSON."""
    header = spec.header("Content-Type")
    if header is not None and header.value.is_literal:
        media = header.value.text.split(";", 1)[0].strip().lower()
        return media == "application/json" or media.endswith("+json")
    if header is not None:
        return False
    assert spec.payload is not None
    nodes = spec.payload.template.nodes
    first = nodes[0] if nodes else None
    return isinstance(first, wt.Text) and first.text.lstrip()[:1] in ("{", "[")


@dataclass
class _CurlParts:
    method: str | None = None
    url: TemplateField | None = None
    headers: list[HeaderSpec] = field(default_factory=list)
    data: str | None = None
    json: bool = False
    user: TemplateField | None = None
    proxy: str | None = None
    insecure: bool = False
    location: bool = False
    head: bool = False
    max_time: float | None = None
    connect_timeout: float | None = None


_VALUED = {
    "-X": "request",
    "--request": "request",
    "-H": "header",
    "--header": "header",
    "-d": "data",
    "--data": "data",
    "--data-ascii": "data",
    "--data-binary": "data",
    "--data-raw": "data-raw",
    "--json": "json",
    "-u": "user",
    "--user": "user",
    "--url": "url",
    "-A": "user-agent",
    "--user-agent": "user-agent",
    "-x": "proxy",
    "--proxy": "proxy",
    "-m": "max-time",
    "--max-time": "max-time",
    "--connect-timeout": "connect-timeout",
}
_FLAGS = {"-k": "insecure", "--insecure": "insecure", "-L": "location", "--location": "location"}
_FLAGS.update({"-I": "head", "--head": "head"})
_NOOP_FLAGS = frozenset(
    {
        "-s",
        "--silent",
        "-S",
        "--show-error",
        "-f",
        "--fail",
        "--fail-with-body",
        "-v",
        "--verbose",
        "-i",
        "--include",
        "--compressed",
        "-g",
        "--globoff",
        "--http1.1",
        "-N",
        "--no-buffer",
        "--no-progress-meter",
    }
)
"""Options that change only what curl prints or how it parses, not what is sent: accepted, no effect."""

_FILE_OPTIONS = frozenset(
    {
        "-o",
        "--output",
        "-O",
        "--remote-name",
        "-F",
        "--form",
        "-T",
        "--upload-file",
        "-K",
        "--config",
        "-b",
        "--cookie",
        "-c",
        "--cookie-jar",
        "-D",
        "--dump-header",
        "--unix-socket",
        "--abstract-unix-socket",
        "--netrc",
        "-n",
        "--netrc-file",
        "--cert",
        "-E",
        "--key",
        "--cacert",
        "--capath",
        "--trace",
        "--trace-ascii",
        "--stderr",
        "-w",
        "--write-out",
    }
)


def _refusal(opt: str) -> str:
    if opt in _FILE_OPTIONS:
        return f"curl option {opt} reads or writes files on the reconciler's machine; refused (Keptn refused -o, -F, -T, -K too)"
    supported = "-X, -H, -d/--data/--data-raw/--data-binary, --json, -u, --url, -A, -x/--proxy, -k, -L, -I, -m, --connect-timeout"
    return f"curl option {opt} is not supported; supported: {supported} (and -s, -S, -f, --fail-with-body, -v, -i)"
