"""A SIGKILLed `reconciler run` and its webhook task: killed after the request went out but before its
answer was recorded, the restart sends it again with the same Idempotency-Key (a receiver that dedupes
by the key sees one effect); killed after the answer was recorded, nothing is sent again.

Real processes, killed by the crash points of `reconciler.base.crashpoints` (`webhook.sent`: the
receiver has answered, the answer is not recorded; `webhook.answered`: the answer is recorded, the
task's `.finished` is not), restarted on the same data directory.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.formats.events import KeptnEvent
from reconciler.ledger.errors import LedgerError
from reconciler.ledger.gitledger import Ledger
from tests.support.crash import start_reconciler
from tests.support.gitserver import UpstreamRepo
from tests.support.receivers import Answer, receiving
from tests.support.shop import deploy, seed_shop, sequence, shipyard, stage, task
from tests.support.waiting import wait_for

HOOK = """\
apiVersion: webhookconfig.keptn.sh/v1beta1
kind: WebhookConfig
spec:
  webhooks:
    - type: sh.keptn.event.e2e-test.triggered
      sendFinished: true
      requests:
        - url: {url}/e2e/{{{{.data.service}}}}
          method: POST
          payload: '{{"image": "{{{{.data.configurationChange.values.image}}}}"}}'
"""
ENV = {"RECONCILER_WEBHOOK_ALLOW_HOSTS": '["127.0.0.1"]', "RECONCILER_WEBHOOK_TIMEOUT": "5"}


def ledger_events(data: Path) -> list[KeptnEvent]:
    path = data / "ledger.git"
    if not (path / "HEAD").is_file():
        return []  # not created yet (or being created by the process)
    try:
        return list(Ledger(path, "reconciler-ledger").events())
    except LedgerError:
        return []


def types(data: Path) -> list[str]:
    return [e.type for e in ledger_events(data)]


def killed(proc: subprocess.Popen[bytes], timeout: float = 90) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError("the process did not reach its crash point") from None


@pytest.mark.timeout(240)
def test_a_kill_between_the_recorded_attempt_and_its_answer_does_not_make_two_effects(
    upstream_repo: UpstreamRepo, tmp_path: Path
) -> None:
    data, log = tmp_path / "data", tmp_path / "reconciler.log"
    with receiving(Answer(200, b"done")) as receiver:
        seed_shop(
            upstream_repo,
            shipyard(stage("qa", sequence("delivery", task("e2e-test")))),
            files={"web/webhook/webhook.yaml": HOOK.format(url=receiver.url)},
        )

        # 1: the request reaches the receiver; the process dies before it records the answer
        first = start_reconciler(upstream_repo.path, data, log, crash_at="webhook.sent", env=ENV)
        wait_for(lambda: "reconciler.upstream.accepted" in types(data), what="the upstream accepted")
        deploy(upstream_repo, "2.0")
        assert killed(first) == -signal.SIGKILL, log.read_text()[-3000:]
        assert len(receiver.seen) == 1
        recorded = types(data)
        assert "reconciler.webhook.attempt" in recorded and "reconciler.webhook.answer" not in recorded

        # 2: the restart sends it again with the same key; it dies once the answer is recorded
        second = start_reconciler(upstream_repo.path, data, log, crash_at="webhook.answered", env=ENV)
        assert killed(second) == -signal.SIGKILL, log.read_text()[-3000:]
        keys = [s.header("Idempotency-Key") for s in receiver.seen]
        assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
        effects = {key for key in keys}  # what a receiver that honours Idempotency-Key does
        assert len(effects) == 1
        recorded = types(data)
        assert "reconciler.webhook.answer" in recorded and "sh.keptn.event.e2e-test.finished" not in recorded

        # 3: after a recorded 2xx nothing is sent again; the task and the delivery finish
        third = start_reconciler(upstream_repo.path, data, log, env=ENV)
        try:
            wait_for(
                lambda: "sh.keptn.event.qa.delivery.finished" in types(data), timeout=90, what="the delivery"
            )
            time.sleep(1.0)  # a resend would come right after the restart's first cycle
        finally:
            third.send_signal(signal.SIGTERM)
            third.wait(timeout=60)
        assert len(receiver.seen) == 2

    events = ledger_events(data)
    [done] = [e for e in events if e.type == "sh.keptn.event.qa.delivery.finished"]
    assert done.result == "pass"
    attempts = [e.data["webhook"]["attempt"] for e in events if e.type == "reconciler.webhook.attempt"]
    assert attempts == [1, 2]
    assert [e.type for e in events].count("sh.keptn.event.e2e-test.finished") == 1
    assert len({e.id for e in events}) == len(events)
