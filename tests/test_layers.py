"""The layer rules of docs/architecture.md hold: no layer imports one above it or a sibling.

An ast walk over every module of `reconciler/` (lazy imports inside functions and
`if TYPE_CHECKING:` blocks count too), checked against the one table in
`tests/support/layers.py`, which is also the table the architecture document shows.
"""

from __future__ import annotations

import pytest

from tests.support import layers as L


@pytest.fixture(scope="module")
def tree() -> L.Tree:
    return L.scan()


def test_every_module_has_a_layer(tree: L.Tree) -> None:
    missing = sorted(m for m in tree.modules if L.layer_of(m) is None)
    assert not missing, f"add these packages to a row of tests/support/layers.py LAYERS: {missing}"


def test_no_layer_imports_one_above_or_a_sibling(tree: L.Tree) -> None:
    found = [(imp, why) for imp, why in L.violations(tree) if (imp.module, imp.target) not in L.KNOWN]
    assert not found, "layer rule broken:\n" + "\n".join(why for _, why in found)


def test_known_exceptions_only_shrink(tree: L.Tree) -> None:
    still = {(imp.module, imp.target) for imp, _ in L.violations(tree)}
    fixed = sorted(L.KNOWN - still)
    assert not fixed, f"these no longer occur: remove them from KNOWN in tests/support/layers.py: {fixed}"


def test_no_import_cycles(tree: L.Tree) -> None:
    assert L.cycles(tree) == []


def test_pure_layers_use_no_clock_randomness_or_io(tree: L.Tree) -> None:
    found = sorted(
        f"{where}: {what} in {module}"
        for module, what, where in L.impurities(tree)
        if (module, what) not in L.KNOWN_IMPURE
    )
    assert not found, "formats and core take time, ids and files as arguments:\n" + "\n".join(found)
    still = {(module, what) for module, what, _ in L.impurities(tree)}
    assert not sorted(L.KNOWN_IMPURE - still), "remove fixed entries from KNOWN_IMPURE"


def test_pure_layers_import_only_their_third_party_libraries(tree: L.Tree) -> None:
    found = []
    for imp in tree.third_party:
        layer = L.layer_of(imp.module)
        top = imp.target.split(".")[0]
        if layer is not None and layer.third_party is not None and top not in layer.third_party:
            found.append(f"{imp.file.relative_to(L.ROOT)}:{imp.line} imports {top} (layer {layer.name})")
    assert not found, "\n".join(found)


def test_the_checks_catch_what_they_claim() -> None:
    """The walk sees a lazy import and a relative one, and maps modules by their package."""
    assert L.layer_of("reconciler.core.anything").name == "core"  # type: ignore[union-attr]
    assert not L.allowed("reconciler.core.x", "reconciler.ledger.gitledger")
    assert not L.allowed("reconciler.upstream.poll", "reconciler.ledger.gitledger")  # siblings
    assert L.allowed("reconciler.executors.jobs", "reconciler.adapters.runner")
    assert not L.allowed("reconciler.formats.events", "reconciler.core.planning")
    assert L.allowed("reconciler.cli.run", "reconciler.controller.loop.wiring")
    assert L.allowed("reconciler.app", "reconciler.controller.loop")  # one row: controller
    assert not L.allowed("reconciler.ingress.routes", "reconciler.api.routes")  # a layer above


def test_the_architecture_document_shows_the_enforced_table() -> None:
    """docs/architecture.md's layer table is rendered from the table this suite enforces
    (`python -m tests.support.layers --write` puts it back after a change)."""
    shown = L.doc_table(L.DOC.read_text())
    assert shown is not None, f"{L.DOC} lacks the layer table markers"
    assert shown == L.render(), (
        "the layer table in docs/architecture.md is stale: run python -m tests.support.layers --write"
    )
