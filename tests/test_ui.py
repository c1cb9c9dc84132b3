"""The web view over HTTP: what each page shows, who may see it, and that nothing in it runs or leaks.

Real parts: the API's app served by uvicorn on 127.0.0.1, a git ledger holding
tutorial deliveries decided by the real engine and scored by the real scorer
(`tests/support/deliveries.py`), the tutorial's upstream as the served view, and
the CLI for comparison. The browser tests (test_ui_browser.py) run a whole
reconciler; these check the pages' content and the security model in seconds.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest
from click.testing import CliRunner

from reconciler.api import ApiServer, create_app, serve
from reconciler.cli import cli
from reconciler.formats.slo import load_slo
from reconciler.ingress import submit
from reconciler.ingress.submit import Ingress
from reconciler.ledger.gitledger import Ledger, event_id_of
from reconciler.ui import overview, router
from reconciler.ui.session import COOKIE, SESSION_SECONDS, Sessions, safe_next
from reconciler.upstream.files import GitFiles
from reconciler.upstream.snapshot import snapshot_of
from tests.support.deliveries import SLO, Deliveries, Outcome, tutorial_ledger
from tests.support.events import new_id, now_text

TOKEN = "ui-test-token-7f3a9c"
GOOD = "ghcr.io/podtato-head/podtatoserver:v0.1.1"
SLOW = "ghcr.io/podtato-head/podtatoserver:v0.1.2"
WARN = "ghcr.io/podtato-head/podtatoserver:v0.1.3"
HOSTILE = '<script>alert("x")</script>'
HOSTILE_SERVICE = "<img src=x onerror=alert(1)>"
HOSTILE_LABEL = "</dd><script>alert('label')</script>"
DEPLOY_LOG = "Job 'helm upgrade' failed: exit code 1\n\nLogs:\nError: UPGRADE FAILED\nrelease helloservice has no deployed releases"
PAGES = ("/ui/", "/ui/sequences", "/ui/evaluations", "/ui/approvals", "/ui/upstream")


@dataclass
class Site:
    server: ApiServer
    ingress: Ingress
    ledger: Ledger
    data_dir: Path
    contexts: dict[str, str]
    deliveries: Deliveries

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=20, headers=headers, follow_redirects=False)

    def reader(self) -> httpx.Client:
        return self.client(**{"x-token": TOKEN})

    def approvals_finished(self) -> list[Any]:
        self.ledger.refresh()
        return [e for e in self.ledger.events() if e.type == "sh.keptn.event.approval.finished"]


def status_snapshot() -> dict[str, Any]:
    return {
        "phase": "running",
        "leader": "single",
        "upstream": {
            "url": "https://git.example.com/team/fulltour.git",
            "transport": "https",
            "reachable": True,
            "authenticated": True,
            "branches": {"main": "1" * 40, "qa": "2" * 40, "production": "3" * 40},
            "accepted": {"main": "1" * 40, "qa": "4" * 40, "production": "3" * 40},
            "rejected": {
                "qa": {
                    "commit": "2" * 40,
                    "problems": [
                        "qa:helloservice/slo.yaml:7:9: objectives[0].pass[0].criteria[0]: "
                        f"cannot parse criterion '<=0.4s {HOSTILE}'"
                    ],
                }
            },
            "last_success": "2026-01-01T10:00:00Z",
            "last_attempt": "2026-01-01T10:00:30Z",
            "consecutive_failures": 2,
            "last_error": "upstream unreachable: connection refused",
            "polls": 12,
        },
        "problems": {
            "prometheus": {
                "message": "Prometheus not answering",
                "since": "2026-01-01T10:00:00Z",
                "count": 3,
                "retrying": True,
            }
        },
        "ledger": {"events": 1, "tip": "5" * 40, "branch": "reconciler-ledger"},
    }


def build_deliveries() -> tuple[Deliveries, dict[str, str]]:
    d = Deliveries()
    contexts = {
        "good": d.deliver(GOOD),
        "slow": d.deliver(SLOW, outcome=Outcome(response_time=0.8)),
        "broken": d.deliver(
            "ghcr.io/podtato-head/podtatoserver:v0.1.9", outcome=Outcome(deploy_fails_with=DEPLOY_LOG)
        ),
        "hostile": d.deliver(
            f"ghcr.io/x:{HOSTILE}",
            service=HOSTILE_SERVICE,
            outcome=Outcome(message=HOSTILE),
            labels={"owner": HOSTILE_LABEL},
        ),
        "warn": d.deliver(WARN, outcome=Outcome(failing=12)),  # qa warning: production waits for a person
    }
    return d, contexts


def start(data_dir: Path, **options: Any) -> tuple[ApiServer, Ingress, Ledger]:
    ledger = tutorial_ledger(data_dir)
    view = snapshot_of(GitFiles(data_dir / "upstream.git"))
    ingress = Ingress(ledger=ledger, view=view, project="fulltour")
    options.setdefault("token", TOKEN)
    server = serve(create_app(ingress, status=status_snapshot, **options), "127.0.0.1:0")
    return server, ingress, ledger


@pytest.fixture
def site(tutorial_data_dir: Path) -> Iterator[Site]:
    d, contexts = build_deliveries()
    d.write(tutorial_ledger(tutorial_data_dir))
    server, ingress, ledger = start(tutorial_data_dir)
    try:
        yield Site(server, ingress, ledger, tutorial_data_dir, contexts, d)
    finally:
        server.stop()


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    @classmethod
    def of(cls, body: str) -> list[tuple[str, dict[str, str | None]]]:
        parser = cls()
        parser.feed(body)
        return parser.found


def rows(body: str, attribute: str) -> list[str]:
    return [html.unescape(v) for v in re.findall(rf'<tr [^>]*{attribute}="([^"]*)"', body)]


# ----------------------------------------------------------------------------- who may read


def test_pages_need_the_api_token_and_show_nothing_without_it(site: Site) -> None:
    with site.client() as anonymous, site.client(**{"x-token": "wrong-token-123"}) as wrong:
        for path in (*PAGES, f"/ui/context/{site.contexts['good']}"):
            for client in (anonymous, wrong):
                answer = client.get(path)
                assert answer.status_code == 401, path
                assert 'name="token"' in answer.text  # the sign-in form instead
                shown = re.sub(r'name="next" value="[^"]*"', "", answer.text)  # where to go after signing in
                for secret in ("helloservice", "fulltour", site.contexts["good"], GOOD):
                    assert secret not in shown, (path, secret)
        assert anonymous.get("/ui/version").status_code == 401
    with site.reader() as reader:
        for path in PAGES:
            assert reader.get(path).status_code == 200, path


def test_signing_in_gives_a_read_only_cookie_that_cannot_approve(site: Site) -> None:
    with site.client() as browser:
        refused = browser.post("/ui/login", data={"token": "not-the-token", "next": "/ui/approvals"})
        assert refused.status_code == 401 and "wrong token" in refused.text
        assert 'name="next" value="/ui/approvals"' in refused.text  # the next try still goes there
        assert browser.post("/ui/login", content=b"&".join([b"a=1"] * 9)).status_code == 400
        assert COOKIE not in refused.headers.get("set-cookie", "")

        signed = browser.post("/ui/login", data={"token": TOKEN, "next": "/ui/approvals"})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/approvals"
        cookie = signed.headers["set-cookie"]
        assert all(part in cookie.lower() for part in ("httponly", "samesite=strict", "path=/ui"))
        assert TOKEN not in cookie
        assert browser.get("/ui/approvals").status_code == 200

        # the session reads; it does not write: the approval route wants the token in a header
        before = len(site.approvals_finished())
        context = site.contexts["warn"]
        answer = browser.post(
            f"/v1/sequence/fulltour/{context}/approval",
            json={"stage": "production", "decision": "approve", "approver": "mallory"},
            headers={"cookie": f"{COOKIE}={browser.cookies.get(COOKIE)}"},
        )
        assert answer.status_code == 401
        assert len(site.approvals_finished()) == before

        logout = browser.post("/ui/logout")
        assert logout.status_code == 303
    with site.client() as tampered:
        value = signed.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        forged = value[:-4] + ("0000" if not value.endswith("0000") else "1111")
        tampered.cookies.set(COOKIE, forged, path="/ui")
        assert tampered.get("/ui/").status_code == 401


def test_a_login_or_logout_posted_from_another_site_is_refused(site: Site) -> None:
    with site.client() as client:
        for headers in ({"sec-fetch-site": "cross-site"}, {"origin": "https://evil.example"}):
            answer = client.post("/ui/login", data={"token": TOKEN}, headers=headers)
            assert answer.status_code == 403, headers
            assert COOKIE not in answer.headers.get("set-cookie", "")
            assert client.post("/ui/logout", headers=headers).status_code == 403


def test_after_login_only_pages_of_the_view_are_a_destination() -> None:
    assert safe_next("/ui/sequences?stage=qa") == "/ui/sequences?stage=qa"
    for hostile in (
        "https://evil.example/",
        "//evil.example/ui/",
        "/v1/status",
        "/ui/\\evil",
        "javascript:alert(1)",
    ):
        assert safe_next(hostile) == "/ui/"


def test_a_session_expires_and_a_new_token_ends_every_session() -> None:
    now = [1_000_000.0]
    sessions = Sessions("a-token-1234", clock=lambda: now[0])
    cookie = sessions.issue()
    assert sessions.cookie_ok(cookie)
    now[0] += SESSION_SECONDS + 1
    assert not sessions.cookie_ok(cookie)
    now[0] = 1_000_000.0
    assert not Sessions("the-next-token", clock=lambda: now[0]).cookie_ok(cookie)
    assert not Sessions(None).cookie_ok(cookie)


def test_ui_public_opens_reading_but_approving_still_needs_the_token(tutorial_data_dir: Path) -> None:
    d, contexts = build_deliveries()
    d.write(tutorial_ledger(tutorial_data_dir))
    server, _, ledger = start(tutorial_data_dir, ui_public=True)
    try:
        with httpx.Client(base_url=server.url, timeout=20) as anonymous:
            for path in PAGES:
                assert anonymous.get(path).status_code == 200, path
            answer = anonymous.post(
                f"/v1/sequence/fulltour/{contexts['warn']}/approval",
                json={"stage": "production", "decision": "approve", "approver": "anyone"},
            )
            assert answer.status_code == 401
            assert anonymous.get("/v1/status").status_code == 401  # the API itself stays closed
        ledger.refresh()
        answers = [e for e in ledger.events() if e.type == "sh.keptn.event.approval.finished"]
        assert [e.source for e in answers] == ["approval-service"] * 2  # the automatic ones only
    finally:
        server.stop()


def test_without_a_configured_token_the_pages_are_closed_like_the_api(tutorial_data_dir: Path) -> None:
    server, _, _ = start(tutorial_data_dir, token=None)
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            answer = client.get("/ui/")
            assert answer.status_code == 401 and "no API token configured" in answer.text
            assert client.post("/ui/login", data={"token": "anything"}).status_code == 401
    finally:
        server.stop()


# ----------------------------------------------------------------------------- nothing runs


def test_every_page_has_a_strict_csp_and_no_inline_script_or_style(site: Site) -> None:
    paths = [*PAGES, f"/ui/context/{site.contexts['good']}", "/ui/login"]
    with site.reader() as reader:
        for path in paths:
            answer = reader.get(path)
            assert answer.status_code == 200, path
            csp = answer.headers["content-security-policy"]
            assert (
                "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            )
            assert answer.headers["x-content-type-options"] == "nosniff"
            body = answer.text
            tags = Tags.of(body)
            assert [a for t, a in tags if t == "script"] == [{"src": "/ui/static/ui.js", "defer": None}], path
            assert not [t for t, a in tags if any(k.startswith("on") or k == "style" for k in a)], path
            assert "style" not in [t for t, _ in tags], path
            assert "http://" not in body.replace(site.url, "") and "https://" not in body.replace(
                "https://git.example.com/team/fulltour.git", ""
            ), path  # nothing loaded from elsewhere
        script = reader.get("/ui/static/ui.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert reader.get("/ui/static/../router.py").status_code == 404


def test_script_in_a_message_a_service_name_and_an_sli_is_shown_as_text(site: Site) -> None:
    d = site.deliveries
    hostile_slo = SLO.replace(b"displayName: HTTP Response Time", b'displayName: "<script>alert(3)</script>"')
    assert hostile_slo != SLO
    d.slo_raw, d.slo = hostile_slo, load_slo(hostile_slo)
    context = d.deliver(GOOD, service=HOSTILE_SERVICE)
    d.write(site.ledger)
    pages = [
        "/ui/",
        "/ui/sequences",
        f"/ui/context/{site.contexts['hostile']}",
        f"/ui/context/{context}",
        "/ui/evaluations?" + httpx.QueryParams({"stage": "qa", "service": HOSTILE_SERVICE}).__str__(),
        "/ui/upstream",
    ]
    with site.reader() as reader:
        bodies = {path: reader.get(path).text for path in pages}
    everything = "\n".join(bodies.values())
    for raw in (HOSTILE, HOSTILE_SERVICE, HOSTILE_LABEL, "<script>alert(3)</script>"):
        assert raw not in everything
    assert html.escape(HOSTILE_SERVICE, quote=False) in bodies["/ui/"]  # the row is there, as text
    assert (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in bodies[f"/ui/context/{site.contexts['hostile']}"]
    )
    hostile = bodies[f"/ui/context/{site.contexts['hostile']}"]
    assert "owner=&lt;/dd&gt;&lt;script&gt;alert(&#39;label&#39;)&lt;/script&gt;" in hostile  # its label
    heatmap = bodies[pages[4]]
    assert "<svg" in heatmap and "&lt;script&gt;alert(3)&lt;/script&gt;" in heatmap


# ----------------------------------------------------------------------------- what it shows


def test_the_overview_shows_each_stage_with_its_image_and_last_result(site: Site) -> None:
    with site.reader() as reader:
        body = reader.get("/ui/").text
    stages = re.findall(r'<th scope="col" data-stage="([^"]+)"', body)
    assert stages == ["qa", "production"]  # shipyard order
    row = body.split('<tr data-service="helloservice">', 1)[1].split("</tr>", 1)[0]
    qa, production = row.split('data-stage="qa"', 1)[1].split('data-stage="production"', 1)
    # qa runs v0.1.3 (v0.1.9 never deployed); its newest delivery passed with a warning
    assert WARN in qa and 'data-outcome="warning"' in qa
    # production still runs the good build and waits for a person on v0.1.3
    assert GOOD in production and 'data-outcome="waitingForApproval"' in production
    assert f'href="/ui/context/{site.contexts["warn"]}"' in production


def test_the_overview_filters_by_service_and_by_what_needs_a_person_and_pages(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    with site.reader() as reader:
        both = rows(reader.get("/ui/").text, "data-service")
        assert both == sorted([HOSTILE_SERVICE, "helloservice"])
        assert rows(reader.get("/ui/", params={"service": "HELLO"}).text, "data-service") == ["helloservice"]
        waiting = reader.get("/ui/", params={"only": "attention"}).text
        assert rows(waiting, "data-service") == ["helloservice"]  # production waits for a person
        assert "1 needs a person" in reader.get("/ui/").text
        monkeypatch.setattr(overview, "PAGE_SIZE", 1)
        first = reader.get("/ui/").text
        assert rows(first, "data-service") == [both[0]] and "page 1 of 2" in first
        found = re.search(r'<a href="([^"]+)" rel="next">', first)
        assert found is not None
        assert rows(reader.get(html.unescape(found.group(1))).text, "data-service") == [both[1]]


def test_the_sequence_list_shows_what_get_sequences_prints(site: Site) -> None:
    result = CliRunner().invoke(
        cli, ["get", "sequences", "--output", "json", "--data-dir", str(site.data_dir)]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    expected = [
        (r["context"], r["result"] if r["state"] == "finished" and r["result"] else r["state"])
        for r in printed
    ][::-1]
    with site.reader() as reader:
        body = reader.get("/ui/sequences").text
    shown = list(zip(rows(body, "data-context"), rows(body, "data-outcome"), strict=True))
    assert shown == expected
    assert "reconciler get sequences --output json" in body


def test_the_sequence_list_filters_and_pages(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    with site.reader() as reader:
        production = reader.get("/ui/sequences", params={"stage": "production"}).text
        assert set(rows(production, "data-context")) == {
            site.contexts[k] for k in ("good", "hostile", "warn")
        }
        failed = reader.get("/ui/sequences", params={"result": "fail"}).text
        assert rows(failed, "data-context") == [site.contexts["broken"], site.contexts["slow"]]
        waiting = reader.get("/ui/sequences", params={"result": "waitingForApproval"}).text
        assert rows(waiting, "data-context") == [site.contexts["warn"]]
        delivered = [e for e in site.deliveries.events if e.type == "sh.keptn.event.qa.delivery.triggered"]
        since = reader.get("/ui/sequences", params={"stage": "qa", "since": delivered[3].time}).text
        assert rows(since, "data-context") == [site.contexts["warn"], site.contexts["hostile"]]
        until = reader.get("/ui/sequences", params={"stage": "qa", "until": delivered[0].time}).text
        assert rows(until, "data-context") == [site.contexts["good"]]
        bad = reader.get("/ui/sequences", params={"since": "yesterday-ish"})
        assert bad.status_code == 400 and "since: expected a duration" in bad.text

        monkeypatch.setattr(router, "PAGE_SIZE", 2)
        seen = []
        page = reader.get("/ui/sequences").text
        for _ in range(5):
            seen.extend(rows(page, "data-context"))
            found = re.search(r'<a href="([^"]+)" rel="next">', page)
            if not found:
                break
            page = reader.get(html.unescape(found.group(1))).text
        assert "page 4 of 4" in page
    assert len(seen) == 8  # five qa deliveries, three production ones, newest first across pages
    assert seen[0] == site.contexts["warn"] and seen[-1] == site.contexts["good"]


def test_a_context_shows_its_chain_its_tasks_and_every_event_with_its_ledger_commit(site: Site) -> None:
    context = site.contexts["good"]
    with site.reader() as reader:
        body = reader.get(f"/ui/context/{context}").text
    chain = re.findall(
        r'<li class="sequence-block[^"]*" data-stage="([^"]+)" data-sequence="([^"]+)" data-outcome="([^"]+)"',
        body,
    )
    assert chain == [("qa", "delivery", "pass"), ("production", "delivery", "pass")]
    qa = body.split('data-stage="qa"', 1)[1].split("</li>", 1)[0]
    assert re.findall(r'<tr data-task="([^"]+)" data-outcome="pass">', qa) == [
        "je-deployment",
        "je-test",
        "evaluation",
    ]
    assert (
        "job-executor-service" in qa and "lighthouse-service" in qa and "a" * 12 in qa
    )  # pinned gitcommitid
    repo = pygit2.Repository(str(site.data_dir / "ledger.git"))
    events = [e for e in site.ledger.events() if e.shkeptncontext == context]
    commits = re.findall(r'<code class="commit" title="([0-9a-f]{40})">', body)
    assert len(commits) == len(events) == body.count("<details><summary><code>sh.keptn.event.")
    for event, sha in zip(events, commits, strict=True):
        assert event_id_of(repo[sha].message) == event.id  # git log shows this commit for this event
        assert (
            html.escape(f'"id": "{event.id}"', quote=True) in body
            or f"&#34;id&#34;: &#34;{event.id}&#34;" in body
        )


def test_a_failed_job_shows_its_error_and_log_tail(site: Site) -> None:
    with site.reader() as reader:
        body = reader.get(f"/ui/context/{site.contexts['broken']}").text
    task = body.split('<tr data-task="je-deployment" data-outcome="fail">', 1)[1].split("</tr>", 1)[0]
    assert "failed: exit code 1" in task
    tail = task.split('<details class="log">', 1)[1]
    assert "Error: UPGRADE FAILED" in tail and "release helloservice has no deployed releases" in tail


def test_the_heatmap_has_a_column_per_evaluation_coloured_by_each_sli_status(site: Site) -> None:
    with site.reader() as reader:
        body = reader.get("/ui/evaluations", params={"stage": "qa", "service": "helloservice"}).text
        columns = re.findall(
            r'<a href="([^"]+)" class="column[^"]*" data-column="\d+" data-evaluation="([^"]+)">', body
        )
        qa_evaluations = [
            e
            for e in site.ledger.events()
            if e.type == "sh.keptn.event.evaluation.finished"
            and e.stage == "qa"
            and e.service == "helloservice"
        ]
        assert [c[1] for c in columns] == [
            e.id for e in qa_evaluations
        ]  # good, slow, warn (broken never got there)
        statuses = re.findall(r'class="cell cell-(\w+)" data-status="\w+"', body)
        # column by column (good, slow, warn), each: response time (key), throughput, threads (key), failing
        assert statuses == ["pass"] * 4 + ["fail", "pass", "pass", "pass"] + ["pass", "pass", "pass", "fail"]
        assert re.findall(r'class="column-result result-(\w+)"', body) == ["pass", "fail", "warning"]
        assert "pass ≥ 90" in body and "warning ≥ 75" in body and 'class="score-line"' in body
        # the newest one's table below; a column's link opens another
        assert (
            f'data-evaluation="{qa_evaluations[-1].id}"' in body.split('<section id="evaluation"', 1)[1][:200]
        )
        slow = reader.get(html.unescape(columns[1][0])).text
        table = slow.split('<section id="evaluation"', 1)[1]
        assert 'data-sli="http_response_time_seconds_main_page_sum" data-status="fail"' in table
        assert "&lt;=0.4 (0.4)" in table and ">key<" in table
        assert (
            len(
                re.findall(
                    r'class="column[ "]',
                    reader.get("/ui/evaluations", params={"service": "helloservice", "n": 2}).text,
                )
            )
            == 2
        )


def test_the_overview_keeps_every_service_when_old_sequences_are_forgotten(
    tutorial_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit, "COMPACT_EVERY", 10)
    d = Deliveries()
    services = [f"svc{n}" for n in range(4)]
    for n, service in enumerate(services):
        d.deliver(f"example/{service}:v{n}", service=service)
    server, ingress, ledger = start(tutorial_data_dir)
    ingress.state.keep_finished = 1
    try:
        d.write(ledger)
        with httpx.Client(base_url=server.url, timeout=20, headers={"x-token": TOKEN}) as reader:
            body = reader.get("/ui/").text
        kept = ingress.state.read(lambda state: len(state.order))
        assert kept <= 2  # the state forgot most of them ...
        for n, service in enumerate(services):  # ... the overview did not
            row = body.split(f'<tr data-service="{service}">', 1)[1].split("</tr>", 1)[0]
            assert f"example/{service}:v{n}" in row and row.count('data-outcome="pass"') == 2, service
    finally:
        server.stop()


def test_the_approvals_page_lists_the_pending_approval_with_its_evaluation_and_commands(site: Site) -> None:
    context = site.contexts["warn"]
    with site.reader() as reader:
        body = reader.get("/ui/approvals").text
    card = body.split(f'data-context="{context}"', 1)[1]
    assert f'data-api="/v1/sequence/fulltour/{context}/approval"' in body
    assert "led here by the evaluation in <strong>qa</strong>" in card and "score 75" in card
    assert f"reconciler approve {context} --stage production --service helloservice -m ..." in card
    assert f"reconciler decline {context} --stage production" in card
    assert body.count('<article class="approval"') == 1


def test_the_upstream_page_shows_served_commits_rejections_fetch_health_and_problems(site: Site) -> None:
    with site.reader() as reader:
        body = reader.get("/ui/upstream").text
    qa = body.split('<tr data-branch="qa">', 1)[1].split("</tr>", 1)[0]
    assert "4" * 12 in qa and "2" * 12 in qa and "(not served)" in qa
    assert "qa:helloservice/slo.yaml:7:9: objectives[0].pass[0].criteria[0]" in qa and HOSTILE not in qa
    assert "backing-off" in body and "connection refused" in body
    assert "Prometheus not answering" in body and "retrying" in body


def test_an_unknown_context_is_a_404_page(site: Site) -> None:
    with site.reader() as reader:
        answer = reader.get("/ui/context/no-such-context")
    assert answer.status_code == 404 and "no events with context no-such-context" in answer.text


def test_the_version_moves_when_the_ledger_does(site: Site) -> None:
    with site.reader() as reader:
        before = reader.get("/ui/version").json()["events"]
        site.deliveries.deliver(GOOD, service="another")
        site.deliveries.write(site.ledger)
        deadline = time.monotonic() + 10
        after = before
        while after == before and time.monotonic() < deadline:
            after = reader.get("/ui/version").json()["events"]
    assert after > before


def test_demo_keep_prints_the_web_view_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    from types import SimpleNamespace

    from reconciler.demo import scenario

    out = io.StringIO()
    demo = scenario.Demo(scenario.DemoOptions(workdir=tmp_path / "demo", example=tmp_path, out=out))

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    # Ctrl-C at once: the demo module's own `time` only, not the process's
    monkeypatch.setattr(scenario, "time", SimpleNamespace(sleep=interrupted, monotonic=time.monotonic))
    demo.keep()
    assert f"web view: http://127.0.0.1:{demo.api_port}/ui/" in out.getvalue()


def test_an_invalidated_evaluation_keeps_its_column_marked(site: Site) -> None:
    from reconciler.formats.events import KeptnEvent

    slow_eval = next(
        e
        for e in site.ledger.events()
        if e.type == "sh.keptn.event.evaluation.finished" and e.shkeptncontext == site.contexts["slow"]
    )
    site.ledger.append(
        KeptnEvent(
            source="manual-invalidation",
            type="sh.keptn.event.evaluation.invalidated",
            shkeptncontext=slow_eval.shkeptncontext,
            triggeredid=slow_eval.triggeredid,
            data={"project": "fulltour", "stage": "qa", "service": "helloservice"},
            id=new_id(),
            time=now_text(),
        )
    )
    with site.reader() as reader:
        params = {"stage": "qa", "service": "helloservice", "evaluation": slow_eval.id}
        body = reader.get("/ui/evaluations", params=params).text
    labels = re.findall(r'<text x="[\d.]+" y="16" class="column-label">([^<]*)</text>', body)
    assert len(labels) == 3 and [label.endswith(" ✗") for label in labels] == [False, True, False]
    assert "(invalidated)" in body.split('<section id="evaluation"', 1)[1]
