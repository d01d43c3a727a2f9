"""Mention replacement: names swapped, spans moved with them, labels kept, deterministic."""

from __future__ import annotations

import numpy as np

from models.mentions import replace_mentions
from models.spans import Annotated

NAMES = {"BRAND": ["Acme", "Zeta Labs"], "PRODUCT": ["trail runners", "tv", "robot vacuum"]}


def _data() -> Annotated:
    return Annotated(
        ["nike running shoes under $50", "Sony headphones reviews", "how to cook rice"],
        [0, 1, 2],
        [0, 1, -1],
        [[(0, 4, "BRAND"), (5, 18, "PRODUCT"), (25, 28, "PRICE")], [(0, 4, "BRAND")], []],
    )


def test_variants_keep_labels_and_move_every_span_with_the_text() -> None:
    data = _data()
    out = replace_mentions(data, NAMES, copies=3, seed=0)
    assert out.texts[:3] == data.texts and len(out) > len(data)
    assert "how to cook rice" not in out.texts[3:]  # nothing to replace
    for text, intent, spans in zip(out.texts[3:], out.intent[3:], out.spans[3:], strict=True):
        pieces = {label: text[s:e] for s, e, label in spans}
        if "PRICE" in pieces:  # a variant of the first query
            assert intent == 0 and pieces["PRICE"] == "$50"
            assert pieces["BRAND"] in ("acme", "zeta labs")  # lower case, as the original
            assert pieces["PRODUCT"] in NAMES["PRODUCT"]
            assert text == f"{pieces['BRAND']} {pieces['PRODUCT']} under $50"
        else:
            assert intent == 1 and pieces["BRAND"] in NAMES["BRAND"]  # capitalised kept
            assert text == f"{pieces['BRAND']} headphones reviews"
    assert len(set(out.texts)) == len(out.texts)


def test_deterministic_for_a_seed_and_off_without_copies_or_names() -> None:
    data = _data()
    a, b = (replace_mentions(data, NAMES, 2, seed=5) for _ in range(2))
    assert a.texts == b.texts and a.spans == b.spans
    assert np.array_equal(a.sentiment, b.sentiment)
    assert replace_mentions(data, NAMES, 0, seed=5) is data
    assert replace_mentions(data, {"BRAND": [" ", ""]}, 2, seed=5) is data
