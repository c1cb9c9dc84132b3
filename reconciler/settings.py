"""Settings: command-line flags > `RECONCILER_*` environment variables > config file > defaults.

One pydantic model, so every setting is typed, documented once (README
"Configuration" lists them from here) and validated before anything starts.
Secrets are `SecretStr`: they never print in reprs, logs or status output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from reconciler.core.localcommands import DEFAULT_LOCAL_COMMANDS

CONFIG_ENV = "RECONCILER_CONFIG"


def _config_file() -> Path | None:
    path = os.environ.get(CONFIG_ENV)
    return Path(path) if path else None


class Settings(BaseSettings):
    """Every knob of the reconciler. Env var = `RECONCILER_` + the upper-cased field name."""

    model_config = SettingsConfigDict(env_prefix="RECONCILER_", extra="ignore", populate_by_name=True)

    # --- upstream -------------------------------------------------------------------------
    upstream: str = Field(
        default="", description="Upstream git repository: path, file://, git://, http(s)://, ssh"
    )
    upstream_token: SecretStr | None = Field(default=None, description="Token for http(s) upstreams")
    upstream_token_file: Path | None = Field(
        default=None, description="File holding the token (mounted Secret)"
    )
    upstream_username: str | None = Field(
        default=None, description="User for basic auth (default with token: git)"
    )
    upstream_password: SecretStr | None = Field(default=None, description="Password for basic auth")
    upstream_ssh_key: Path | None = Field(default=None, description="Private key for ssh upstreams")
    upstream_known_hosts: Path | None = Field(default=None, description="known_hosts file for ssh upstreams")
    main_branch: str = Field(
        default="main", description="Branch holding shipyard.yaml (Keptn's default branch)"
    )
    project: str = Field(
        default="",
        description="Project name; default: metadata.yaml projectName, else shipyard metadata.name",
    )
    poll_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between polls. 30 s keeps a commit-to-trigger latency a person accepts while a "
        "no-op fetch costs a few ms; local upstreams are also watched and react within a second.",
    )
    poll_jitter: float = Field(default=0.1, ge=0, le=1, description="Random fraction added to each interval")
    backoff_max: float = Field(default=300.0, gt=0, description="Cap in seconds of the exponential backoff")
    watch: bool = Field(default=True, description="Watch a local upstream with watchdog")

    # --- data and ledger -------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path(".reconciler"), description="Ledger repository, upstream mirror, job state"
    )
    ledger_branch: str = Field(default="reconciler-ledger", description="Branch of the events ledger")
    ledger_push: Literal["auto", "always", "never"] = Field(
        default="auto", description="Push the ledger branch to the upstream (auto: when it is writable)"
    )
    ledger_push_interval: float = Field(
        default=10.0, description="Seconds between pushes of the ledger branch"
    )
    ledger_key_file: Path | None = Field(
        default=None,
        description="File holding the key that signs ledger commits (mounted Secret; e.g. `openssl rand -hex 32`); "
        "history recovered from the upstream must carry its signatures. Default: data_dir/ledger.key, created on "
        "first start (a new data directory then cannot verify an old upstream copy)",
    )

    # --- engine ------------------------------------------------------------------------------
    task_start_deadline: str = Field(default="10m", description="A task nobody starts within this times out")
    task_run_deadline: str = Field(
        default="2h", description="A started task that does not finish within this"
    )
    remediation_max_iterations: int = Field(
        default=10, ge=1, description="Cap of remediation rounds per context"
    )
    approval_dir: str = Field(default="approvals", description="Directory on main holding approval files")
    approval_authors: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="E-mail globs whose commits may approve by file: the commit's author and committer must "
        "both match (as the commit states them: not proof of identity). Comma-separated in the env var; "
        "empty = any author, recorded as unauthenticated",
    )
    approval_signers: Path | None = Field(
        default=None,
        description="allowed_signers file (ssh-keygen format, as git's gpg.ssh.allowedSignersFile): when set, "
        "only commits with an SSH signature by a key listed there approve by file, the signer recorded "
        "as the approver (needs ssh-keygen)",
    )

    # --- jobs ---------------------------------------------------------------------------------
    runner: Literal["auto", "local", "kubernetes"] = Field(
        default="auto",
        description="Where job/config.yaml tasks run: kubernetes (Jobs) or local (processes on this host); "
        "auto = kubernetes when a kubeconfig (kubeconfig, $KUBECONFIG, ~/.kube/config) or an in-cluster "
        "service account is found, else local",
    )
    job_namespace: str = Field(default="keptn-jobs", description="Namespace of Jobs whose task names none")
    job_service_account: str = Field(default="", description="Service account of Jobs whose task names none")
    allowed_images: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Image globs, comma-separated in the env var; empty = all allowed"
    )
    allow_privileged_jobs: bool = Field(default=False, description="Allow securityContext.privileged: true")
    job_task_deadline: int = Field(
        default=0,
        ge=0,
        description="Hard limit in seconds for every job task (Job activeDeadlineSeconds; JES's "
        "TASK_DEADLINE_SECONDS); 0 = only each task's maxPollDuration",
    )
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    job_workers: int = Field(
        default=16,
        ge=1,
        description="Job tasks (job/config.yaml actions) run at a time; more wait for a worker, and one "
        "still waiting at its start deadline times out and never runs. Approvals, evaluations and "
        "get-action have their own workers and never wait behind jobs",
    )
    local_commands: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_LOCAL_COMMANDS),
        description="Commands the local runner may start, comma-separated in the env var: each entry is the "
        "first words of a task's cmd and args (`locust` allows locust with any arguments); `*` allows any "
        "command. Anything else is refused by validation and at launch: whoever can push a stage branch can "
        "run what this allows, as the job user",
    )
    local_job_user: str = Field(
        default="nobody",
        description="User (name, uid or uid:gid) local jobs run as when the reconciler runs as root; it must "
        "be able to reach the installation and data_dir. `root` keeps jobs as root (every stage-branch pusher "
        "is then root on this host). Not root: jobs run as the reconciler's own user",
    )

    # --- evaluation -----------------------------------------------------------------------------
    prometheus_url: str = Field(default="http://127.0.0.1:9090", description="Default Prometheus endpoint")
    prometheus_urls: dict[str, str] = Field(
        default_factory=dict, description="Per project or project/stage endpoints, e.g. {'fulltour/qa': url}"
    )
    prometheus_user: str | None = Field(
        default=None, description="Basic-auth user for Prometheus (either this or prometheus_token, not both)"
    )
    prometheus_password: SecretStr | None = Field(
        default=None, description="Basic-auth password for Prometheus"
    )
    prometheus_token: SecretStr | None = Field(default=None, description="Bearer token for Prometheus")
    prometheus_timeout: float = Field(default=10.0, description="Seconds per Prometheus query")

    # --- HTTP API -----------------------------------------------------------------------------
    api_listen: str = Field(default="127.0.0.1:8080", description="host:port of the HTTP API and /metrics")
    api_token: SecretStr | None = Field(
        default=None,
        description="Token every /v1 route of the HTTP API requires (x-token or Bearer); without one the API refuses",
    )
    api_token_file: Path | None = Field(
        default=None, description="File holding the API token (mounted Secret)"
    )
    api_max_event_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=512 * 1024,
        description="Largest event POST /v1/event accepts, in bytes; larger ones are refused with 413 "
        "(Keptn events are a few KiB; the ledger takes at most 512 KiB)",
    )
    api_max_connections: int = Field(
        default=128,
        ge=1,
        description="Connections the HTTP API holds open at once; more are answered 503 at accept. Kept at "
        "most half of the descriptors left after 128 reserved for the ledger, git and jobs (the soft "
        "RLIMIT_NOFILE is raised to the hard one at start)",
    )
    api_read_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client may take to send a request's headers and body before the API closes the "
        "connection (408); idle keep-alive connections close after 5 s",
    )
    ui_public: bool = Field(
        default=False,
        description="Open the web view's read-only pages (/ui/) without the API token, e.g. a dashboard "
        "behind a cluster network; approving still needs the token",
    )
    # --- webhooks and notifications (webhook/webhook.yaml, notifications.yaml) ------------------
    webhook_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Destinations webhooks may reach although private or loopback: host names, "
        "`*.suffix` patterns, addresses or networks (e.g. `127.0.0.1`, `10.0.0.0/8`). Cloud metadata "
        "addresses stay refused",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks reach private networks (RFC 1918, CGNAT, IPv6 ULA) in general; loopback, "
        "link-local and metadata addresses stay refused unless listed in webhook_allow_hosts",
    )
    webhook_deny_hosts: list[str] = Field(
        default_factory=lambda: [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        description="Host names webhooks never reach unless listed exactly in webhook_allow_hosts (Keptn's "
        "deny-list: the Kubernetes API)",
    )
    webhook_max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per webhook request on a 5xx, 429 or timeout (exponential backoff between); "
        "a 2xx is never sent again",
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds one webhook request may take, connect to last byte"
    )
    web_url: str | None = Field(
        default=None,
        description="Public address of this reconciler's web view (e.g. https://reconciler.example.com), "
        "used for links in notifications; without it messages name the ledger commit only",
    )
    alert_title_source: str = Field(
        default="annotations.summary", description="Where problemTitle comes from"
    )
    alert_project_label: str = Field(default="project", description="Alert label naming the project")
    alert_stage_label: str = Field(default="stage", description="Alert label naming the stage")
    alert_service_label: str = Field(default="service", description="Alert label naming the service")

    # --- running in a cluster ----------------------------------------------------------------
    leader_election: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Elect one leader on a coordination.k8s.io/v1 Lease so replicas never both poll, dispatch "
        "or write; auto = on inside a Kubernetes pod. Off: a lock on the data directory keeps a second "
        "local process out",
    )
    lease_name: str = Field(default="reconciler-leader", description="Name of the leader-election Lease")
    lease_namespace: str = Field(
        default="", description="Namespace of the Lease; default: the pod's own namespace, else job_namespace"
    )
    lease_duration: float = Field(
        default=15.0, description="Seconds a standby waits for a silent leader before it takes over"
    )
    lease_renew_deadline: float = Field(
        default=10.0, description="Seconds a leader keeps trying to renew before it steps down"
    )
    lease_retry_period: float = Field(
        default=2.0, description="Seconds between renewals and takeover attempts"
    )
    leader_identity: str = Field(
        default="",
        description="Holder identity written in the Lease; default: host name plus a random suffix",
    )
    shutdown_grace: float = Field(
        default=25.0,
        gt=0,
        description="Seconds SIGTERM may take (stop intake, flush and push the ledger, release the Lease); "
        "keep it below the pod's terminationGracePeriodSeconds",
    )

    # --- logging -----------------------------------------------------------------------------
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto", description="auto: readable on a terminal, JSON lines otherwise"
    )
    log_level: str = Field(default="info", description="debug, info, warning or error")

    @field_validator(
        "allowed_images",
        "approval_authors",
        "local_commands",
        "webhook_allow_hosts",
        "webhook_deny_hosts",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().startswith("["):
            import json

            return json.loads(value)
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _one_prometheus_auth(self) -> Settings:
        """A request carries one Authorization header: with both set, one would be dropped
        without a word, and queries would fail with 401 for a reason nobody could see."""
        if self.prometheus_user and self.secret("prometheus_token"):
            raise ValueError(
                "prometheus_user (basic auth) and prometheus_token (bearer token) are both set; "
                "Prometheus gets one Authorization header: set only one of them"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def secret(self, name: str) -> str | None:
        """Resolve a secret from its value or its `_file` twin (a mounted Kubernetes Secret)."""
        value = getattr(self, name, None)
        if isinstance(value, SecretStr) and value.get_secret_value():
            return value.get_secret_value()
        path = getattr(self, f"{name}_file", None)
        if isinstance(path, Path) and path.is_file():
            return path.read_text().strip() or None
        return None

    def secret_values(self) -> list[str]:
        """Every secret this process knows, for the redaction processor."""
        out = []
        for name in (
            "upstream_token",
            "upstream_password",
            "prometheus_password",
            "prometheus_token",
            "api_token",
        ):
            value = self.secret(name)
            if value:
                out.append(value)
        return out


def describe_settings_error(exc: Exception) -> str:
    """One line per problem, naming the setting and never echoing its input: pydantic's own
    text repeats the input, which for a model-level check is every setting, tokens included."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Flags arrive as overrides; None means "not given on the command line"."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
