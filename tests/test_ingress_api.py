"""The HTTP API served by uvicorn on 127.0.0.1, over a real git ledger and the tutorial's upstream."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from reconciler.api import ApiServer, app_from_settings, create_app, serve
from reconciler.cli import cli
from reconciler.core.engine_state import CONTROLLER
from reconciler.formats.events import KeptnEvent, derived_id, task_type
from reconciler.ingress.submit import Ingress
from reconciler.ledger.gitledger import Ledger
from reconciler.upstream.files import GitFiles
from reconciler.upstream.snapshot import snapshot_of
from tests.support.events import now_text
from tests.support.ingress import sequence_started

TOKEN = "s3cret-token-for-tests"
DATA = Path(__file__).parent / "data" / "ingress"


class Api:
    def __init__(self, server: ApiServer, ingress: Ingress, ledger: Ledger) -> None:
        self.server = server
        self.ingress = ingress
        self.ledger = ledger
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def post(self, path: str, body: Any, *, token: str | None = TOKEN, **headers: str) -> httpx.Response:
        if token is not None:
            headers.setdefault("x-token", token)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(path, content=content, headers={"content-type": "application/json", **headers})

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params, headers={"x-token": TOKEN})

    def events(self) -> list[KeptnEvent]:
        self.ledger.refresh()
        return list(self.ledger.events())


def start_api(data_dir: Path, token: str | None = TOKEN, **kw: Any) -> tuple[ApiServer, Ingress, Ledger]:
    ledger = Ledger(data_dir / "ledger.git", "reconciler-ledger")
    view = snapshot_of(GitFiles(data_dir / "upstream.git"))
    ingress = Ingress(ledger=ledger, view=view, project="fulltour")
    server = serve(create_app(ingress, token=token, **kw), "127.0.0.1:0")
    return server, ingress, ledger


@pytest.fixture
def api(tutorial_data_dir: Path) -> Iterator[Api]:
    server, ingress, ledger = start_api(
        tutorial_data_dir, ready=lambda: (False, ["no upstream accepted yet"])
    )
    client = Api(server, ingress, ledger)
    try:
        yield client
    finally:
        client.http.close()
        server.stop()


def fake_problem() -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((DATA / "remediation_trigger.json").read_text())
    return obj


def test_post_event_records_it_and_returns_the_keptn_context(api: Api) -> None:
    response = api.post("/v1/event", fake_problem())
    assert response.status_code == 200, response.text
    body = response.json()
    [event] = api.events()
    assert body == {"keptnContext": event.shkeptncontext, "id": event.id}
    uuid.UUID(body["keptnContext"])


def test_keptn_api_rewrites_id_and_time_keeps_uuid_context_and_derives_others(api: Api) -> None:
    given = str(uuid.uuid4())
    first = api.post(
        "/v1/event",
        {**fake_problem(), "id": "caller-id", "time": "2020-01-01T00:00:00Z", "shkeptncontext": given},
    )
    named = api.post("/v1/event", {**fake_problem(), "shkeptncontext": "incident-42"})
    no_source = {k: v for k, v in fake_problem().items() if k != "source"}
    anonymous = api.post("/v1/event", no_source)
    assert first.json()["keptnContext"] == given
    assert named.json()["keptnContext"] == str(uuid.UUID(bytes=b"incident-42     ", version=4))
    recorded = {e.shkeptncontext: e for e in api.events()}
    assert recorded[given].id != "caller-id" and not recorded[given].time.startswith("2020")
    assert recorded[anonymous.json()["keptnContext"]].source == "https://github.com/keptn/keptn/api"


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-token": "wrong"}, {"authorization": "Bearer wrong"}, {"authorization": "Basic " + TOKEN}],
    ids=["none", "wrong-x-token", "wrong-bearer", "not-bearer"],
)
def test_requests_without_the_right_token_are_refused_and_record_nothing(
    api: Api, headers: dict[str, str]
) -> None:
    response = api.post("/v1/event", fake_problem(), token=None, **headers)
    assert response.status_code == 401
    assert response.json()["code"] == 401 and "x-token" in response.json()["message"]
    assert TOKEN not in response.text
    assert api.http.get("/v1/sequences", headers=headers).status_code == 401
    assert api.events() == []


def test_bearer_token_works_like_x_token(api: Api) -> None:
    response = api.post("/v1/event", fake_problem(), token=None, authorization=f"Bearer {TOKEN}")
    assert response.status_code == 200


def test_api_without_a_configured_token_refuses_writes(tutorial_data_dir: Path) -> None:
    server, _, ledger = start_api(tutorial_data_dir, token=None)
    try:
        response = httpx.post(f"{server.url}/v1/event", json=fake_problem(), headers={"x-token": "anything"})
        assert response.status_code == 401 and "no token configured" in response.json()["message"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        server.stop()
    assert list(ledger.events()) == []


def test_oversized_or_malformed_or_refused_bodies_get_a_4xx_with_the_reason(api: Api) -> None:
    big = api.post("/v1/event", b"{" + b" " * (600 * 1024) + b"}")
    assert big.status_code == 413 and "at most" in big.json()["message"]
    chunked = api.http.post(
        "/v1/event",
        content=iter([b"{", b" " * (600 * 1024), b"}"]),
        headers={"x-token": TOKEN, "content-type": "application/json"},
    )
    assert chunked.status_code == 413
    broken = api.post("/v1/event", b"{nope")
    assert broken.status_code == 400 and broken.json()["message"].startswith("api: not valid JSON")
    wrong_stage = api.post(
        "/v1/event", {**fake_problem(), "type": "sh.keptn.event.staging.remediation.triggered"}
    )
    assert wrong_stage.status_code == 400
    assert "data.stage 'production' does not match the stage 'staging'" in wrong_stage.json()["message"]
    assert api.events() == []


def test_health_readiness_and_read_only_views(api: Api) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["reasons"] == ["no upstream accepted yet"]
    context = api.post("/v1/event", fake_problem()).json()["keptnContext"]
    rows = api.get("/v1/sequences", context=context).json()["sequences"]
    assert [(r["stage"], r["sequence"], r["state"]) for r in rows] == [
        ("production", "remediation", "waiting")
    ]
    status = api.get("/v1/status").json()
    assert status["project"] == "fulltour" and status["stages"] == ["qa", "production"]
    assert status["sequences"] == {"waiting": 1}
    assert api.http.post("/v1/sequences", headers={"x-token": TOKEN}).status_code == 405
    schema = api.http.get("/openapi.json").json()
    assert {"/v1/event", "/v1/alertmanager", "/v1/sequences", "/v1/status", "/healthz", "/readyz"} <= set(
        schema["paths"]
    )


def open_approval(api: Api) -> KeptnEvent:
    """A production.delivery waiting at a manual approval, as the engine and approval-service record it."""
    context = api.post(
        "/v1/event",
        {
            "type": "sh.keptn.event.production.delivery.triggered",
            "source": "test",
            "data": {"project": "fulltour", "stage": "production", "service": "helloservice"},
        },
    ).json()["keptnContext"]
    trigger = api.events()[-1]
    started = sequence_started(trigger)
    approval = KeptnEvent(
        id=derived_id(trigger.id, "task", "0"),
        source=CONTROLLER,
        type=task_type("approval", "triggered"),
        shkeptncontext=context,
        sequencetriggeredid=trigger.id,
        data={"project": "fulltour", "stage": "production", "service": "helloservice", "result": "warning"},
        time=now_text(),
    )
    api.ledger.append(started)
    api.ledger.append(approval)
    return approval


def test_control_and_approval_routes(api: Api) -> None:
    approval = open_approval(api)
    context = approval.shkeptncontext
    none = api.post(
        f"/v1/sequence/fulltour/{context}/approval", {"stage": "qa", "decision": "approve", "approver": "bob"}
    )
    assert none.status_code == 409 and "no pending approval" in none.json()["message"]
    other = api.post(f"/v1/sequence/sockshop/{context}/control", {"state": "pause"})
    assert other.status_code == 404
    paused = api.post(f"/v1/sequence/fulltour/{context}/control", {"state": "pause"})
    assert paused.status_code == 200 and paused.json()["keptnContext"] == context
    bad = api.post(f"/v1/sequence/fulltour/{context}/control", {"state": "stop"})
    assert bad.status_code == 422
    ok = api.post(
        f"/v1/sequence/fulltour/{context}/approval",
        {"stage": "production", "decision": "decline", "approver": "bob", "message": "not today"},
    )
    assert ok.status_code == 200, ok.text
    answer = api.events()[-1]
    assert answer.type == "sh.keptn.event.approval.finished" and answer.triggeredid == approval.id
    assert answer.result == "fail" and answer.data["approval"]["approver"] == "bob"


def test_cli_with_api_posts_to_the_running_reconciler(api: Api, tmp_path: Path) -> None:
    env = {"RECONCILER_API_TOKEN": TOKEN, "RECONCILER_CONFIG": "", "RECONCILER_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    sent = runner.invoke(
        cli, ["send", "event", "-f", str(DATA / "remediation_trigger.json"), "--api", api.server.url], env=env
    )
    assert sent.exit_code == 0, sent.output
    delivered = runner.invoke(
        cli,
        ["trigger", "delivery", "--service", "helloservice", "--image", "img:1", "--api", api.server.url],
        env=env,
    )
    assert delivered.exit_code == 0, delivered.output
    types = [e.type for e in api.events()]
    assert types == [
        "sh.keptn.event.production.remediation.triggered",
        "sh.keptn.event.qa.delivery.triggered",
    ]
    refused = runner.invoke(
        cli,
        ["trigger", "delivery", "--service", "nope", "--image", "img:1", "--api", api.server.url],
        env=env,
    )
    assert refused.exit_code == 1 and "no service 'nope'" in refused.stderr
    wrong = runner.invoke(
        cli,
        ["send", "event", "-f", str(DATA / "remediation_trigger.json"), "--api", api.server.url],
        env={**env, "RECONCILER_API_TOKEN": "nope"},
    )
    assert wrong.exit_code == 1 and "401" in wrong.stderr and "nope" not in wrong.stderr


def test_a_retried_post_of_the_same_event_records_it_once_and_answers_the_same(api: Api) -> None:
    """Issue 20: a client retrying a POST (a timeout, a proxy's retry) made a second copy. The
    CloudEvent's own source and id are the idempotency key (docs/keptn-differences.md)."""
    event = {**fake_problem(), "id": "client-retry-1"}  # no shkeptncontext: a new context each time before
    first = api.post("/v1/event", event)
    again = api.post("/v1/event", event)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    [recorded] = api.events()
    assert recorded.id == first.json()["id"] != "client-retry-1"  # still our id, not the caller's
    # another source's id is another event; no id at all is a new event per POST, as in Keptn
    other = api.post("/v1/event", {**event, "source": "https://example.com/other-sender"})
    assert other.json()["id"] != first.json()["id"]
    api.post("/v1/event", fake_problem())
    api.post("/v1/event", fake_problem())
    assert len(api.events()) == 4


def test_a_retried_answer_is_acknowledged_even_after_its_task_moved_on(api: Api) -> None:
    task = open_approval(api)
    answer = {
        "id": "approval-answer-7",
        "type": "sh.keptn.event.approval.finished",
        "specversion": "1.0",
        "source": "https://example.com/approver-bot",
        "shkeptncontext": task.shkeptncontext,
        "triggeredid": task.id,
        "data": {**task.data, "result": "pass", "status": "succeeded"},
    }
    first = api.post("/v1/event", answer)
    assert first.status_code == 200, first.text
    trigger_id = str(task.sequencetriggeredid)  # type: ignore[attr-defined]
    api.ledger.append(  # the sequence ends: the task is no longer open, a new answer would be refused
        KeptnEvent(
            id=derived_id(trigger_id, "finished"),
            source=CONTROLLER,
            type="sh.keptn.event.production.delivery.finished",
            shkeptncontext=task.shkeptncontext,
            triggeredid=trigger_id,
            data={**task.data, "result": "pass", "status": "succeeded"},
            time=now_text(),
        )
    )
    late = api.post("/v1/event", {**answer, "id": "approval-answer-8"})
    assert late.status_code == 400 and "no open task" in late.json()["message"]
    again = api.post("/v1/event", answer)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert sum(e.type == "sh.keptn.event.approval.finished" for e in api.events()) == 1


def test_an_event_beyond_the_api_limit_is_refused_with_413_naming_the_setting(
    tutorial_data_dir: Path,
) -> None:
    """Issue 20: 1,800 events of 380 KB were accepted and took the process past 1 GiB."""
    from reconciler.settings import Settings

    ledger = Ledger(tutorial_data_dir / "ledger.git", "reconciler-ledger")
    ingress = Ingress(
        ledger=ledger, view=snapshot_of(GitFiles(tutorial_data_dir / "upstream.git")), project="fulltour"
    )
    settings = Settings(api_token=TOKEN)
    server = serve(app_from_settings(ingress, settings), "127.0.0.1:0")
    client = Api(server, ingress, ledger)
    try:
        big = fake_problem()
        big["data"]["problem"]["details"] = "x" * (380 * 1024)
        refused = client.post("/v1/event", big)
        assert refused.status_code == 413
        assert "api_max_event_bytes" in refused.json()["message"] and "65536" in refused.json()["message"]
        chunked = client.http.post(
            "/v1/event",
            content=iter([json.dumps(big).encode()[i : i + 8192] for i in range(0, 400 * 1024, 8192)]),
            headers={"x-token": TOKEN, "content-type": "application/json"},
        )
        assert chunked.status_code == 413 and "api_max_event_bytes" in chunked.json()["message"]
        assert client.events() == []
        fits = fake_problem()
        fits["data"]["problem"]["details"] = "x" * (60 * 1024)
        assert client.post("/v1/event", fits).status_code == 200
    finally:
        client.http.close()
        server.stop()


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_reconciler_run_with_an_unusable_api_token_file_stops_at_start_naming_it(
    tmp_path: Path, content: str | None
) -> None:
    """Issue 20: a missing api_token_file started the API with every route refusing, silently."""
    import subprocess
    import sys

    from tests.support.crash import REPO_ROOT, child_environment
    from tests.support.ingress import example_upstream_repo

    upstream = example_upstream_repo(tmp_path / "upstream.git")
    token_file = tmp_path / "secrets" / "api-token"
    if content is not None:
        token_file.parent.mkdir()
        token_file.write_text(content)
    env = child_environment({"RECONCILER_API_TOKEN_FILE": str(token_file), "RECONCILER_LOG_FORMAT": "json"})
    command = [sys.executable, "-m", "reconciler", "run", "--upstream", str(upstream.path)]
    command += ["--data-dir", str(tmp_path / "data"), "--runner", "local", "--api-listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        command, env=env, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("reconciler run started with an unusable api_token_file") from None
    assert proc.returncode == 1
    message = err.decode()
    assert str(token_file) in message and "api_token_file" in message, message
    assert "RECONCILER_API_TOKEN" in message  # says what to do
    assert not (tmp_path / "data" / "ledger.git").exists(), "it started working before refusing"


def test_app_from_settings_refuses_a_token_file_it_cannot_read(
    tutorial_data_dir: Path, tmp_path: Path
) -> None:
    from reconciler.settings import Settings

    ledger = Ledger(tutorial_data_dir / "ledger.git", "reconciler-ledger")
    ingress = Ingress(
        ledger=ledger, view=snapshot_of(GitFiles(tutorial_data_dir / "upstream.git")), project="fulltour"
    )
    with pytest.raises(ValueError, match=r"api_token_file .* does not exist"):
        app_from_settings(ingress, Settings(api_token_file=tmp_path / "nope"))
    (tmp_path / "token").write_text("tok-123\n")
    app_from_settings(ingress, Settings(api_token_file=tmp_path / "token"))  # readable: fine
    app_from_settings(
        ingress, Settings(api_token_file=tmp_path / "nope", api_listen="")
    )  # no API: no token needed
