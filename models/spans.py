"""Labelled search queries, their entity spans and the scores of query understanding (pure
python / numpy).

A span is `(start, end, label)` in characters of the query (end exclusive). Labels are BIO
tags of words, over a fast tokenizer's offsets (`return_offsets_mapping`; special tokens carry
`(0, 0)`): a word is a run of glued tokens (`words`), its first token carries the tag (the
common recipe for sub-word tokenizers), so a predicted span never starts or ends inside a
word. `align_labels` turns spans into tag ids and `decode_spans` turns tag ids back into
spans. Scores: exact-match span precision / recall / F1 per type (`span_scores`) and per-class
classification scores with the confusion matrix (`classification_scores`), and both with the
selection score of a query labelling (`understanding_scores`, the same for the tagger and the
baselines). `price_value` reads the amount of a PRICE span.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ENTITY_TYPES = ("BRAND", "PRODUCT", "PRICE")
Span = tuple[int, int, str]
IGNORE = -100  # the tag id of special tokens (skipped by the token loss)

# an amount: 1,200 / 1200 / 12.50, and a thousands suffix (2k); the units a price may carry
NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
CURRENCY = r"[$€£]"
UNITS = r"dollars?|bucks?|usd|eur|euros?|gbp|pounds?"
QUALIFIERS = r"under|below|less\s+than|max|maximum|up\s+to|at\s+most|cheaper\s+than"
_PRICE_TEXT = re.compile(
    rf"(?:(?:{QUALIFIERS})\s+)?(?:{CURRENCY}\s?)?(?P<n>{NUMBER})\s?(?P<k>k)?\s*(?:{UNITS})?",
    re.IGNORECASE,
)


@dataclass
class Annotated:
    """Labelled queries (the tagger's train and valid sets): `intent` indexes the intents,
    `sentiment` the sentiments (-1: unlabelled, no sentiment loss), `spans` the entity spans
    of each query."""

    texts: list[str]
    intent: np.ndarray
    sentiment: np.ndarray
    spans: list[list[Span]]

    def __post_init__(self) -> None:
        self.intent = np.asarray(self.intent, dtype=np.int64)
        self.sentiment = np.asarray(self.sentiment, dtype=np.int64)
        sizes = {len(self.texts), len(self.intent), len(self.sentiment), len(self.spans)}
        if len(sizes) != 1:
            raise ValueError(f"texts, intent, sentiment and spans differ in length: {sizes}")

    def __len__(self) -> int:
        return len(self.texts)


def bio_tags(types: Sequence[str] = ENTITY_TYPES) -> tuple[str, ...]:
    """The BIO tag set: `("O", "B-BRAND", "I-BRAND", ...)`, the tag id being the index."""
    return ("O", *(f"{p}-{t}" for t in types for p in ("B", "I")))


def _special(start: int, end: int) -> bool:
    return start == end  # (0, 0) for [CLS] / [SEP] / padding: no characters


def words(offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The words of a tokenised text: `(first token, start, end)` for each run of tokens glued
    together (each starting where the previous one ends: the sub-word pieces of a word, and
    "$" "50" or "20" "," "000"); special tokens belong to none."""
    out: list[tuple[int, int, int]] = []
    for k, (start, end) in enumerate(offsets):
        if _special(start, end):
            continue
        if out and start == out[-1][2]:
            out[-1] = (out[-1][0], out[-1][1], end)
        else:
            out.append((k, start, end))
    return out


def align_labels(
    offsets: Sequence[tuple[int, int]], spans: Sequence[Span], tags: Sequence[str]
) -> list[int]:
    """One tag id per token, on the first token of each word (`words`): `B-<label>` for the
    first word overlapping a span, `I-<label>` for the span's following words, `O` outside;
    -100 (no loss) for special tokens and a word's later sub-word pieces, which take their
    word's tag when decoded. Spans whose label has no tag are ignored; of overlapping spans
    the one starting first wins."""
    index = {t: i for i, t in enumerate(tags)}
    usable = sorted(
        (s for s in spans if f"B-{s[2]}" in index and f"I-{s[2]}" in index and s[1] > s[0]),
        key=lambda s: (s[0], -s[1]),
    )
    out = [IGNORE] * len(offsets)
    previous: Span | None = None
    for first, start, end in words(offsets):
        span = next((s for s in usable if start < s[1] and end > s[0]), None)
        if span is None:
            out[first] = index["O"]
        else:
            out[first] = index[f"{'I' if span == previous else 'B'}-{span[2]}"]
        previous = span
    return out


def decode_spans(
    offsets: Sequence[tuple[int, int]], tag_ids: Sequence[int], tags: Sequence[str]
) -> list[Span]:
    """BIO decoding of the tag ids of each word's first token (`words`) back into character
    spans of whole words, tolerant: an `I-` after `O` or after another type starts a span.
    The tags of special tokens and later sub-word pieces (and ids outside the tag set) are
    not read."""
    spans: list[Span] = []
    current: str | None = None  # the open span's label
    for first, start, end in words(offsets):
        tag_id = tag_ids[first]
        tag = tags[tag_id] if 0 <= tag_id < len(tags) else "O"
        prefix, _, label = tag.partition("-")
        if prefix == "O" or not label:
            current = None
        elif current == label and prefix == "I":
            spans[-1] = (spans[-1][0], end, label)
        else:
            current = label
            spans.append((start, end, label))
    return spans


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def span_scores(
    true: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]], types: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Exact-match span scores (start, end and label all equal) per type and `micro` over
    `types`: precision, recall, f1, support (true spans). A ratio with a zero denominator is
    0.0. Spans of other labels are ignored."""
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true span lists but {len(pred)} predicted")
    tp, n_true, n_pred = Counter(), Counter(), Counter()
    for t, p in zip(true, pred, strict=True):
        t_count, p_count = Counter(s for s in t if s[2] in types), Counter(p)
        for span, k in t_count.items():
            n_true[span[2]] += k
            tp[span[2]] += min(k, p_count.get(span, 0))
        for span, k in p_count.items():
            if span[2] in types:
                n_pred[span[2]] += k
    out: dict[str, dict[str, float]] = {}
    for name, keys in [*((t, (t,)) for t in types), ("micro", tuple(types))]:
        hit = sum(tp[k] for k in keys)
        support, predicted = sum(n_true[k] for k in keys), sum(n_pred[k] for k in keys)
        precision, recall = _ratio(hit, predicted), _ratio(hit, support)
        f1 = _ratio(2 * hit, support + predicted)
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def price_value(text: str) -> float | None:
    """The amount of a price text: "$50" -> 50.0, "1,200 dollars" -> 1200.0, "80" -> 80.0,
    "under 2k" -> 2000.0; None when the text is not one amount (an optional qualifier such as
    "under", a currency sign, the number, an optional unit)."""
    if not isinstance(text, str):
        return None
    found = _PRICE_TEXT.fullmatch(text.strip())
    if found is None:
        return None
    value = float(found["n"].replace(",", ""))
    return value * 1000 if found["k"] else value


def classification_scores(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, labels: Sequence[str]
) -> dict:
    """Scores of class indices `y_true` / `y_pred` (indices into `labels`; rows with a true
    index < 0 are unlabelled and dropped): `per_class` {label: precision, recall, f1,
    support}, `macro_f1` (over the classes that occur in truth or prediction, as scikit-learn
    without `labels`), `accuracy`, `n`, and `confusion` (rows true, columns predicted, in
    `labels` order). With no labelled row the scalars are NaN."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred {p.shape}")
    keep = t >= 0
    t, p = t[keep], p[keep]
    ids = list(range(len(labels)))
    if not len(t):
        empty = {"precision": np.nan, "recall": np.nan, "f1": np.nan, "support": 0}
        return {
            "per_class": {name: dict(empty) for name in labels},
            "macro_f1": np.nan, "accuracy": np.nan, "n": 0,
            "confusion": [[0] * len(labels) for _ in labels],
        }  # fmt: skip
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=ids, zero_division=0
    )
    present = np.isin(ids, np.union1d(t, p))
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    return {
        "per_class": per_class,
        "macro_f1": float(f1[present].mean()),
        "accuracy": float((t == p).mean()),
        "n": len(t),
        "confusion": confusion_matrix(t, p, labels=ids).tolist(),
    }


def understanding_scores(
    intent: tuple[Sequence[int], Sequence[int]],
    sentiment: tuple[Sequence[int], Sequence[int]],
    spans: tuple[Sequence[Sequence[Span]], Sequence[Sequence[Span]]],
    intents: Sequence[str],
    sentiments: Sequence[str],
    types: Sequence[str] = ENTITY_TYPES,
) -> dict:
    """The scores of a query labelling, each argument a (true, predicted) pair (class indices;
    a true sentiment < 0 is unlabelled): scalars `intent_macro_f1`, `intent_accuracy`,
    `sentiment_accuracy`, `sentiment_macro_f1`, `entity_f1` (micro) and the selection `score`,
    the mean of intent macro-F1, sentiment accuracy (when some row has a sentiment) and entity
    micro-F1 (when some row has a span); the detail `intent` / `sentiment`
    (`classification_scores`) and `entities` (`span_scores`). The same for the tagger and the
    baselines."""
    by_intent = classification_scores(*intent, intents)
    by_sentiment = classification_scores(*sentiment, sentiments)
    entities = span_scores(*spans, types)
    parts = [by_intent["macro_f1"]]
    if by_sentiment["n"]:
        parts.append(by_sentiment["accuracy"])
    if entities["micro"]["support"]:
        parts.append(entities["micro"]["f1"])
    return {
        "intent_macro_f1": by_intent["macro_f1"],
        "intent_accuracy": by_intent["accuracy"],
        "sentiment_accuracy": by_sentiment["accuracy"],
        "sentiment_macro_f1": by_sentiment["macro_f1"],
        "entity_f1": entities["micro"]["f1"],
        "score": float(np.mean(parts)),
        "intent": by_intent,
        "sentiment": by_sentiment,
        "entities": entities,
    }
