"""An upstream token pasted into `reconciler run --upstream URL` never stays on the command line.

Issue 20, item 6: `reconciler run --upstream https://TOKEN@host/repo.git` showed the token in
`ps -ef` (which reads /proc/<pid>/cmdline) to every user of the host, for as long as the
reconciler ran. Now the process starts itself again at once (same pid) with the URL
cleaned and the token in its environment; fetching still uses it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.settings import Settings
from reconciler.upstream.credentials import argv_without_secret
from tests.support.crash import (
    REPO_ROOT,
    child_environment,
    ledger_events,
    stop_gracefully,
    wait_running,
)
from tests.support.gitserver import SmartHttp, UpstreamRepo
from tests.support.shop import approval, sequence, shipyard, stage

TOKEN = "glpat-argv-test-9f8e7d6c"
SHIPYARD = shipyard(stage("qa", sequence("ping", approval())))


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("userinfo", [f"{TOKEN}@", f"oauth2:{TOKEN}@"], ids=["token", "user-and-token"])
def test_a_token_in_the_upstream_url_leaves_the_command_line_and_still_authenticates(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_http_factory: Callable[..., SmartHttp], userinfo: str
) -> None:
    upstream_repo.commit("main", {"shipyard.yaml": SHIPYARD, "metadata.yaml": "projectName: shop\n"}, "main")
    upstream_repo.commit("qa", {"api/values.yaml": "image: api:1\n"}, "qa", base="main")
    server = git_http_factory(token=TOKEN)
    clean = server.url("project.git")
    data_dir = tmp_path / "data"
    log = tmp_path / "run.log"
    url = clean.replace("http://", f"http://{userinfo}")
    command = [sys.executable, "-m", "reconciler", "run", "--upstream", url, "--data-dir", str(data_dir)]
    command += ["--runner", "local", "--api-listen", "", "--poll-interval", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            env=child_environment({"RECONCILER_LOG_FORMAT": "json", "RECONCILER_LEDGER_PUSH": "never"}),
            cwd=str(REPO_ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_running(proc, data_dir, time.monotonic() + 60), log.read_text()
        args = cmdline(proc.pid)  # what `ps -ef` shows, same pid as started
        assert not any(TOKEN in arg for arg in args), args
        assert clean in args, args
        # ... and the upstream, which demands the token, was fetched with it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            types = [e.type for e in ledger_events(data_dir)]
            if types.count("reconciler.upstream.accepted") >= 2:
                break
            time.sleep(0.2)
        assert types.count("reconciler.upstream.accepted") >= 2, log.read_text()[-3000:]
        status = json.loads((data_dir / "status.json").read_text())
        assert TOKEN not in json.dumps(status)
        assert stop_gracefully(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert TOKEN not in log.read_text()
    assert "upstream_secret_moved_off_the_command_line" in log.read_text()


def test_explicit_credential_settings_win_and_the_urls_are_dropped() -> None:
    argv = [
        "/usr/bin/python3",
        "-m",
        "reconciler",
        "run",
        "--upstream=https://bot:s3cr3t@git.example.com/x.git",
    ]
    url = "https://bot:s3cr3t@git.example.com/x.git"
    moved = argv_without_secret(argv, url, Settings(), executable="/venv/bin/python")
    assert moved is not None
    assert moved.argv == [
        "/venv/bin/python",
        "-m",
        "reconciler",
        "run",
        "--upstream=https://git.example.com/x.git",
    ]
    assert moved.env == {"RECONCILER_UPSTREAM_TOKEN": "s3cr3t", "RECONCILER_UPSTREAM_USERNAME": "bot"}
    given = argv_without_secret(argv, url, Settings(upstream_token="other"), executable="/venv/bin/python")
    assert given is not None and given.env == {}  # as resolve_upstream: the explicit token wins
    assert argv_without_secret(argv, "https://git.example.com/x.git", Settings(), executable="p") is None
    assert argv_without_secret(argv, "git@github.com:team/x.git", Settings(), executable="p") is None
    with pytest.raises(ValueError, match="RECONCILER_UPSTREAM_TOKEN"):
        argv_without_secret(["python", "run"], url, Settings(), executable="p")  # not found to take out
