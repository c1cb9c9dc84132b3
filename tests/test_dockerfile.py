"""The Dockerfile has the properties issue 8 asks for. No Docker engine runs here, so the file is
parsed and checked; the opt-in slow test runs its build stage's commands for real in a
directory laid out like the image and starts `reconciler run --help` from the result."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage; continuation lines joined, comments and parser directives dropped."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buffer and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buffer and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"instruction before FROM: {line}"
            stages[-1].instructions.append((keyword, args))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            if sep:
                env[key] = value
    return env


def readme_install() -> list[str]:
    """The README's set-up command for running the reconciler, as its `&&` steps, minus the
    step that starts the demo: the venv and the package install."""
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1]
    blocks = re.findall(r"```sh\n(.*?)```", setup, flags=re.S)
    command = next(b.strip() for b in blocks if "pip install" in b and "pytest" not in b)
    steps = [" ".join(s.split()) for s in command.split("&&")]
    return [s for s in steps if "venv" in s.split()[:3] or re.search(r"(^|[/\s])pip install ", s)]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


def test_every_stage_uses_the_slim_python_base_pinned_by_version(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "not multi-stage"
    for stage in stages:
        assert PINNED_BASE.match(stage.base), stage.base
    assert len({s.base for s in stages}) == 1  # the venv's interpreter link must resolve in the final stage


def test_the_package_is_installed_exactly_as_the_readme_says(stages: list[Stage]) -> None:
    steps = readme_install()
    assert len(steps) == 2 and steps[0].startswith("python3 -m venv") and "pip install" in steps[1]
    build = stages[0]
    runs = [[" ".join(s.split()) for s in r.split("&&")] for r in build.all("RUN")]
    assert any(run[: len(steps)] == steps for run in runs), (steps, runs)
    # The install needs exactly these sources in the WORKDIR.
    copied = " ".join(build.all("COPY"))
    for needed in ("pyproject.toml", "README.md", "constraints.txt", "reconciler"):
        assert needed in copied


RUNTIME_PACKAGES = {"openssh-client"}  # ssh-keygen for approval_signers


def test_the_final_image_has_no_build_tools_or_caches(stages: list[Stage]) -> None:
    build, final = stages[0], stages[-1]
    assert env_of(build).get("PIP_NO_CACHE_DIR") in ("1", "true", "on")
    for args in final.all("RUN"):
        installs = re.findall(r"apt-get install ((?:--?[\w-]+ )*)([\w .+-]+?)(?=\s*(?:&&|$))", args)
        for flags, packages in installs:
            # Only the runtime tools the reconciler calls, without recommends, lists removed.
            assert set(packages.split()) <= RUNTIME_PACKAGES, packages
            assert "--no-install-recommends" in flags and "rm -rf /var/lib/apt/lists" in args, args
        rest = re.sub(r"apt-get (update|install [^&]*)", "", args)
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b\s+(install|build)", rest), args
        assert "--mount=type=cache" not in args
    copies = final.all("COPY")
    workdir = build.all("WORKDIR")[-1]
    assert copies == [f"--from={build.name} {workdir} {workdir}"]  # the app dir only, at the same path
    assert any("uninstall" in r and "pip" in r and "setuptools" in r for r in build.all("RUN"))


def test_the_image_runs_as_a_non_root_user_matching_the_deployment(stages: list[Stage]) -> None:
    final = stages[-1]
    user = final.all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0)
    keywords = [kw for kw, _ in final.instructions]
    assert keywords.index("ENTRYPOINT") > max(i for i, kw in enumerate(keywords) if kw == "USER")
    deployment = next(
        d for d in yaml.safe_load_all((REPO / "deploy" / "base" / "deployment.yaml").read_text()) if d
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_entrypoint_is_reconciler_run_configured_from_env_with_data_on_a_volume(stages: list[Stage]) -> None:
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["reconciler", "run"]
    assert not final.all("CMD")
    volumes = [v for args in final.all("VOLUME") for v in json.loads(args)]
    env = env_of(final)
    assert volumes == [env["RECONCILER_DATA_DIR"]]
    port = env["RECONCILER_API_LISTEN"].rsplit(":", 1)[1]
    assert final.all("EXPOSE") == [port]
    settings = dict(
        line.split("=", 1)
        for line in (REPO / "deploy" / "base" / "settings.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["RECONCILER_DATA_DIR"] == env["RECONCILER_DATA_DIR"]
    assert settings["RECONCILER_API_LISTEN"].rsplit(":", 1)[1] == port
    assert env["PATH"].startswith(f"{stages[0].all('WORKDIR')[-1]}/.venv/bin:")


def test_build_context_leaves_out_local_state() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    for needed in ("pyproject.toml", "README.md", "constraints.txt", "reconciler"):
        assert needed not in ignored


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_build_stage_commands_produce_a_working_reconciler(stages: list[Stage], tmp_path: Path) -> None:
    """Run the build stage's RUN lines (with the README's install) in a copy of its WORKDIR."""
    build = stages[0]
    workdir = tmp_path / build.all("WORKDIR")[-1].lstrip("/")
    workdir.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, workdir / name)
    shutil.copytree(REPO / "reconciler", workdir / "reconciler", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, **env_of(build)}
    env.pop("VIRTUAL_ENV", None)
    for run in build.all("RUN"):
        subprocess.run(["/bin/sh", "-c", run], cwd=workdir, env=env, check=True, timeout=800)
    venv = workdir / ".venv"
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not list(site.glob("pip")) and not list(site.glob("setuptools"))
    out = subprocess.run(
        [str(venv / "bin" / "reconciler"), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Poll the upstream" in out.stdout
