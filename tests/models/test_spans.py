"""models.spans: BIO alignment on a fast tokenizer's offsets (the tiny BERT of conftest), tolerant
decoding, exact-match span scores, prices and classification scores."""

from __future__ import annotations

import numpy as np
import pytest

from models.spans import (
    ENTITY_TYPES,
    align_labels,
    bio_tags,
    classification_scores,
    decode_spans,
    price_value,
    span_scores,
    understanding_scores,
    words,
)  # fmt: skip

TAGS = bio_tags(ENTITY_TYPES)


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    assert tok.is_fast  # offsets need a fast tokenizer; transformers builds one from vocab.txt
    return tok


def offsets_of(tokenizer, text: str) -> list[tuple[int, int]]:
    return [tuple(o) for o in tokenizer(text, return_offsets_mapping=True)["offset_mapping"]]


def named(ids: list[int]) -> list[str]:
    return [TAGS[i] if i >= 0 else "-" for i in ids]


def test_bio_tags() -> None:
    assert TAGS == ("O", "B-BRAND", "I-BRAND", "B-PRODUCT", "I-PRODUCT", "B-PRICE", "I-PRICE")


def test_a_word_is_tagged_on_its_first_sub_word_piece(tokenizer) -> None:
    text = "buy zork running shoes 50"  # zork is not in the tiny vocab: z ##o ##r ##k
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert pieces == ["[CLS]", "buy", "z", "##o", "##r", "##k", "running", "shoes", "5", "##0",
                      "[SEP]"]  # fmt: skip
    offsets = offsets_of(tokenizer, text)
    assert words(offsets) == [(1, 0, 3), (2, 4, 8), (6, 9, 16), (7, 17, 22), (8, 23, 25)]
    spans = [(4, 8, "BRAND"), (9, 22, "PRODUCT"), (23, 25, "PRICE"), (0, 3, "COLOUR")]
    got = named(align_labels(offsets, spans, TAGS))  # COLOUR has no tag
    assert got == ["-", "O", "B-BRAND", "-", "-", "-", "B-PRODUCT", "I-PRODUCT", "B-PRICE", "-",
                   "-"]  # fmt: skip
    # a span cut inside a word takes the whole word
    assert named(align_labels(offsets, [(5, 7, "BRAND")], TAGS))[2] == "B-BRAND"


def test_adjacent_spans_of_one_type_start_anew(tokenizer) -> None:
    text = "zork vexa"
    got = named(align_labels(offsets_of(tokenizer, text), [(0, 4, "BRAND"), (5, 9, "BRAND")], TAGS))
    assert got == ["-", "B-BRAND", "-", "-", "-", "B-BRAND", "-", "-", "-", "-"]


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("buy zork running shoes", [(4, 8, "BRAND"), (9, 22, "PRODUCT")]),
        ("zork vexa", [(0, 4, "BRAND"), (5, 9, "BRAND")]),
        ("yoga mat $50", [(0, 8, "PRODUCT"), (9, 12, "PRICE")]),
        ("cheap laptop for 120", [(6, 12, "PRODUCT"), (17, 20, "PRICE")]),
        ("the best coffee", []),
        ("qix", [(0, 3, "BRAND")]),
        ("", []),
    ],
)
def test_decode_inverts_align(tokenizer, text, spans) -> None:
    offsets = offsets_of(tokenizer, text)
    assert decode_spans(offsets, align_labels(offsets, spans, TAGS), TAGS) == spans


def test_decoding_is_tolerant() -> None:
    offsets = [(0, 0), (0, 3), (4, 5), (5, 8), (9, 12), (13, 16), (0, 0)]  # 4 words
    b, i, o = TAGS.index("B-BRAND"), TAGS.index("I-BRAND"), 0
    ip = TAGS.index("I-PRODUCT")
    # a stray I- after O starts a span; I- of another type starts another one
    assert decode_spans(offsets, [-100, o, i, o, ip, o, -100], TAGS) == [
        (4, 8, "BRAND"), (9, 12, "PRODUCT")
    ]  # fmt: skip
    # a word is read from its first piece: the span covers the whole word, whatever the
    # later pieces say; B- after B- splits
    assert decode_spans(offsets, [o, o, b, o, o, o, o], TAGS) == [(4, 8, "BRAND")]
    assert decode_spans(offsets, [o, o, o, b, o, o, o], TAGS) == []
    assert decode_spans(offsets, [o, b, o, o, b, i, o], TAGS) == [(0, 3, "BRAND"), (9, 16, "BRAND")]
    assert decode_spans(offsets, [o, b, b, o, o, o, o], TAGS) == [(0, 3, "BRAND"), (4, 8, "BRAND")]
    # the tags of special tokens never matter
    assert decode_spans(offsets, [b, o, o, o, o, o, i], TAGS) == []


def test_span_scores_exact_numbers() -> None:
    true = [[(0, 4, "BRAND"), (5, 9, "PRODUCT")], [(0, 3, "BRAND"), (4, 7, "PRICE")], []]
    pred = [[(0, 4, "BRAND"), (5, 8, "PRODUCT")], [(0, 3, "BRAND")], [(0, 2, "PRICE")]]
    got = span_scores(true, pred, ENTITY_TYPES)
    assert got["BRAND"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert got["PRODUCT"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert got["PRICE"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    micro = got["micro"]
    assert (micro["precision"], micro["recall"], micro["support"]) == (0.5, 0.5, 4)
    assert micro["f1"] == pytest.approx(0.5)
    assert span_scores([[]], [[]], ENTITY_TYPES)["micro"]["f1"] == 0.0
    with pytest.raises(ValueError, match="2 true"):
        span_scores([[], []], [[]], ENTITY_TYPES)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$50", 50.0), ("1,200 dollars", 1200.0), ("80", 80.0), ("$ 12.99", 12.99),
        ("under 2k", 2000.0), ("80 bucks", 80.0), ("less than €300", 300.0), (" 45 USD ", 45.0),
        ("junk", None), ("", None), ("50 shoes", None), ("1,20", None), (None, None),
    ],
)  # fmt: skip
def test_price_value(text, value) -> None:
    assert price_value(text) == value


def test_classification_scores() -> None:
    got = classification_scores([0, 0, 1, 2, -1], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert got["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert got["accuracy"] == 0.5 and got["n"] == 4
    assert got["per_class"]["b"] == {
        "precision": pytest.approx(1 / 3), "recall": 1.0, "f1": 0.5, "support": 1
    }  # fmt: skip
    assert got["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    # a class absent from truth and prediction does not count in the macro F1
    assert classification_scores([0, 1], [0, 1], ["a", "b", "c"])["macro_f1"] == 1.0
    assert np.isnan(classification_scores([-1], [0], ["a", "b"])["accuracy"])


def test_understanding_scores_select_on_what_valid_has() -> None:
    spans_true = [[(0, 4, "BRAND")], []]
    got = understanding_scores(
        ([0, 1], [0, 0]), ([1, -1], [1, 0]), (spans_true, [[(0, 4, "BRAND")], []]),
        ["a", "b"], ["neg", "pos"],
    )  # fmt: skip
    assert got["intent_macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert got["sentiment_accuracy"] == 1.0 and got["entity_f1"] == 1.0
    assert got["score"] == pytest.approx((1 / 3 + 1.0 + 1.0) / 3)
    # no labelled sentiment and no true span: the score is the intent macro-F1 alone
    bare = understanding_scores(
        ([0, 1], [0, 1]), ([-1, -1], [0, 0]), ([[], []], [[(0, 1, "PRICE")], []]),
        ["a", "b"], ["neg", "pos"],
    )  # fmt: skip
    assert bare["score"] == 1.0 and np.isnan(bare["sentiment_accuracy"])
