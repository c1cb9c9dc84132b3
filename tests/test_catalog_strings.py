"""The catalog's compact string table: what a list of ids and a dict of their positions did."""

from __future__ import annotations

import random

import pytest

from reconciler.ledger.catalog import FOLD_MIN, Catalog, EventMeta, Strings


def test_strings_answer_like_a_list_and_a_dict_across_folds() -> None:
    rng = random.Random(7)
    values = [f"id-{rng.getrandbits(64):x}" for _ in range(3 * FOLD_MIN + 17)]
    values += ["", "naïve-ü", "with\nnewline", "x" * 500]
    strings = Strings(values[:100])
    for value in values[100:]:
        strings.append(value)
    assert len(strings) == len(values)
    assert list(strings) == values
    assert strings[:10] == values[:10]
    assert strings[-1] == values[-1]
    for position, value in enumerate(values):
        assert strings[position] == value
        assert strings.find(value) == position
    assert strings.find("id-absent") == -1
    for outside in (len(values), -len(values) - 1, -10 * len(values)):
        with pytest.raises(IndexError):
            strings[outside]
    assert "with\nnewline" in strings and "nope" not in strings
    strings.fold()
    assert [strings.find(v) for v in values] == list(range(len(values)))


def test_a_catalog_finds_every_event_by_id_and_context_after_compacting() -> None:
    catalog = Catalog()
    metas = [
        EventMeta(
            id=f"e{i}",
            type="sh.keptn.event.a.triggered" if i % 2 else "sh.keptn.event.a.finished",
            context=f"ctx{i % 50}",
            triggeredid=f"e{i - 1}" if i % 2 == 0 and i else None,
            scope="p/s/svc",
            blob=i.to_bytes(20, "big"),
        )
        for i in range(2 * FOLD_MIN + 5)
    ]
    for meta in metas[: FOLD_MIN + 3]:
        catalog.add(meta)
    catalog.compact()
    for meta in metas[FOLD_MIN + 3 :]:
        catalog.add(meta)
    assert list(catalog.entries) == metas
    assert dict(catalog.positions) == {m.id: i for i, m in enumerate(metas)}
    assert catalog.select(None, "ctx7", None, len(metas)) == [i for i in range(len(metas)) if i % 50 == 7]
    assert catalog.select(None, "ctx-none", None, len(metas)) == []
    assert "e5" in catalog and "e-missing" not in catalog
