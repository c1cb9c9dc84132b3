"""Package a Helm chart source directory reproducibly, and render its simple templates.

There is no helm binary on the machines this project is built on, yet the example
upstream must carry `helloservice/charts/helloservice.tgz` on every stage branch.
A packaged chart checked into git drifts from its source unless it can be rebuilt
byte for byte, so the archive here is deterministic: the layout `helm package`
produces (one top directory named after the chart, `Chart.yaml` first), with fixed
modification times, owners, modes and order, and a gzip header without a time
stamp. Re-running the packager on an unchanged source gives identical bytes, which
`tests/test_example_upstream.py` checks against the committed archives.

Rendering covers exactly what the example chart uses: `{{ .Values.<path> }}`,
`{{ .Release.Name }}`, `{{ .Release.Namespace }}`, `{{ .Chart.<Field> }}`, each
optionally piped through `quote`. Anything else is refused with the template and
line, so a chart that needs real Go templates fails loudly instead of being
half-rendered. `reconciler.demo.localhelm` renders a packaged chart this way to
learn what to run (replicas, image, port) from the chart itself.

Command line::

    python -m reconciler.demo.chartpack SRC_DIR OUT.tgz [OUT2.tgz ...]   # write
    python -m reconciler.demo.chartpack --check SRC_DIR OUT.tgz [...]    # exit 1 on drift

May import: stdlib, PyYAML, pydantic and `reconciler.formats` (located errors).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from reconciler.formats.problems import ConfigError, Problem
from reconciler.formats.yamldoc import parse_model

FIXED_MTIME = 1654041600
"""2022-06-01T00:00:00Z, the tutorial's era; any constant works, it only has to stay put."""

FILE_MODE = 0o644
MAX_CHART_BYTES = 4 * 1024 * 1024


class ChartMeta(BaseModel):
    """The parts of `Chart.yaml` the packager and renderer rely on."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_version: str = Field(alias="apiVersion")
    name: str
    version: str
    app_version: str | None = Field(default=None, alias="appVersion")

    @field_validator("api_version")
    @classmethod
    def _v2(cls, value: str) -> str:
        if value != "v2":
            raise ValueError(f"apiVersion {value!r} is not supported; expected v2 (Helm 3 charts)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", value):
            raise ValueError(f"chart name {value!r} is invalid; expected lower-case letters, digits and '-'")
        return value

    @field_validator("version", "app_version", mode="before")
    @classmethod
    def _str(cls, value: Any) -> Any:
        return None if value is None else str(value)


@dataclass(frozen=True)
class Chart:
    """A chart's files keyed by their path inside the chart directory."""

    meta: ChartMeta
    files: Mapping[str, bytes]

    @property
    def values(self) -> dict[str, Any]:
        raw = self.files.get("values.yaml")
        if raw is None:
            return {}
        loaded = yaml.safe_load(raw)
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ConfigError([Problem(file="values.yaml", message="expected a mapping of values")])
        return loaded

    def templates(self) -> list[tuple[str, str]]:
        return [
            (path, data.decode("utf-8"))
            for path, data in sorted(self.files.items())
            if path.startswith("templates/") and path.endswith((".yaml", ".yml"))
        ]


def _ordered(paths: Sequence[str]) -> list[str]:
    """`Chart.yaml` first, like `helm package`, then the rest in byte order."""
    return sorted(paths, key=lambda p: (p != "Chart.yaml", p.encode()))


def read_source(src: Path) -> Chart:
    """Read a chart directory; symlinks and special files are refused (they would not reproduce)."""
    src = Path(src)
    if not (src / "Chart.yaml").is_file():
        raise ConfigError(
            [Problem(file=str(src / "Chart.yaml"), message="missing; expected a Helm chart directory")]
        )
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if path.is_symlink():
            raise ConfigError(
                [Problem(file=str(path), message="is a symbolic link; expected regular files only")]
            )
        if path.is_dir():
            continue
        if not path.is_file():
            raise ConfigError([Problem(file=str(path), message="is not a regular file")])
        data = path.read_bytes()
        total += len(data)
        if total > MAX_CHART_BYTES:
            raise ConfigError(
                [Problem(file=str(src), message=f"chart is larger than {MAX_CHART_BYTES} bytes")]
            )
        files[rel] = data
    meta = parse_model(ChartMeta, files["Chart.yaml"], str(src / "Chart.yaml"))
    return Chart(meta=meta, files=files)


def pack(chart: Chart) -> bytes:
    """The .tgz bytes; identical for identical chart files."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in _ordered(list(chart.files)):
            data = chart.files[rel]
            info = tarfile.TarInfo(name=f"{chart.meta.name}/{rel}")
            info.size = len(data)
            info.mtime = FIXED_MTIME
            info.mode = FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def pack_directory(src: Path) -> bytes:
    return pack(read_source(src))


def load_packaged(data: bytes, file: str = "chart.tgz") -> Chart:
    """Read a packaged chart (as made by `pack` or `helm package`) from its bytes."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise ConfigError(
            [Problem(file=file, message=f"not a gzip archive ({exc}); expected a packaged chart")]
        ) from None
    if len(raw) > MAX_CHART_BYTES:
        raise ConfigError([Problem(file=file, message=f"chart is larger than {MAX_CHART_BYTES} bytes")])
    files: dict[str, bytes] = {}
    top: str | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar.getmembers():
                if member.isdir():
                    continue
                if not member.isreg():
                    raise ConfigError(
                        [Problem(file=file, message=f"{member.name}: expected regular files only")]
                    )
                head, _, rel = member.name.partition("/")
                if not rel or ".." in rel.split("/") or rel.startswith("/"):
                    raise ConfigError(
                        [
                            Problem(
                                file=file,
                                message=f"{member.name}: expected <chart>/<path> inside the archive",
                            )
                        ]
                    )
                if top is None:
                    top = head
                elif head != top:
                    raise ConfigError(
                        [
                            Problem(
                                file=file,
                                message=f"{member.name}: more than one top directory ({top}, {head})",
                            )
                        ]
                    )
                handle = tar.extractfile(member)
                assert handle is not None
                files[rel] = handle.read()
    except tarfile.TarError as exc:
        raise ConfigError(
            [Problem(file=file, message=f"not a tar archive ({exc}); expected a packaged chart")]
        ) from None
    if "Chart.yaml" not in files:
        raise ConfigError(
            [Problem(file=file, message="no <chart>/Chart.yaml inside; expected a packaged chart")]
        )
    meta = parse_model(ChartMeta, files["Chart.yaml"], f"{file}:{top}/Chart.yaml")
    if meta.name != top:
        raise ConfigError(
            [Problem(file=file, message=f"top directory {top!r} differs from the chart name {meta.name!r}")]
        )
    return Chart(meta=meta, files=files)


_EXPR = re.compile(r"\{\{(.*?)\}\}")
_TERM = re.compile(r"^\.(Values|Release|Chart)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)$")


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"{where} is a {type(value).__name__}; only scalars can be rendered here")


def _lookup(root: str, path: list[str], scope: Mapping[str, Mapping[str, Any]]) -> Any:
    current: Any = scope[root]
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            raise ValueError(f".{root}.{'.'.join(path)} has no value")
        current = current[part]
    return current


def render_text(text: str, scope: Mapping[str, Mapping[str, Any]], file: str) -> str:
    """Substitute the supported `{{ }}` expressions in one template."""
    out_lines: list[str] = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):

        def one(match: re.Match[str], number: int = number) -> str:
            body = match.group(1)
            if body.startswith("-") or body.endswith("-"):
                raise ConfigError(
                    [
                        Problem(
                            file=file,
                            line=number,
                            message="whitespace trimming {{- -}} is not supported here",
                        )
                    ]
                )
            parts = [p.strip() for p in body.split("|")]
            term, pipes = parts[0], parts[1:]
            found = _TERM.match(term)
            if not found or any(p != "quote" for p in pipes):
                raise ConfigError(
                    [
                        Problem(
                            file=file,
                            line=number,
                            message=f"unsupported template expression {{{{{body}}}}}; expected "
                            "{{ .Values.x }}, {{ .Release.Name|Namespace }} or {{ .Chart.X }}, optionally | quote",
                        )
                    ]
                )
            path = [p for p in found.group(2).split(".") if p]
            try:
                text_value = _scalar(_lookup(found.group(1), path, scope), term)
            except ValueError as exc:
                raise ConfigError([Problem(file=file, line=number, message=str(exc))]) from None
            return _quote(text_value) if pipes else text_value

        out_lines.append(_EXPR.sub(one, line))
    return "".join(out_lines)


def render(chart: Chart, values: Mapping[str, Any], *, release: str, namespace: str) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart's templates produce for these values."""
    scope: dict[str, Mapping[str, Any]] = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace},
        "Chart": {
            "Name": chart.meta.name,
            "Version": chart.meta.version,
            "AppVersion": chart.meta.app_version or "",
        },
    }
    objects: list[dict[str, Any]] = []
    for path, text in chart.templates():
        rendered = render_text(text, scope, path)
        try:
            docs = list(yaml.safe_load_all(rendered))
        except yaml.YAMLError as exc:
            raise ConfigError([Problem(file=path, message=f"rendered template is not YAML: {exc}")]) from None
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ConfigError(
                    [Problem(file=path, message="rendered document is not a Kubernetes object")]
                )
            objects.append(doc)
    return objects


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = False
    if args and args[0] == "--check":
        check, args = True, args[1:]
    if len(args) < 2:
        print(
            "usage: python -m reconciler.demo.chartpack [--check] SRC_DIR OUT.tgz [OUT.tgz ...]",
            file=sys.stderr,
        )
        return 2
    src, outs = Path(args[0]), [Path(a) for a in args[1:]]
    try:
        data = pack_directory(src)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    status = 0
    for out in outs:
        if check:
            if not out.is_file() or out.read_bytes() != data:
                print(
                    f"{out}: differs from a fresh packaging of {src}; re-run without --check", file=sys.stderr
                )
                status = 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        print(f"{out}: {len(data)} bytes")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
