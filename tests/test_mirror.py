"""The upstream mirror over every transport we can serve on 127.0.0.1, and credential hygiene."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from reconciler.base.redact import redact
from reconciler.settings import Settings
from reconciler.upstream.credentials import Credentials, Upstream, resolve_upstream, split_url, transport_of
from reconciler.upstream.files import GitFiles
from reconciler.upstream.mirror import KEEP_PREFIX, Mirror, UpstreamError
from tests.support.gitserver import GitDaemon, SmartHttp, SshServer, UpstreamRepo

SHIPYARD = "apiVersion: spec.keptn.sh/0.2.2\nkind: Shipyard\nspec:\n  stages:\n  - name: qa\n"


def seeded(upstream: UpstreamRepo) -> dict[str, str]:
    main = upstream.commit("main", {"shipyard.yaml": SHIPYARD}, "shipyard")
    qa = upstream.commit("qa", {"helloservice/slo.yaml": "objectives: []\n"}, "slo", base="main")
    return {"main": main, "qa": qa}


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_a_local_upstream_is_mirrored_with_every_branch(
    tmp_path: Path, upstream_repo: UpstreamRepo, form: str
) -> None:
    tips = seeded(upstream_repo)
    url = str(upstream_repo.path) if form == "path" else upstream_repo.path.as_uri()
    upstream = resolve_upstream(Settings(upstream=url))
    assert upstream.transport == ("local" if form == "path" else "file")
    assert upstream.local_path == upstream_repo.path
    mirror = Mirror.in_data_dir(tmp_path / "data", upstream)
    assert mirror.fetch() == tips
    files = mirror.files()
    assert files.read("qa", "helloservice/slo.yaml") == b"objectives: []\n"
    assert files.read("qa", "shipyard.yaml", commit=tips["main"]) == SHIPYARD.encode()
    assert (tmp_path / "data" / "upstream.git" / "HEAD").is_file()


def test_git_daemon_upstream_is_fetched_and_new_commits_arrive(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_daemon: GitDaemon
) -> None:
    seeded(upstream_repo)
    mirror = Mirror(
        tmp_path / "mirror.git", resolve_upstream(Settings(upstream=git_daemon.url("project.git")))
    )
    mirror.fetch()
    newer = upstream_repo.commit("qa", {"helloservice/values.yaml": "image: a:2\n"}, "bump")
    assert mirror.fetch()["qa"] == newer
    assert mirror.files().read("qa", "helloservice/values.yaml") == b"image: a:2\n"


def test_force_pushed_and_deleted_branches_keep_their_old_commits_readable(
    tmp_path: Path, upstream_repo: UpstreamRepo
) -> None:
    tips = seeded(upstream_repo)
    upstream_repo.commit("feature", {"x": "1"}, base="main")
    mirror = Mirror(tmp_path / "mirror.git", Upstream(url=str(upstream_repo.path), transport="local"))
    first = mirror.fetch()
    rewritten = upstream_repo.force_push("qa", {"helloservice/slo.yaml": "rewritten\n"})
    upstream_repo.delete_branch("feature")
    after = mirror.fetch()
    assert after["qa"] == rewritten and "feature" not in after
    files = mirror.files()
    # a sequence pinned to the old commit still reads it
    assert files.read("qa", "helloservice/slo.yaml", commit=tips["qa"]) == b"objectives: []\n"
    assert files.read("feature", "x", commit=first["feature"]) == b"1"
    keep = {r for r in mirror.repo.references if r.startswith(KEEP_PREFIX)}
    assert keep == {KEEP_PREFIX + tips["qa"], KEEP_PREFIX + first["feature"]}


def test_http_upstream_with_a_token_in_the_url_never_stores_or_shows_it(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_http_factory: Callable[..., SmartHttp]
) -> None:
    token = "glpat-s3cr3tT0kenValue"
    server = git_http_factory(token=token)
    tips = seeded(upstream_repo)
    raw = server.url("project.git").replace("http://", f"http://oauth2:{token}@")
    upstream = resolve_upstream(Settings(upstream=raw))
    assert token not in upstream.url and token not in repr(upstream)
    mirror = Mirror(tmp_path / "mirror.git", upstream)
    assert mirror.fetch() == tips
    assert server.rejected >= 1 and server.seen_authorization  # challenged, then answered
    config = (tmp_path / "mirror.git" / "config").read_text()
    assert token not in config and server.url("project.git") in config
    for f in (tmp_path / "mirror.git").rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f
    assert token not in redact(f"cloning {raw} failed")


def test_a_refused_token_is_an_authentication_failure_without_the_token_in_the_message(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_http_factory: Callable[..., SmartHttp]
) -> None:
    server = git_http_factory(token="the-right-token")
    seeded(upstream_repo)
    wrong = "wrong-token-123456"
    settings = Settings(upstream=server.url("project.git"), upstream_token=SecretStr(wrong))
    mirror = Mirror(tmp_path / "mirror.git", resolve_upstream(settings))
    with pytest.raises(UpstreamError) as info:
        mirror.fetch()
    assert info.value.reason == "unauthenticated"
    assert wrong not in str(info.value)


def test_an_upstream_asking_for_credentials_we_do_not_have_says_what_to_set(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_http_factory: Callable[..., SmartHttp]
) -> None:
    server = git_http_factory(basic=("deploy", "pw-9f8e7d6c"))
    seeded(upstream_repo)
    mirror = Mirror(tmp_path / "mirror.git", resolve_upstream(Settings(upstream=server.url("project.git"))))
    with pytest.raises(UpstreamError) as info:
        mirror.fetch()
    assert info.value.reason == "unauthenticated"
    assert "RECONCILER_UPSTREAM_TOKEN" in str(info.value)


def test_basic_auth_and_token_file_from_settings(
    tmp_path: Path, upstream_repo: UpstreamRepo, git_http_factory: Callable[..., SmartHttp]
) -> None:
    tips = seeded(upstream_repo)
    basic = git_http_factory(basic=("deploy", "pw-9f8e7d6c"))
    settings = Settings(
        upstream=basic.url("project.git"),
        upstream_username="deploy",
        upstream_password=SecretStr("pw-9f8e7d6c"),
    )
    assert Mirror(tmp_path / "a.git", resolve_upstream(settings)).fetch() == tips

    token_server = git_http_factory(token="file-token-abcdef")
    secret_file = tmp_path / "secret" / "token"
    secret_file.parent.mkdir()
    secret_file.write_text("file-token-abcdef\n")  # a mounted Secret ends with a newline
    settings = Settings(upstream=token_server.url("project.git"), upstream_token_file=secret_file)
    assert Mirror(tmp_path / "b.git", resolve_upstream(settings)).fetch() == tips


def test_ssh_upstream_with_a_key_and_known_hosts(
    tmp_path: Path, upstream_repo: UpstreamRepo, ssh_server: SshServer
) -> None:
    tips = seeded(upstream_repo)
    settings = Settings(
        upstream=ssh_server.url(upstream_repo.path),
        upstream_ssh_key=ssh_server.client_key,
        upstream_known_hosts=ssh_server.known_hosts,
    )
    upstream = resolve_upstream(settings)
    assert upstream.transport == "ssh"
    assert Mirror(tmp_path / "ok.git", upstream).fetch() == tips

    wrong_key = settings.model_copy(update={"upstream_ssh_key": ssh_server.stranger_key})
    with pytest.raises(UpstreamError) as info:
        Mirror(tmp_path / "wrong-key.git", resolve_upstream(wrong_key)).fetch()
    assert info.value.reason == "unauthenticated"


def test_ssh_host_with_an_unknown_key_is_refused(
    tmp_path: Path, upstream_repo: UpstreamRepo, ssh_server: SshServer
) -> None:
    seeded(upstream_repo)
    settings = Settings(
        upstream=ssh_server.url(upstream_repo.path),
        upstream_ssh_key=ssh_server.client_key,
        upstream_known_hosts=ssh_server.wrong_known_hosts,  # a man in the middle would look like this
    )
    mirror = Mirror(tmp_path / "m.git", resolve_upstream(settings))
    with pytest.raises(UpstreamError) as info:
        mirror.fetch()
    assert info.value.reason == "unauthenticated"
    assert "host key" in str(info.value) and "known_hosts" in str(info.value)
    assert mirror.branches() == {}


def test_an_unreachable_upstream_is_reported_as_such(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "mirror.git", Upstream(url="git://127.0.0.1:9/nothing.git", transport="git"))
    with pytest.raises(UpstreamError) as info:
        mirror.fetch()
    assert info.value.reason == "unreachable"
    assert "git://127.0.0.1:9/nothing.git" in str(info.value)


@pytest.mark.parametrize(
    ("url", "clean", "user", "secret", "transport"),
    [
        (
            "https://TOKEN123@git.example.com/org/repo.git",
            "https://git.example.com/org/repo.git",
            None,
            "TOKEN123",
            "http",
        ),
        (
            "https://oauth2:glpat-x@gitlab.example.com/g/r",
            "https://gitlab.example.com/g/r",
            "oauth2",
            "glpat-x",
            "http",
        ),
        ("http://u%40x:p%3Aw@h:8080/r", "http://h:8080/r", "u@x", "p:w", "http"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git", "git", None, "ssh"),
        ("ssh://git@host:2222/r.git", "ssh://git@host:2222/r.git", "git", None, "ssh"),
        ("git://host/r.git", "git://host/r.git", None, None, "git"),
        ("file:///srv/r.git", "file:///srv/r.git", None, None, "file"),
        ("/srv/r.git", "/srv/r.git", None, None, "local"),
    ],
)
def test_credentials_are_split_off_every_url_form(
    url: str, clean: str, user: str | None, secret: str | None, transport: str
) -> None:
    assert split_url(url) == (clean, user, secret)
    assert transport_of(clean) == transport


def test_credentials_repr_never_shows_the_secret() -> None:
    creds = Credentials(username="git", secret="hunter2-long-secret")
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)


def test_mirror_is_usable_by_the_git_cli(tmp_path: Path, upstream_repo: UpstreamRepo) -> None:
    seeded(upstream_repo)
    mirror = Mirror(tmp_path / "mirror.git", resolve_upstream(Settings(upstream=str(upstream_repo.path))))
    mirror.fetch()
    out = subprocess.run(
        ["git", f"--git-dir={tmp_path / 'mirror.git'}", "show", "qa:helloservice/slo.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "objectives: []\n"


def test_files_pinned_to_commits_past_the_kept_trees_still_read_their_own_content(
    upstream_repo: UpstreamRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader keeps only so many root-tree entries (issue 19): a tree it let go is read
    again, never answered from another commit's tree, and one tree over the budget is kept."""
    seeded(upstream_repo)
    many = {f"svc{n:03d}/values.yaml": f"image: a:{n}\n" for n in range(40)}
    commits = [
        upstream_repo.commit("qa", {**many, "helloservice/values.yaml": f"image: web:{k}\n"}, f"bump {k}")
        for k in range(6)
    ]
    monkeypatch.setattr(GitFiles, "TREE_ENTRIES", 50)  # each root tree has ~42 entries: one kept
    files = GitFiles(upstream_repo.path)
    for _ in range(2):
        for k, sha in enumerate(commits):
            assert files.read("qa", "helloservice/values.yaml", commit=sha) == f"image: web:{k}\n".encode()
    assert files.read("qa", "helloservice/values.yaml") == b"image: web:5\n"
    assert files.read("qa", "svc007/values.yaml", commit=commits[0]) == b"image: a:7\n"
