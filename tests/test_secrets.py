"""Secrets: every kind configured, used and refused, then every byte the reconciler wrote is scanned.

One reconciler runs a delivery that uses them all: an upstream served over smart
HTTP that demands a token (given in the URL; the CLI gets it from an env var, a
file, and a wrong one), a job whose env comes from a Secret and which prints it, a
Prometheus behind basic auth (with a bearer token configured too) and a second one
that refuses our credentials, and an HTTP API that needs its token. Afterwards the
ledger (every object, loose or packed), the ledger branch pushed to the upstream,
the mirror, the data directory, the captured log and process output, status.json,
`reconciler status`/`events`/`get sequences` output, `/metrics`, every API
answer (401s and 400s included) and every page of the web view (its sign-in answers
with their cookies too) are searched for each secret, also URL-quoted and
base64-encoded: none may appear.

Also here: the HTTP API and the Alertmanager webhook refuse a missing or wrong token
(compared with `hmac.compare_digest`) and refuse an over-size body with 413 before
reading it.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from reconciler.api import MAX_ALERT_BYTES, ApiServer, create_app, serve
from reconciler.app import App
from reconciler.cli import cli
from reconciler.ingress.submit import Ingress
from reconciler.ledger.gitledger import Ledger
from reconciler.settings import Settings
from reconciler.upstream.files import GitFiles
from reconciler.upstream.snapshot import snapshot_of
from tests.support.faults import CapturedLogs
from tests.support.gitserver import SmartHttp, UpstreamRepo
from tests.support.prometheus import PrometheusFactory
from tests.support.receivers import Receiver, closed_port, receiving
from tests.support.shop import deploy, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

UPSTREAM_TOKEN = "ghp_up8Kq2ZrT5vW9xY3mN"
WRONG_UPSTREAM_TOKEN = "ghp_wrongZ9Lm2Xc7Vb4Q"
API_TOKEN = "api-tok-5d1e9a77c0b3"
WRONG_API_TOKEN = "api-wrong-88aa33ff11"
JOB_SECRET = "job-secret-41f0c2b9e7"
NOTIFY_SECRET = "hook-tok-7c2e19ab05d4"
PROMETHEUS_USER = "reconciler"
PROMETHEUS_PASSWORD = "prom-pw-3b9f1c7d"
PROMETHEUS_HASH = "$2b$04$Qm9vT3JhY2xlU2FsdDEyMufvBch.HFLoWtPWetHTniq5KHF9M82nK"  # bcrypt, cost 4
OTHER_PROMETHEUS_PASSWORD = "s3cret-pass"  # what the refusing Prometheus wants instead
OTHER_PROMETHEUS_HASH = "$2b$04$.29QbOdZWJFTL2JKcdI24O3e89UxX/Hw1f9cUpLjf8GROXEMUsg2K"

SECRETS = {
    "upstream token": UPSTREAM_TOKEN,
    "wrong upstream token": WRONG_UPSTREAM_TOKEN,
    "API token": API_TOKEN,
    "wrong API token": WRONG_API_TOKEN,
    "job secret": JOB_SECRET,
    "notification token": NOTIFY_SECRET,
    "Prometheus password": PROMETHEUS_PASSWORD,
}


def forms(value: str) -> list[bytes]:
    """The secret as it could leak: raw, URL-quoted, base64 alone and as a basic-auth pair."""
    raw = value.encode()
    out = [raw, quote(value, safe="").encode(), base64.b64encode(raw).rstrip(b"=")]
    for user in ("git", PROMETHEUS_USER, "x-access-token", ""):
        out.append(base64.b64encode(f"{user}:{value}".encode()).rstrip(b"="))
    return out


class Scan:
    """Everything the reconciler wrote or answered, by where it came from."""

    def __init__(self) -> None:
        self.places: dict[str, bytes] = {}

    def add(self, where: str, data: bytes | str) -> None:
        blob = data.encode() if isinstance(data, str) else data
        assert blob, f"nothing to scan in {where}: the scan would prove nothing"
        self.places[where] = self.places.get(where, b"") + blob

    def add_git(self, where: str, repo: Path) -> None:
        """Every object of a repository (loose and packed, decompressed) and every other file in it."""
        objects = subprocess.run(
            ["git", "--git-dir", str(repo), "cat-file", "--batch-all-objects", "--batch"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        self.add(f"{where} objects", objects)
        for path in sorted(repo.rglob("*")):
            if path.is_file() and "objects" not in path.relative_to(repo).parts:
                self.add(f"{where} {path.relative_to(repo)}", path.read_bytes() or b"\n")

    def add_tree(self, where: str, root: Path, *, skip: Callable[[Path], bool]) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not skip(path.relative_to(root)):
                self.add(f"{where} {path.relative_to(root)}", path.read_bytes() or b"\n")

    def hits(self, secrets: dict[str, str] | None = None) -> list[tuple[str, str]]:
        return [
            (name, where)
            for where, blob in self.places.items()
            for name, value in (SECRETS if secrets is None else secrets).items()
            if any(form in blob for form in forms(value))
        ]

    def size(self) -> int:
        return sum(len(b) for b in self.places.values())


SHIPYARD = shipyard(
    stage("qa", sequence("delivery", task("deploy"), task("evaluation", timeframe="5m"))),
    stage(
        "production",
        sequence("delivery", task("evaluation", timeframe="5m"), triggered_on="qa.delivery.finished"),
    ),
)

JOB = """\
apiVersion: v2
actions:
  - name: deploy
    events:
      - name: sh.keptn.event.deploy.triggered
    tasks:
      - name: show the secret
        image: busybox:1.36
        cmd: [sh, -c]
        args: ['echo "token is $TOKEN"; echo "stderr has $TOKEN too" >&2; echo "url https://bot:$TOKEN@example.com"']
        env:
          - {name: registry, valueFrom: secret}
"""

SLI = 'spec_version: "1.0"\nindicators:\n  response_time: vector(0.2)\n'
SLO = """\
spec_version: "1.0"
objectives:
  - sli: response_time
    pass:
      - criteria: ["<=0.5"]
total_score: {pass: "90%", warning: "75%"}
"""

NOTIFICATIONS = """\
apiVersion: reconciler/v1
kind: Notifications
spec:
  envFrom:
    - name: hookToken
      secretRef: {name: hooks, key: token}
  targets:
    - name: audit
      kind: generic
      url: RECEIVER/news
      events: [sequence.finished, evaluation.failed]
      headers: [{key: Authorization, value: "Bearer {{.env.hookToken}}"}]
    - name: gone
      kind: slack
      url: http://127.0.0.1:CLOSED/services/{{.env.hookToken}}
      events: [sequence.finished]
"""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[[Settings], App]]:
    apps: list[App] = []

    def start(settings: Settings) -> App:
        app = App(settings).start()
        threading.Thread(target=app.run_forever, daemon=True, name="app-loop").start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop(grace=5)


@pytest.fixture
def news_sink() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


def cli_output(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(cli, list(args), env={"RECONCILER_CONFIG": "", **(env or {})})
    return f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception or ''}"


@pytest.mark.timeout(180)
def test_no_secret_reaches_the_ledger_logs_status_metrics_or_api_answers(
    prometheus_factory: PrometheusFactory,
    git_http_factory: Callable[..., SmartHttp],
    captured_logs: CapturedLogs,
    capfd: pytest.CaptureFixture[str],
    running: Callable[[Settings], App],
    news_sink: Receiver,
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
) -> None:
    files = {"web/job/config.yaml": JOB, "web/slo.yaml": SLO, "web/prometheus/sli.yaml": SLI}
    seed_shop(upstream_repo, SHIPYARD, stages=("qa", "production"), files=files)
    # delivery news: a sink that needs a token in a header, and one that is gone with the token in its URL
    sink = news_sink
    news = NOTIFICATIONS.replace("RECEIVER", sink.url).replace("CLOSED", str(closed_port()))
    upstream_repo.commit("main", {"notifications.yaml": news}, "delivery news")
    server = git_http_factory(token=UPSTREAM_TOKEN)
    clean_url = server.url("project.git")
    prometheus = prometheus_factory.start(
        web_config=f"basic_auth_users:\n  {PROMETHEUS_USER}: '{PROMETHEUS_HASH}'\n",
        auth=(PROMETHEUS_USER, PROMETHEUS_PASSWORD),
    )
    refusing = prometheus_factory.start(
        web_config=f"basic_auth_users:\n  {PROMETHEUS_USER}: '{OTHER_PROMETHEUS_HASH}'\n",
        auth=(PROMETHEUS_USER, OTHER_PROMETHEUS_PASSWORD),
    )
    data = tmp_path / "data"
    (data / "secrets" / "registry").mkdir(parents=True)
    (data / "secrets" / "registry" / "TOKEN").write_text(JOB_SECRET + "\n")
    (data / "secrets" / "hooks").mkdir(parents=True)
    (data / "secrets" / "hooks" / "token").write_text(NOTIFY_SECRET + "\n")

    settings = Settings(
        upstream=clean_url.replace("http://", f"http://{UPSTREAM_TOKEN}@"),  # a token pasted into the URL
        data_dir=data,
        poll_interval=0.3,
        watch=False,
        runner="local",
        local_commands=["sh"],
        ledger_push="auto",  # the upstream takes our branch: pushed with the token
        ledger_push_interval=0.5,
        api_listen="127.0.0.1:0",
        api_token=SecretStr(API_TOKEN),
        prometheus_url=prometheus.url,
        prometheus_urls={"shop/production": refusing.url},
        prometheus_user=PROMETHEUS_USER,
        prometheus_password=SecretStr(PROMETHEUS_PASSWORD),
        leader_election="off",
        webhook_allow_hosts=["127.0.0.1"],
    )
    app = running(settings)
    assert app.api is not None
    api = httpx.Client(base_url=app.api.url, timeout=30)
    scan = Scan()
    # the web view: a wrong and the right token at its sign-in form; the browser keeps the cookie
    browser = httpx.Client(base_url=app.api.url, timeout=30)
    for given, expected in ((WRONG_API_TOKEN, 401), (API_TOKEN, 303)):
        signed = browser.post("/ui/login", data={"token": given, "next": "/ui/"})
        assert signed.status_code == expected
        scan.add(f"UI sign-in answer ({expected})", json.dumps(dict(signed.headers)) + signed.text)

    # a delivery that uses every secret: the job prints its Secret, qa's gate queries with basic auth,
    # production's Prometheus refuses our credentials
    deploy(upstream_repo, "2.0")
    ledger = Ledger(data / "ledger.git", settings.ledger_branch)

    def finished(type_: str) -> list[Any]:
        ledger.refresh()
        return [e for e in ledger.events() if e.type == type_]

    wait_for(lambda: finished("sh.keptn.event.production.delivery.finished"), what="both stages")
    [deployed] = finished("sh.keptn.event.deploy.finished")
    assert deployed.result == "pass" and "token is ***" in deployed.data["message"], deployed.data
    [qa_gate, production_gate] = finished("sh.keptn.event.evaluation.finished")
    assert qa_gate.result == "pass", qa_gate.data
    assert production_gate.result == "fail" and "401" in json.dumps(production_gate.data)

    # the upstream starts refusing our token for a while: an authentication error in status and log
    server.token = "rotated-elsewhere"
    wait_for(lambda: app.status()["upstream"]["authenticated"] is False, what="the refused token in status")
    scan.add("status while the token is refused", json.dumps(app.status(), default=str))
    refused_page = browser.get("/ui/upstream")
    assert refused_page.status_code == 200 and "backing-off" in refused_page.text
    scan.add("UI upstream page while the token is refused", refused_page.content)
    server.token = UPSTREAM_TOKEN
    wait_for(lambda: app.status()["upstream"]["authenticated"] is True, what="the token accepted again")

    # the API: without, with a wrong, and with the token; a refused body that carries secrets
    for headers in ({}, {"x-token": WRONG_API_TOKEN}, {"authorization": f"Bearer {WRONG_API_TOKEN}"}):
        for method, route in (("POST", "/v1/event"), ("POST", "/v1/alertmanager"), ("GET", "/v1/status")):
            answer = api.request(method, route, headers=headers, content=b"{}")
            assert answer.status_code == 401
            scan.add(f"API {method} {route} {sorted(headers)}", answer.content)
    good = {"x-token": API_TOKEN}
    hostile_event = {
        "type": f"sh.keptn.event..{API_TOKEN}.{UPSTREAM_TOKEN}",
        "source": JOB_SECRET,
        "data": {"project": "shop", "token": PROMETHEUS_PASSWORD},
    }
    refused = api.post("/v1/event", headers=good, content=json.dumps(hostile_event).encode())
    assert refused.status_code == 400
    scan.add("API 400 answer", refused.content)
    for route in ("/v1/status", "/v1/sequences", "/metrics", "/readyz", "/healthz"):
        answer = api.get(route, headers=good)
        assert answer.status_code == 200, (route, answer.text)
        scan.add(f"API GET {route}", answer.content)
    assert b"reconciler_sequences_finished_total" in scan.places["API GET /metrics"]
    for route in (
        "/ui/",
        "/ui/sequences",
        f"/ui/context/{deployed.shkeptncontext}",
        "/ui/evaluations?stage=qa&service=web",
        "/ui/evaluations?stage=production&service=web",
        "/ui/approvals",
        "/ui/upstream",
        "/ui/version",
    ):
        page = browser.get(route)
        assert page.status_code == 200, (route, page.text[:300])
        scan.add(f"UI GET {route}", page.content)
    shown = scan.places[f"UI GET /ui/context/{deployed.shkeptncontext}"]
    assert b"token is ***" in shown  # the job printed its Secret: the page has the ledger's redacted text

    # the CLI against the running reconciler's data directory and against the upstream
    data_dir = str(data)
    scan.add("status.json", (data / "status.json").read_bytes())
    for args in (
        ("status",),
        ("status", "--output", "json"),
        ("events",),
        ("events", "--output", "json"),
        ("get", "sequences"),
        ("get", "sequences", "--output", "json"),
    ):
        scan.add(f"reconciler {' '.join(args)}", cli_output(*args, "--data-dir", data_dir))
    token_file = tmp_path / "upstream-token"
    token_file.write_text(UPSTREAM_TOKEN + "\n")
    validated = cli_output("validate", clean_url, env={"RECONCILER_UPSTREAM_TOKEN_FILE": str(token_file)})
    assert validated.startswith("exit 0"), validated
    scan.add("reconciler validate (token file)", validated)
    refused_cli = cli_output("validate", clean_url, env={"RECONCILER_UPSTREAM_TOKEN": WRONG_UPSTREAM_TOKEN})
    assert not refused_cli.startswith("exit 0") and "credentials" in refused_cli.lower(), refused_cli
    scan.add("reconciler validate (wrong token)", refused_cli)
    embedded = cli_output("validate", clean_url.replace("http://", f"http://{WRONG_UPSTREAM_TOKEN}@"))
    scan.add("reconciler validate (wrong token in the URL)", embedded)

    # the news reached the sink with the token in its header, and only there; the gone sink failed
    wait_for(lambda: len(sink.seen) >= 2, what="both stages' news at the sink")
    wait_for(lambda: "notifications: gone" in app.status()["problems"], what="the gone sink on the board")
    for seen in sink.seen:
        assert seen.header("Authorization") == f"Bearer {NOTIFY_SECRET}"
        scan.add("notification sink (path and body)", seen.path + "\n" + seen.body.decode())
    scan.add("status with a failing notification target", json.dumps(app.status(), default=str))

    wait_for(lambda: upstream_repo.tip(settings.ledger_branch) == ledger.tip, what="the ledger pushed")
    app.stop(grace=5)

    scan.add_git("ledger", data / "ledger.git")
    scan.add_git("ledger branch in the upstream", upstream_repo.path)
    scan.add_git("upstream mirror", data / "upstream.git")
    # the data directory, except the Secret files themselves and each job's own sandbox (its
    # pod-like spec with the env it was given, its staged files and its raw output)
    scan.add_tree(
        "data dir",
        data,
        skip=lambda p: p.parts[0] == "secrets" or (p.parts[0] == "jobs" and len(p.parts) > 2),
    )
    sandboxes = b"".join(p.read_bytes() for p in (data / "jobs").rglob("*") if p.is_file())
    assert JOB_SECRET.encode() in sandboxes, "the job really had and printed its secret (the scan can see it)"
    scan.add("log", captured_logs.text())
    out, err = capfd.readouterr()
    scan.add("process output", out + err + "\n")
    assert '"ledger.pushed"' in captured_logs.text() and '"upstream.fetch_failed"' in captured_logs.text()

    print(
        f"\nsecret scan: {len(SECRETS)} secrets x {len(scan.places)} places, {scan.size()} bytes, "
        f"{len(scan.hits())} found",
        file=sys.stderr,
    )
    assert scan.hits() == []


WEBHOOK_TOKEN = "wh-bearer-9e41c07a55d2"
WEBHOOK_PATH_SECRET = "T0WEBHOOK/B0PATH/xYz8812"
WEBHOOK_SECRETS = {"webhook bearer token": WEBHOOK_TOKEN, "webhook URL secret": WEBHOOK_PATH_SECRET}


def webhook_task_yaml(url: str, task_name: str) -> str:
    return (
        "apiVersion: webhookconfig.keptn.sh/v1beta1\nkind: WebhookConfig\nspec:\n  webhooks:\n"
        f"    - type: sh.keptn.event.{task_name}.triggered\n      sendFinished: true\n"
        "      envFrom:\n"
        "        - {name: token, secretRef: {name: ci, key: token}}\n"
        "        - {name: path, secretRef: {name: ci, key: path}}\n"
        f"      requests:\n        - url: {url}/hooks/{{{{.env.path}}}}\n          method: POST\n"
        '          headers:\n            - {key: Authorization, value: "Bearer {{.env.token}}"}\n'
        '          payload: \'{"service": "{{.data.service}}"}\'\n'
    )


@pytest.mark.timeout(120)
def test_webhook_secrets_reach_the_receiver_and_nothing_else(
    captured_logs: CapturedLogs,
    capfd: pytest.CaptureFixture[str],
    running: Callable[[Settings], App],
    upstream_repo: UpstreamRepo,
    tmp_path: Path,
) -> None:
    """Secrets from the data directory's store go into a webhook's header and URL; receivers that echo
    them back (in a 2xx body and in a 500's body) do not put them into the ledger, the log, status,
    metrics or the CLI's output, and neither does a refused destination's message."""
    from reconciler.executors.webhook import WebhookExecutor
    from reconciler.formats.events import KeptnEvent
    from reconciler.upstream.files import DirectoryFiles
    from tests.support.context import MemoryContext
    from tests.support.receivers import Answer, receiving

    echo = f"got Authorization: Bearer {WEBHOOK_TOKEN} for /hooks/{WEBHOOK_PATH_SECRET}".encode()
    with receiving(Answer(200, echo)) as ok, receiving(Answer(500, echo)) as failing:
        files = {
            "web/webhook/webhook.yaml": webhook_task_yaml(ok.url, "notify"),
            "webhook/webhook.yaml": webhook_task_yaml(failing.url, "e2e-test"),
        }
        seed_shop(
            upstream_repo,
            shipyard(stage("qa", sequence("delivery", task("notify"), task("e2e-test")))),
            files=files,
        )
        data = tmp_path / "data"
        (data / "secrets" / "ci").mkdir(parents=True)
        (data / "secrets" / "ci" / "token").write_text(WEBHOOK_TOKEN + "\n")
        (data / "secrets" / "ci" / "path").write_text(WEBHOOK_PATH_SECRET)
        settings = Settings(
            upstream=str(upstream_repo.path),
            data_dir=data,
            poll_interval=0.3,
            watch=False,
            runner="local",
            ledger_push="never",
            api_listen="127.0.0.1:0",
            api_token=SecretStr(API_TOKEN),
            webhook_allow_hosts=["127.0.0.1"],
            webhook_max_attempts=2,
            webhook_timeout=2.0,
            leader_election="off",
        )
        app = running(settings)
        assert app.api is not None
        deploy(upstream_repo, "2.0")
        ledger = Ledger(data / "ledger.git", settings.ledger_branch)

        def finished(type_: str) -> list[Any]:
            ledger.refresh()
            return [e for e in ledger.events() if e.type == type_]

        [done] = wait_for(lambda: finished("sh.keptn.event.qa.delivery.finished"), what="the delivery")
        # the secrets really went out: the header and the URL
        for receiver in (ok, failing):
            [seen] = receiver.seen[:1]
            assert seen.header("Authorization") == f"Bearer {WEBHOOK_TOKEN}"
            assert seen.path == f"/hooks/{WEBHOOK_PATH_SECRET}"
        assert done.result == "fail"
        [answered] = finished("sh.keptn.event.e2e-test.finished")
        assert "HTTP 500" in answered.data["message"] and "Bearer ***" in answered.data["message"]
        scan = Scan()
        scan.add("status while the webhook fails", json.dumps(app.status(), default=str))
        assert any(p.startswith("webhook ") for p in app.status()["problems"])
        api = httpx.Client(base_url=app.api.url, timeout=30)
        for route in ("/v1/status", "/v1/sequences", "/metrics"):
            answer = api.get(route, headers={"x-token": API_TOKEN})
            assert answer.status_code == 200
            scan.add(f"API GET {route}", answer.content)
        for args in (("status",), ("events", "--output", "json"), ("get", "sequences")):
            scan.add(f"reconciler {' '.join(args)}", cli_output(*args, "--data-dir", str(data)))
        app.stop(grace=5)

        # a refused destination with a secret in its URL: its message shows the URL masked
        hidden = tmp_path / "hidden"
        (hidden / "qa" / "web" / "webhook").mkdir(parents=True)
        (hidden / "main").mkdir()
        secret_host = webhook_task_yaml("http://10.9.8.7", "notify")
        (hidden / "qa" / "web" / "webhook" / "webhook.yaml").write_text(secret_host)
        ctx = MemoryContext(files=DirectoryFiles(hidden), settings=settings)
        trigger = KeptnEvent(
            id="5e0b7c1a-0000-4000-8000-0000000000aa",
            source="shipyard-controller",
            type="sh.keptn.event.notify.triggered",
            time="2026-01-01T00:00:00.000Z",
            shkeptncontext="5e0b7c1a-0000-4000-8000-0000000000cc",
            data={"project": "shop", "stage": "qa", "service": "web"},
        )
        refused = WebhookExecutor().run(trigger, ctx, started=False)
        scan.add("refused destination answer", "".join(e.to_json() for e in ctx.recorded) + repr(refused))
        assert "10.9.8.7 is a private address" in repr(refused) and "/hooks/***" in repr(refused)

    scan.add_git("ledger", data / "ledger.git")
    scan.add_tree("data dir", data, skip=lambda p: p.parts[0] == "secrets")
    scan.add("log", captured_logs.text())
    out, err = capfd.readouterr()
    scan.add("process output", out + err + "\n")
    assert scan.hits(WEBHOOK_SECRETS) == []


# ----------------------------------------------------------------------------- the API's door


@pytest.fixture
def api_server(tutorial_data_dir: Path) -> Iterator[tuple[ApiServer, Ledger]]:
    ledger = Ledger(tutorial_data_dir / "ledger.git", "reconciler-ledger")
    ingress = Ingress(
        ledger=ledger, view=snapshot_of(GitFiles(tutorial_data_dir / "upstream.git")), project="fulltour"
    )
    server = serve(create_app(ingress, token=API_TOKEN), "127.0.0.1:0")
    try:
        yield server, ledger
    finally:
        server.stop()


def raw_request(
    server: ApiServer, head: bytes, body: bytes = b"", timeout: float = 10.0
) -> tuple[int, bytes]:
    """Send bytes on a socket and read the answer: the server is not given the body it was promised."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b'"message"' in b"".join(chunks):
                    break
        except TimeoutError:
            pass
    answer = b"".join(chunks)
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.timeout(30)
@pytest.mark.parametrize("route", ["/v1/event", "/v1/alertmanager"])
def test_a_declared_over_size_body_is_refused_with_413_before_it_is_sent(
    api_server: tuple[ApiServer, Ledger], route: str
) -> None:
    server, ledger = api_server
    head = (
        f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-token: {API_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()
    status, answer = raw_request(server, head, b'{"type": ')  # 9 of the 50 MiB promised ever arrive
    assert status == 413 and b"at most" in answer
    assert list(ledger.events()) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("route", "limit"), [("/v1/event", 512 * 1024), ("/v1/alertmanager", MAX_ALERT_BYTES)]
)
def test_a_streamed_body_beyond_the_limit_is_refused_with_413(
    api_server: tuple[ApiServer, Ledger], route: str, limit: int
) -> None:
    server, ledger = api_server

    def chunks() -> Iterator[bytes]:
        yield b'{"data": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    response = httpx.post(
        f"{server.url}{route}", content=chunks(), headers={"x-token": API_TOKEN}, timeout=30
    )
    assert response.status_code == 413 and "exceeds" in response.json()["message"]
    assert list(ledger.events()) == []


@pytest.mark.parametrize("route", ["/v1/event", "/v1/alertmanager", "/v1/sequence/fulltour/c/control"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-token": WRONG_API_TOKEN},
        {"authorization": f"Bearer {WRONG_API_TOKEN}"},
        {"x-token": API_TOKEN[:-1]},
        {"x-token": API_TOKEN + "x"},
        {"authorization": f"Basic {API_TOKEN}"},
    ],
    ids=["none", "wrong", "wrong-bearer", "prefix", "longer", "basic"],
)
def test_the_api_and_the_webhook_refuse_requests_without_the_token(
    api_server: tuple[ApiServer, Ledger], route: str, headers: dict[str, str]
) -> None:
    server, ledger = api_server
    response = httpx.post(f"{server.url}{route}", content=b'{"state": "abort"}', headers=headers, timeout=10)
    assert response.status_code == 401 and response.json()["code"] == 401
    assert API_TOKEN not in response.text
    assert list(ledger.events()) == []


def test_the_token_is_compared_in_constant_time(
    api_server: tuple[ApiServer, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check goes through hmac.compare_digest, whose time does not depend on where bytes differ."""
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the API looks it up on the module at each request
    server, _ = api_server
    for route in ("/v1/event", "/v1/alertmanager"):
        assert (
            httpx.post(
                f"{server.url}{route}", content=b"{}", headers={"x-token": WRONG_API_TOKEN}
            ).status_code
            == 401
        )
        assert (
            httpx.post(f"{server.url}{route}", content=b"{}", headers={"x-token": API_TOKEN}).status_code
            == 400
        )
    assert (
        calls
        == [(WRONG_API_TOKEN.encode(), API_TOKEN.encode()), (API_TOKEN.encode(), API_TOKEN.encode())] * 2
    )
