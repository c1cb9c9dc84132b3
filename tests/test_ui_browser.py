"""The web view in a real browser, against a real reconciler delivering the tutorial on the local runner.

Real parts: headless Chromium (Debian's package, driven by Playwright), the whole
reconciler in this process (`App`: git upstream watched, git ledger, control loop,
built-in approval and evaluation executors, the job executor on the local runner,
the HTTP API with its token on a free port), and a real Prometheus answering the
SLI queries. To keep each test within seconds the jobs are short local processes
instead of localhelm and locust, and each build's SLI file (committed with its
`values.yaml`, pinned by its sequence) makes Prometheus answer the response time
that build has, constant in time: a good build (0.2 s), a slow one (0.8 s, which
breaks the key objective `<=0.4`), and one with failing requests (a warning, which
production's approval leaves to a person). The shipyard is the tutorial's local
profile with `warning: manual` for production's approval.

Set RECONCILER_UI_SCREENSHOTS=<dir> to keep screenshots of the pages visited.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from reconciler.app import App
from reconciler.formats.events import KeptnEvent
from reconciler.settings import Settings
from tests.support.ingress import EXAMPLE, GitUpstream, directory_files
from tests.support.prometheus import PrometheusFactory
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(90)

TOKEN = "browser-test-token-4d2c9e"
GOOD = "ghcr.io/podtato-head/podtatoserver:v0.1.1"
SLOW = "ghcr.io/podtato-head/podtatoserver:v0.1.2"
WARN = "ghcr.io/podtato-head/podtatoserver:v0.1.3"
PY = sys.executable
SHOTS = os.environ.get("RECONCILER_UI_SCREENSHOTS")

JOB_CONFIG = f"""\
apiVersion: v2
actions:
  - name: Deploy
    events:
      - name: sh.keptn.event.je-deployment.triggered
    tasks:
      - name: deploy
        image: alpine/helm:3.9.0
        env:
          - name: IMAGE
            value: $.data.configurationChange.values.image
            valueFrom: event
        cmd: ["{PY}"]
        args: ["-c", "import os; print('deployed', os.environ['IMAGE'])"]
  - name: Test
    events:
      - name: sh.keptn.event.je-test.triggered
    tasks:
      - name: load test
        image: locustio/locust:2.8.6
        cmd: ["{PY}"]
        args: ["-c", "print('load test: 20 requests, 0 failures')"]
  - name: Remediate
    events:
      - name: sh.keptn.event.action.triggered
    tasks:
      - name: act
        image: alpine/helm:3.9.0
        cmd: ["{PY}"]
        args: ["-c", "print('scaled')"]
"""


def sli(response_time: float, failing: int = 0) -> str:
    """The local profile's SLIs, answered by Prometheus as constants (what this build measures)."""
    return f"""\
spec_version: "1.0"
indicators:
  http_response_time_seconds_main_page_sum: vector({response_time})
  request_throughput: vector(5)
  python_threads: vector(8)
  failing_request: vector({failing})
"""


def ui_upstream(path: Path) -> GitUpstream:
    branches = directory_files(EXAMPLE)
    for branch, files in directory_files(EXAMPLE / "_local").items():
        branches[branch].update(files)
    shipyard = branches["main"]["shipyard.yaml"].decode()
    manual = shipyard.replace("                warning: automatic\n", "                warning: manual\n")
    assert manual != shipyard
    branches["main"]["shipyard.yaml"] = manual.encode()
    for stage in ("qa", "production"):
        branches[stage]["helloservice/job/config.yaml"] = JOB_CONFIG.encode()
        branches[stage]["helloservice/prometheus/sli.yaml"] = sli(0.2).encode()
    del branches["qa"]["helloservice/values.yaml"]  # the first build is a commit-to-deploy
    up = GitUpstream(path)
    for branch, files in branches.items():
        up.commit(branch, files, f"{branch}: tutorial files, local profile, short jobs")
    return up


@dataclass
class Running:
    app: App
    upstream: GitUpstream
    builds: dict[str, str] = field(default_factory=dict)
    """image -> context of its delivery"""

    @property
    def url(self) -> str:
        assert self.app.api is not None
        return self.app.api.url

    def events(self) -> list[KeptnEvent]:
        return list(self.app.ledger.events())

    def find(self, predicate: Callable[[KeptnEvent], bool]) -> KeptnEvent | None:
        return next((e for e in self.events() if predicate(e)), None)

    def deliver(self, image: str, *, response_time: float, failing: int = 0) -> str:
        """Commit a build to qa (once per image) and return its context."""
        if image in self.builds:
            return self.builds[image]
        self.upstream.commit(
            "qa",
            {
                "helloservice/values.yaml": f"image: {image}\n",
                "helloservice/prometheus/sli.yaml": sli(response_time, failing),
            },
            f"Deploy {image}",
        )

        def triggered() -> KeptnEvent | None:
            return self.find(
                lambda e: (
                    e.type == "sh.keptn.event.qa.delivery.triggered"
                    and e.data.get("configurationChange", {}).get("values", {}).get("image") == image
                )
            )

        event = wait_for(triggered, timeout=30, what=f"qa.delivery of {image}", step=0.2)
        self.builds[image] = event.shkeptncontext
        return event.shkeptncontext

    def finished(self, stage: str, sequence: str, context: str, timeout: float = 45) -> KeptnEvent:
        type_ = f"sh.keptn.event.{stage}.{sequence}.finished"
        return wait_for(
            lambda: self.find(lambda e: e.type == type_ and e.shkeptncontext == context),
            timeout=timeout,
            what=f"{stage}.{sequence} of {context[:8]}",
            step=0.2,
        )

    def pending_approval(self, context: str) -> KeptnEvent:
        """The production approval of `context` once the approval service is waiting on it."""

        def open_one() -> KeptnEvent | None:
            events = self.events()
            triggered = next(
                (
                    e
                    for e in events
                    if e.type == "sh.keptn.event.approval.triggered" and e.shkeptncontext == context
                ),
                None,
            )
            if triggered is None or not any(
                e.type == "sh.keptn.event.approval.started" and e.triggeredid == triggered.id for e in events
            ):
                return None
            return triggered

        return wait_for(open_one, timeout=45, what=f"the approval of {context[:8]} to wait", step=0.2)

    def answers(self, triggered: KeptnEvent) -> list[KeptnEvent]:
        return [
            e
            for e in self.events()
            if e.type == "sh.keptn.event.approval.finished" and e.triggeredid == triggered.id
        ]


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, prometheus_factory_module: PrometheusFactory
) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("ui-browser")
    upstream = ui_upstream(root / "upstream.git")
    prometheus = prometheus_factory_module.start()
    settings = Settings(
        upstream=str(upstream.path),
        data_dir=root / "data",
        poll_interval=0.5,
        runner="local",
        ledger_push="never",
        project="",
        api_listen="127.0.0.1:0",
        api_token=SecretStr(TOKEN),
        prometheus_url=prometheus.url,
        leader_election="off",
        local_commands=[sys.executable],  # the jobs are python one-liners
    )
    app = App(settings).start()
    thread = threading.Thread(target=app.run_forever, name="ui-browser-controller", daemon=True)
    thread.start()
    try:
        assert app.store.current().ready, app.store.current().rejected
        yield Running(app, upstream)
    finally:
        app.stop(grace=10)
        thread.join(timeout=15)


def signed_in(chromium: Any, running: Running, path: str = "/ui/") -> Any:
    """A page of the signed-in browser at `path`, signed in through the form when needed."""
    page = chromium.new_page()
    page.goto(running.url + path)
    if page.locator("#login-form").count():
        page.fill("#token", TOKEN)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"**{path}")
    assert page.locator("#login-form").count() == 0
    return page


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def stage_cell(page: Any, stage: str) -> Any:
    return page.locator(f'tr[data-service="helloservice"] td[data-stage="{stage}"]')


def test_the_overview_shows_qa_and_production_with_the_delivered_version(
    chromium: Any, running: Running
) -> None:
    context = running.deliver(GOOD, response_time=0.2)
    assert running.finished("production", "delivery", context).result == "pass"
    page = signed_in(chromium, running)
    try:
        headers = page.locator("table.overview thead th[data-stage]").all_inner_texts()
        assert headers == ["qa", "production"]
        for stage in ("qa", "production"):
            cell = stage_cell(page, stage)
            assert cell.locator(".image").inner_text() == GOOD
            assert cell.locator(".badge").inner_text() == "pass"
            assert cell.locator("a.last").get_attribute("href") == f"/ui/context/{context}"
        page.click('tr[data-service="helloservice"] td[data-stage="production"] a.last')
        page.wait_for_url(f"**/ui/context/{context}")
        stages = page.locator("li.sequence-block").evaluate_all("els => els.map(e => e.dataset.stage)")
        assert stages == ["qa", "production"]
        shot(page, "sequence")
    finally:
        page.close()


def test_a_failing_delivery_shows_fail_with_the_key_sli_message_live(chromium: Any, running: Running) -> None:
    good = running.deliver(GOOD, response_time=0.2)
    running.finished("production", "delivery", good)
    page = signed_in(chromium, running)  # open before the slow build: the page must update by itself
    try:
        slow = running.deliver(SLOW, response_time=0.8)
        qa = stage_cell(page, "qa")
        page.wait_for_selector(
            'tr[data-service="helloservice"] td[data-stage="qa"] .badge[data-outcome="fail"]', timeout=30_000
        )
        assert running.finished("qa", "delivery", slow).result == "fail"
        message = qa.locator(".message").inner_text()
        assert "key_sli objective 'HTTP Response Time'" in message, message
        production = stage_cell(page, "production")
        assert production.locator(".image").inner_text() == GOOD  # untouched by the slow build
        assert production.locator(".badge").inner_text() == "pass"
        shot(page, "overview")
    finally:
        page.close()


def test_the_heatmap_has_one_column_per_evaluation_with_the_right_colours(
    chromium: Any, running: Running
) -> None:
    for image, response_time in ((GOOD, 0.2), (SLOW, 0.8)):
        running.finished("qa", "delivery", running.deliver(image, response_time=response_time))
    evaluations = [
        e
        for e in running.events()
        if e.type == "sh.keptn.event.evaluation.finished" and e.stage == "qa" and e.service == "helloservice"
    ]
    page = signed_in(chromium, running, "/ui/evaluations?stage=qa&service=helloservice")
    try:
        columns = page.locator("svg.heatmap a.column")
        assert columns.evaluate_all("els => els.map(e => e.dataset.evaluation)") == [
            e.id for e in evaluations
        ]
        colours = page.locator("svg.heatmap rect.cell").evaluate_all(
            "els => els.map(e => [e.dataset.status, getComputedStyle(e).fill])"
        )
        fill = {status: colour for status, colour in colours}
        assert fill["pass"] == "rgb(143, 209, 158)" and fill["fail"] == "rgb(239, 138, 138)"
        # column by column: the good build passes every objective; the slow one fails the response time only
        statuses = [status for status, _ in colours]
        assert statuses[:4] == ["pass"] * 4 and statuses[4:8] == ["fail", "pass", "pass", "pass"]
        assert page.locator("svg.scorechart circle.point").count() == len(evaluations)
        shot(page, "heatmap")
        columns.nth(1).click()  # the slow build's column opens its table
        page.wait_for_url(f"**evaluation={evaluations[1].id}#evaluation")
        row = page.locator('section.evaluation tr[data-sli="http_response_time_seconds_main_page_sum"]')
        assert row.get_attribute("data-status") == "fail"
        assert "0.8" in row.inner_text() and "<=0.4" in row.inner_text() and "key" in row.inner_text()
    finally:
        page.close()


def _approval_page(chromium: Any, running: Running) -> tuple[Any, KeptnEvent, str]:
    """The approvals page with the warning build's production approval waiting (one build for both
    approval tests: a second one would queue behind it in production)."""
    context = running.deliver(WARN, response_time=0.2, failing=12)  # failing requests: a warning
    assert running.finished("qa", "delivery", context).result == "warning"
    triggered = running.pending_approval(context)
    page = signed_in(chromium, running, "/ui/approvals")
    page.wait_for_selector(f'article.approval[data-context="{context}"]')
    return page, triggered, context


def test_without_the_token_the_approve_button_is_refused_and_nothing_is_recorded(
    chromium: Any, running: Running
) -> None:
    page, triggered, context = _approval_page(chromium, running)
    try:
        page.evaluate("sessionStorage.clear()")  # signed in for reading (cookie), but no token in the tab
        page.reload()
        card = page.locator(f'article.approval[data-context="{context}"]')
        assert page.locator("#approval-token").input_value() == ""
        with page.expect_response(lambda r: r.url.endswith(f"/{context}/approval")) as answer:
            card.locator("button.approve").click()
        assert answer.value.status == 401
        refused = card.locator(
            "output.answer.refused"
        )  # the page writes it once it has read the answer's body
        refused.wait_for(timeout=10_000)
        assert "refused (401)" in refused.inner_text()
        time.sleep(1.0)  # give a wrongly accepted answer the time to reach the ledger
        assert running.answers(triggered) == []
        page.reload()
        assert page.locator(f'article.approval[data-context="{context}"]').count() == 1  # still waiting
    finally:
        page.close()


def test_approving_from_the_page_finishes_the_approval_in_the_ledger(chromium: Any, running: Running) -> None:
    page, triggered, context = _approval_page(chromium, running)
    try:
        card = page.locator(f'article.approval[data-context="{context}"]')
        page.fill("#approver", "Ada Lovelace")
        page.fill("#approval-token", TOKEN)
        card.locator(".approval-message").fill("warning accepted: failing requests are a known flake")
        shot(page, "approvals")
        with page.expect_response(lambda r: r.url.endswith(f"/{context}/approval")) as answer:
            card.locator("button.approve").click()
        assert answer.value.status == 200
        [recorded] = wait_for(
            lambda: running.answers(triggered), timeout=10, what="the approval in the ledger"
        )
        assert recorded.result == "pass" and recorded.source == "reconciler-api"
        assert recorded.data["approval"]["approver"] == "Ada Lovelace"
        assert recorded.data["message"] == "warning accepted: failing requests are a known flake"
        done = running.finished("production", "delivery", context)  # approved: deployed, tested, evaluated
        assert done.result == "pass"
        page.wait_for_selector(
            f'article.approval[data-context="{context}"]', state="detached", timeout=15_000
        )
    finally:
        page.close()
