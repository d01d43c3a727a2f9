"""The search queries of the simulated marketplace: a pool of labelled queries per (subtopic,
intent), their truth table, and an annotation team's noisy labels of them.

Each query is written from an intent template (`query_vocabulary`) and the subtopic's words; a
share names a brand of the subtopic's category, a share of the buy / cheap / compare queries
states a price cap, and a share carries one typo. Every query knows its intent, sentiment,
brand, price cap and entity spans (character offsets into its final text). Texts are unique
across the pool, so a text has one truth even where templates are ambiguous.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

import numpy as np
import polars as pl

from features import schema
from pipeline.sources.simulated.query_vocabulary import (
    CAP_INTENTS,
    CAP_MANTISSAS,
    CAP_PHRASES,
    INTENTS,
    QUERY_TEMPLATES_BY_INTENT,
    SENTIMENTS,
)
from pipeline.sources.simulated.vocabulary import BRANDS, SUBTOPICS, Subtopic

QUERIES_PER_INTENT = 10  # pool queries per (subtopic, intent)
BRAND_RATE = 0.35  # queries that name a brand
BRAND_LOWERCASE_RATE = 0.5  # of those, typed in lower case
CAP_RATE = 0.25  # buy / cheap / compare queries that state a price cap
TYPO_RATE = 0.10  # queries with one typo (swap, drop or double a character)
ANNOTATION_NOISE = 0.05  # chance an annotator gets an intent, a sentiment or a span wrong
MAX_TRIES = 200  # draws per pool query before giving up on a unique text
SLOT_LABELS = {"brand": "BRAND", "noun": "PRODUCT", "keyword": "PRODUCT"}

Span = tuple[int, int, str]  # (start, end, label) into the query text


@dataclass(frozen=True)
class Query:
    """One labelled query; `brand` and `product` are the canonical names (before any typo)."""

    text: str
    intent: str
    sentiment: str
    brand: str | None
    product: str
    price_cap: float | None
    spans: tuple[Span, ...]
    typo: bool


@dataclass(frozen=True)
class QueryPool:
    """(n_subtopics, n_intents, QUERIES_PER_INTENT) arrays indexed by (subtopic, intent, pick)."""

    records: np.ndarray  # Query objects
    text: np.ndarray  # str
    brand: np.ndarray  # str or None
    has_brand: np.ndarray  # bool
    price_cap: np.ndarray  # float, nan where the query states no cap


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def _with_brand(template: str) -> str:
    """The template with a brand before its product (and the product's attribute)."""
    for slot in ("{attr} {noun}", "{noun}", "{attr} {keyword}", "{keyword}"):
        if slot in template:
            return template.replace(slot, "{brand} " + slot, 1)
    raise ValueError(f"query template without a product: {template!r}")


def _choices(intent: str, brand: bool, cap: bool) -> tuple[tuple[str, str], ...]:
    """The templates a query with (or without) a brand and a cap can use, slots filled in."""
    out = []
    for template, sentiment in QUERY_TEMPLATES_BY_INTENT[intent]:
        fields = _fields(template)
        if ("brand" in fields and not brand) or ("cap" in fields and not cap):
            continue
        if brand and "brand" not in fields:
            template = _with_brand(template)
        if cap and "cap" not in fields:
            template += " {cap}"
        out.append((template, sentiment))
    return tuple(out)


CHOICES = {
    (intent, brand, cap): _choices(intent, brand, cap)
    for intent in INTENTS
    for brand in (False, True)
    for cap in (False, True)
}


def nice_cap(value: float) -> float:
    """`value` rounded to the nearest (in log space) nice amount: 1-9, 10, 15, 20, 25, 30, ..."""
    if value < 9.5:
        return float(max(1, round(value)))
    power = 10.0 ** np.floor(np.log10(value))
    candidates = np.array(CAP_MANTISSAS) * power
    return float(candidates[np.argmin(np.abs(np.log(candidates / value)))])


def format_amount(cap: float, fmt: str) -> str:
    return fmt.format(n=f"{int(cap):,}")


def parse_amount(text: str) -> float:
    """The number of a PRICE span ("$1,500", "80 dollars", "80")."""
    return float(text.replace("$", "").replace("dollars", "").replace(",", "").strip())


def _render(template: str, slots: dict[str, str], cap: tuple[str, str] | None) -> tuple:
    """The text of a filled template and its entity spans."""
    text, spans = "", []
    for literal, field, _, _ in string.Formatter().parse(template):
        text += literal
        if field == "cap" and cap is not None:
            before, after = cap[0].split("{amount}")
            text += before
            spans.append((len(text), len(text) + len(cap[1]), "PRICE"))
            text += cap[1] + after
        elif field is not None:
            if field in SLOT_LABELS:
                spans.append((len(text), len(text) + len(slots[field]), SLOT_LABELS[field]))
            text += slots[field]
    return text, tuple(spans)


def _typo(rng: np.random.Generator, text: str, spans: tuple[Span, ...]) -> tuple:
    """One edit in one word of 4+ letters outside the price; spans follow the edit."""
    price = [(s, e) for s, e, label in spans if label == "PRICE"]
    words = [
        m
        for m in re.finditer(r"[^\W\d_]{4,}", text)
        if not any(s <= m.start() < e for s, e in price)
    ]
    if not words:
        return text, spans
    word = words[int(rng.integers(len(words)))]
    kind, i = int(rng.integers(3)), int(rng.integers(len(word.group())))
    p = word.start() + min(i, len(word.group()) - 2)
    if kind == 0 and text[p] != text[p + 1]:  # swap two adjacent characters
        return text[:p] + text[p + 1] + text[p] + text[p + 2 :], spans
    p = word.start() + i
    if kind == 2:  # double a character: offsets after it move one right
        out = text[: p + 1] + text[p:]
        return out, tuple((s + (s > p), e + (e > p), label) for s, e, label in spans)
    out = text[:p] + text[p + 1 :]  # drop a character (and a swap of two equal ones)
    return out, tuple((s - (s > p), e - (e > p), label) for s, e, label in spans)


def draw_query(rng: np.random.Generator, sub: Subtopic, intent: str) -> Query:
    """One query of `intent` about subtopic `sub` (a fixed order of draws)."""
    brand = rng.random() < BRAND_RATE
    cap = intent in CAP_INTENTS and rng.random() < CAP_RATE
    choices = CHOICES[(intent, bool(brand), bool(cap))]
    template, sentiment = choices[int(rng.integers(len(choices)))]
    slots = {
        "noun": sub.nouns[int(rng.integers(len(sub.nouns)))],
        "keyword": sub.keywords[int(rng.integers(len(sub.keywords)))],
        "attr": sub.attributes[int(rng.integers(len(sub.attributes)))],
    }
    brand_name = cap_value = cap_text = None
    if brand:
        names = BRANDS[sub.category]
        brand_name = names[int(rng.integers(len(names)))]
        slots["brand"] = brand_name.lower() if rng.random() < BRAND_LOWERCASE_RATE else brand_name
    if cap:
        low, high = sub.price_range
        cap_value = nice_cap(float(np.exp(rng.uniform(np.log(low), np.log(high)))))
        phrase, fmt = CAP_PHRASES[int(rng.integers(len(CAP_PHRASES)))]
        cap_text = (phrase, format_amount(cap_value, fmt))
    text, spans = _render(template, slots, cap_text)
    typo = bool(rng.random() < TYPO_RATE)
    if typo:
        text, spans = _typo(rng, text, spans)
    product = slots["noun"] if "noun" in _fields(template) else slots["keyword"]
    return Query(text, intent, sentiment, brand_name, product, cap_value, spans, typo)


def build_pool(rng: np.random.Generator) -> QueryPool:
    """QUERIES_PER_INTENT queries per (subtopic, intent), every text unique in the pool."""
    shape = (len(SUBTOPICS), len(INTENTS), QUERIES_PER_INTENT)
    records = np.empty(shape, dtype=object)
    seen: set[str] = set()
    for s, sub in enumerate(SUBTOPICS):
        for i, intent in enumerate(INTENTS):
            for q in range(QUERIES_PER_INTENT):
                for _ in range(MAX_TRIES):
                    query = draw_query(rng, sub, intent)
                    if query.text not in seen:
                        break
                else:
                    raise RuntimeError(f"no unique {intent} query for {sub.key}")
                seen.add(query.text)
                records[s, i, q] = query
    flat = records.ravel()
    cap = np.array([np.nan if r.price_cap is None else r.price_cap for r in flat])
    return QueryPool(
        records=records,
        text=np.array([r.text for r in flat], dtype=object).reshape(shape),
        brand=np.array([r.brand for r in flat], dtype=object).reshape(shape),
        has_brand=np.array([r.brand is not None for r in flat]).reshape(shape),
        price_cap=cap.reshape(shape),
    )


def _spans(spans: tuple[Span, ...] | list) -> list[dict]:
    return [{"start": s, "end": e, "label": label} for s, e, label in spans]


def truth_frame(pool: QueryPool, texts: list[str]) -> pl.DataFrame:
    """The noise-free labels of `texts` (pool query texts), sorted by text."""
    by_text = {r.text: r for r in pool.records.ravel()}
    rows = [by_text[t] for t in sorted(set(texts))]
    return pl.DataFrame(
        {
            "query": [r.text for r in rows],
            "intent": [r.intent for r in rows],
            "sentiment": [r.sentiment for r in rows],
            "brand": [r.brand for r in rows],
            "product": [r.product for r in rows],
            "price_cap": [r.price_cap for r in rows],
            "spans": [_spans(r.spans) for r in rows],
        },
        schema=schema.ORACLE_QUERIES,
    )


def _other(rng: np.random.Generator, values: tuple[str, ...], value: str) -> str:
    rest = [v for v in values if v != value]
    return rest[int(rng.integers(len(rest)))]


def _noisy_span(rng: np.random.Generator, text: str, span: dict) -> dict | None:
    """The span dropped, or its end moved to the previous or next word end (None: dropped)."""
    if rng.random() < 0.5:
        return None
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    shorter = [e for e in ends if span["start"] < e < span["end"]]
    longer = [e for e in ends if e > span["end"]]
    options = ([shorter[-1]] if shorter else []) + ([longer[0]] if longer else [])
    if not options:
        return None
    return {**span, "end": options[int(rng.integers(len(options)))]}


def annotate(truth: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """An annotation team's labels of `truth`'s queries: each intent, sentiment and span is
    wrong with probability ANNOTATION_NOISE (another value; a span dropped or cut at a
    neighbouring word boundary)."""
    rows: dict[str, list] = {"query": [], "intent": [], "sentiment": [], "spans": []}
    for text, intent, sentiment, spans in truth.select(list(rows)).iter_rows():
        if rng.random() < ANNOTATION_NOISE:
            intent = _other(rng, INTENTS, intent)
        if rng.random() < ANNOTATION_NOISE:
            sentiment = _other(rng, SENTIMENTS, sentiment)
        labelled = []
        for span in spans:
            if rng.random() < ANNOTATION_NOISE:
                span = _noisy_span(rng, text, span)
            if span is not None:
                labelled.append(span)
        for key, value in zip(rows, (text, intent, sentiment, labelled), strict=True):
            rows[key].append(value)
    return pl.DataFrame(rows, schema=schema.QUERY_ANNOTATIONS)
