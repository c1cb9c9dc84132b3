"""The layer table: which package may import which, lowest layer first.

The one copy of the rules docs/architecture.md states: `tests/test_layers.py` checks every
import of `reconciler/` against it, and renders it into the architecture document between
the markers, so the picture cannot drift from what is enforced.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "reconciler"
DOC = ROOT / "docs" / "architecture.md"
BEGIN = "<!-- layers:begin (generated from tests/support/layers.py; tests/test_layers.py checks it) -->"
END = "<!-- layers:end -->"


@dataclass(frozen=True)
class Layer:
    name: str
    packages: tuple[str, ...]
    """Module prefixes (without `reconciler.`) that belong to this layer; the longest prefix wins."""
    role: str
    may: tuple[str, ...] = ()
    """Packages of lower layers this one may import (its own package always)."""
    third_party: tuple[str, ...] | None = None
    """Third-party imports allowed (checked for the pure layers); None: not checked."""
    apart: bool = False
    """The packages of this row may not import one another (siblings); otherwise they may."""


BASICS = ("base", "formats", "core")
EDGES = ("upstream", "ledger", "adapters")

LAYERS: tuple[Layer, ...] = (
    Layer(
        "base",
        ("base",),
        "process-wide basics: clock, ids, redaction, loggers, crash points",
        (),
        ("structlog",),
    ),
    Layer(
        "formats",
        ("formats",),
        "pydantic models of every file and event; Go's durations, regexes and templates",
        ("base",),
        ("pydantic", "yaml", "re2"),
    ),
    Layer(
        "core",
        ("core",),
        "pure decisions: admission, planning, scoring, job specs, outcomes (ids and times are arguments)",
        ("formats",),
        ("pydantic", "jsonpath_ng", "re2", "yaml"),
    ),
    Layer("settings", ("settings",), "the settings model", ("base", "formats", "core")),
    Layer(
        "edges",
        EDGES,
        "git, the ledger and the outside world: upstream mirror/poll/watch, the ledger, adapters "
        "(Prometheus, Kubernetes, local processes, HTTP); adapters report health in return values",
        BASICS,
        apart=True,
    ),
    Layer(
        "executors",
        ("executors",),
        "task executors: glue from a task to adapters, returning typed outcomes",
        (*BASICS, "settings", "adapters"),
    ),
    Layer(
        "runtime",
        ("runtime",),
        "running it for real: leadership, lifecycle, health board, data-dir lock, metrics, logging, status views",
        (*BASICS, "settings", "adapters"),
    ),
    Layer(
        "ingress",
        ("ingress",),
        "ways in: the shell around admission for CLI, inbox, Alertmanager, approval files",
        (*BASICS, "settings", "upstream", "ledger", "runtime"),
    ),
    Layer(
        "ui",
        ("ui",),
        "the web view under /ui/",
        (*BASICS, "settings", "upstream", "ledger", "runtime", "ingress"),
    ),
    Layer(
        "api",
        ("api",),
        "the HTTP API (route groups) and its server; mounts the web view",
        (*BASICS, "settings", "upstream", "ledger", "runtime", "ingress", "ui"),
    ),
    Layer(
        "controller",
        ("controller", "app", "appcontext"),
        "the control loop (fold, plan, dispatch, collect), the executors' context and the wiring",
        (*BASICS, "settings", *EDGES, "executors", "runtime", "ingress", "ui", "api"),
    ),
    Layer("demo", ("demo",), "the tutorial on one machine", ("*",)),
    Layer("cli", ("cli", "__main__", "configdoc", ""), "commands", ("*",)),
)


KNOWN: frozenset[tuple[str, str]] = frozenset()
"""(importing module, imported module) pairs still breaking the table; the list may only shrink."""

PURE_LAYERS = ("formats", "core")
BANNED_CALLS = frozenset(
    {
        "uuid.uuid1",
        "uuid.uuid4",
        "uuid1",
        "uuid4",
        "datetime.now",
        "datetime.utcnow",
        "datetime.today",
        "date.today",
        "time.time",
        "time.monotonic",
        "time.perf_counter",
        "time.sleep",
    }
)
BANNED_MODULES = frozenset({"random", "threading", "subprocess", "socket", "pygit2", "kubernetes", "secrets"})
KNOWN_IMPURE: frozenset[tuple[str, str]] = frozenset()
"""(module, call or import) pairs in the pure layers still to fix; may only shrink."""


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module, e.g. `reconciler.core.engine_state`."""
    target: str
    """The imported module (for `from a import b`: `a.b` when that is a module, else `a`)."""
    file: Path
    line: int


@dataclass
class Tree:
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)
    third_party: list[Import] = field(default_factory=list)


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def scan() -> Tree:
    """Every import anywhere in `reconciler/` (function-local and TYPE_CHECKING ones count too)."""
    tree = Tree()
    files = sorted(PACKAGE.rglob("*.py"))
    for path in files:
        tree.modules[module_of(path)] = path
    for path in files:
        module = module_of(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, path.name == "__init__.py", node)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in tree.modules else source)
            for target in targets:
                imp = Import(module, target, path, node.lineno)
                if target == "reconciler" or target.startswith("reconciler."):
                    tree.imports.append(imp)
                else:
                    top = target.split(".")[0]
                    if top and top not in sys.stdlib_module_names and top != "__future__":
                        tree.third_party.append(imp)
    return tree


def package_of(module: str) -> str:
    """`reconciler.core.planning` -> `core`; `reconciler.settings` -> `settings`; `reconciler` -> ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> Layer | None:
    package = package_of(module)
    for layer in LAYERS:
        if package in layer.packages:
            return layer
    return None


def rank(layer: Layer) -> int:
    return LAYERS.index(layer)


def allowed(importer: str, target: str) -> bool:
    mine, theirs = layer_of(importer), layer_of(target)
    if mine is None or theirs is None:
        return False
    here, there = package_of(importer), package_of(target)
    if here == there or (theirs is mine and not mine.apart):
        return True
    if "*" in mine.may:
        return rank(theirs) < rank(mine)
    return there in mine.may


def violations(tree: Tree) -> Iterator[tuple[Import, str]]:
    for imp in tree.imports:
        if not allowed(imp.module, imp.target):
            layer = layer_of(imp.module)
            may = ", ".join(layer.may) if layer is not None else "?"
            yield (
                imp,
                f"{imp.file.relative_to(ROOT)}:{imp.line} imports {imp.target} (layer {layer.name if layer else '?'} may import: {may})",
            )


def cycles(tree: Tree) -> list[list[str]]:
    """Module-level import cycles (imports at module level only: a lazy import breaks no start-up)."""
    graph: dict[str, set[str]] = {m: set() for m in tree.modules}
    for path in tree.modules.values():
        module = module_of(path)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks never run
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, path.name == "__init__.py", node)
                names = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in tree.modules else source
                    for a in node.names
                ]
            graph[module].update(n for n in names if n in graph and n != module)
    found: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()

    def strong(v: str) -> None:  # Tarjan; the module graph is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def impurities(tree: Tree) -> Iterator[tuple[str, str, str]]:
    """(module, what, where) for clock, randomness and I/O in the pure layers."""
    for module, path in tree.modules.items():
        layer = layer_of(module)
        if layer is None or layer.name not in PURE_LAYERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            what = ""
            if isinstance(node, ast.Call):
                name = _dotted(node.func)
                if name in BANNED_CALLS or name.endswith(tuple("." + c for c in BANNED_CALLS)):
                    what = name
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                what = next((n for n in names if n.split(".")[0] in BANNED_MODULES), "")
            elif isinstance(node, ast.Attribute) and _dotted(node) == "os.environ":
                what = "os.environ"
            if what:
                yield module, what, f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"


def render() -> str:
    """The table as docs/architecture.md shows it."""
    lines = [
        "| # | layer | packages (`reconciler/…`) | role | may import from reconciler |",
        "|---|---|---|---|---|",
    ]
    for i, layer in enumerate(LAYERS):
        packages = " · ".join(f"`{p}`" if p else "`__init__`" for p in layer.packages)
        if layer.apart:
            packages += " (siblings: none imports another)"
        if "*" in layer.may:
            may = "everything below"
        else:
            may = ", ".join(f"`{m}`" for m in layer.may) or "— (stdlib only)"
        if layer.third_party:
            may += "; third-party: " + ", ".join(layer.third_party)
        lines.append(f"| {i} | {layer.name} | {packages} | {layer.role} | {may} |")
    return "\n".join(lines)


def doc_table(text: str) -> str | None:
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write_doc() -> None:
    """Put the rendered table between the markers of docs/architecture.md."""
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{BEGIN}\n{render()}\n{END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_doc()
    else:
        print(render())
