"""The simulated search log: query templates, the labelled query pool (spans, rates, typos), the
hidden effects of brands and price caps, the truth tables and the noisy annotations."""

from __future__ import annotations

import itertools
import string
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from features import schema
from features.split import SplitConfig, assign_split
from pipeline.config import load_experiment
from pipeline.sources.simulated import query_vocabulary as qv
from pipeline.sources.simulated.generate import query_annotations, train_queries
from pipeline.sources.simulated.impressions import INTENT_MIX
from pipeline.sources.simulated.market import simulate_market
from pipeline.sources.simulated.marketplace import MarketConfig
from pipeline.sources.simulated.queries import (
    CHOICES,
    QUERIES_PER_INTENT,
    QueryPool,
    build_pool,
    nice_cap,
    parse_amount,
)
from pipeline.sources.simulated.vocabulary import BRANDS, SUBTOPICS

EXPERIMENTS = Path(__file__).resolve().parents[4] / "experiments"
SEED = 7
TEMPLATE_FIELDS = {"brand", "noun", "keyword", "attr", "cap"}


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def _one_edit(a: str, b: str) -> bool:
    """b is a with two adjacent characters swapped, one dropped or one doubled."""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return len(long_) == len(short) + 1 and any(
        long_[:i] + long_[i + 1 :] == short for i in range(len(long_))
    )


@pytest.fixture(scope="module")
def pool() -> QueryPool:
    return build_pool(np.random.default_rng(SEED))


@pytest.fixture(scope="module")
def small() -> tuple[MarketConfig, SplitConfig]:
    exp = load_experiment("small", directory=EXPERIMENTS)
    return exp.market, exp.split


@pytest.fixture(scope="module")
def market(small: tuple[MarketConfig, SplitConfig]) -> dict[str, pl.DataFrame]:
    return simulate_market(small[0], seed=SEED)


@pytest.fixture(scope="module")
def annotations(market: dict, small: tuple) -> pl.DataFrame:
    return query_annotations(market, small[1], small[0].n_annotations, SEED)


# --- templates -----------------------------------------------------------------------------


def test_every_intent_has_ten_templates_with_one_product() -> None:
    assert set(qv.QUERY_TEMPLATES_BY_INTENT) == set(qv.INTENTS)
    assert len(qv.INTENTS) == 6 and "support" in qv.INTENTS
    for intent, templates in qv.QUERY_TEMPLATES_BY_INTENT.items():
        assert len(templates) >= 10, intent
        assert len({t for t, _ in templates}) == len(templates), intent
        for template, sentiment in templates:
            fields = _fields(template)
            assert set(fields) <= TEMPLATE_FIELDS, template
            assert sum(f in ("noun", "keyword") for f in fields) == 1, template
            assert len(fields) == len(set(fields)), template
            assert sentiment in qv.SENTIMENTS, template
            assert template == template.lower(), template
        # a query without brand or cap still has many ways to be written
        assert len(CHOICES[(intent, False, False)]) >= 10, intent
    assert all(s == "negative" for _, s in qv.SUPPORT_TEMPLATES)
    for intent in qv.CAP_INTENTS:
        assert all("{cap}" in t for t, _ in CHOICES[(intent, True, True)])


def test_some_templates_are_ambiguous_between_intents() -> None:
    owners: dict[str, set[str]] = {}
    for intent, templates in qv.QUERY_TEMPLATES_BY_INTENT.items():
        for template, _ in templates:
            owners.setdefault(template, set()).add(intent)
    assert sum(len(o) > 1 for o in owners.values()) >= 3


def test_price_caps_are_nice_amounts() -> None:
    assert nice_cap(3.2) == 3 and nice_cap(47) == 50 and nice_cap(130) == 150
    assert nice_cap(1100) == 1000 and nice_cap(1234) == 1500 and nice_cap(27_000) == 25_000
    for value in np.exp(np.linspace(0.5, 11, 50)):
        cap = nice_cap(float(value))
        assert cap == int(cap) and 0.7 < cap / value < 1.4, value
    assert parse_amount("$1,500") == 1500 and parse_amount("80 dollars") == 80


def test_market_config_validates_annotations() -> None:
    assert MarketConfig().n_annotations == 3000
    assert MarketConfig(n_annotations=0).n_annotations == 0
    with pytest.raises(ValueError, match=r"market\.n_annotations must be >= 0"):
        MarketConfig(n_annotations=-1)


# --- the pool ------------------------------------------------------------------------------


def test_pool_shape_and_unique_texts(pool: QueryPool) -> None:
    shape = (len(SUBTOPICS), len(qv.INTENTS), QUERIES_PER_INTENT)
    for array in (pool.records, pool.text, pool.brand, pool.has_brand, pool.price_cap):
        assert array.shape == shape
    texts = pool.text.ravel().tolist()
    assert len(set(texts)) == len(texts)
    for i, intent in enumerate(qv.INTENTS):
        assert all(r.intent == intent for r in pool.records[:, i].ravel())


def test_spans_cover_exactly_the_entities(pool: QueryPool) -> None:
    for s, sub in enumerate(SUBTOPICS):
        for q in pool.records[s].ravel():
            spans = sorted(q.spans)
            labels = [label for _, _, label in spans]
            assert labels.count("PRODUCT") == 1, q
            assert labels.count("BRAND") == (q.brand is not None), q
            assert labels.count("PRICE") == (q.price_cap is not None), q
            for first, second in itertools.pairwise(spans):
                assert first[1] < second[0], q  # no overlap
            for start, end, label in spans:
                piece = q.text[start:end]
                assert 0 <= start < end <= len(q.text), q
                assert piece == piece.strip() and (start == 0 or q.text[start - 1] == " "), q
                assert end == len(q.text) or q.text[end] == " ", q
                if label == "PRICE":
                    assert parse_amount(piece) == q.price_cap, q
                    assert not piece.startswith(("under", "below", "less", "max")), q
                elif label == "BRAND":
                    assert q.brand in BRANDS[sub.category], q
                    canonical = q.brand.lower()
                    assert piece.lower() == canonical or (
                        q.typo and _one_edit(canonical, piece.lower())
                    ), q
                else:
                    assert q.product in sub.nouns + sub.keywords, q
                    assert piece == q.product or (q.typo and _one_edit(q.product, piece)), q


def test_rates_of_brands_caps_and_typos(pool: QueryPool) -> None:
    records = pool.records.ravel()
    assert 0.28 <= np.mean([r.brand is not None for r in records]) <= 0.42
    assert 0.06 <= np.mean([r.typo for r in records]) <= 0.14
    capped = [r.price_cap is not None for r in records if r.intent in qv.CAP_INTENTS]
    assert 0.19 <= np.mean(capped) <= 0.31
    assert all(r.price_cap is None for r in records if r.intent not in qv.CAP_INTENTS)
    assert np.isnan(pool.price_cap).mean() == pytest.approx(1 - np.mean(capped) / 2, abs=0.01)
    for s, sub in enumerate(SUBTOPICS):  # caps lie in (about) the subtopic's price range
        caps = pool.price_cap[s][~np.isnan(pool.price_cap[s])]
        low, high = sub.price_range
        assert ((caps >= 0.7 * low) & (caps <= 1.4 * high)).all(), sub.key


def test_typos_edit_one_word(pool: QueryPool) -> None:
    typos = [r for r in pool.records.ravel() if r.typo]
    clean_words = {w for r in pool.records.ravel() if not r.typo for w in r.text.split()}
    # most typo'd queries hold a word that no clean query uses
    odd = [r for r in typos if set(r.text.split()) - clean_words]
    assert len(odd) >= 0.8 * len(typos)


def test_sentiments(pool: QueryPool) -> None:
    records = pool.records.ravel()
    assert {r.sentiment for r in records} == set(qv.SENTIMENTS)
    assert all(r.sentiment == "negative" for r in records if r.intent == "support")
    assert np.mean([r.sentiment == "neutral" for r in records]) > 0.6


def test_pool_is_deterministic_by_rng(pool: QueryPool) -> None:
    again = build_pool(np.random.default_rng(SEED))
    assert (again.text == pool.text).all() and again.records.tolist() == pool.records.tolist()
    other = build_pool(np.random.default_rng(SEED + 1))
    assert (other.text != pool.text).mean() > 0.9


# --- the market ----------------------------------------------------------------------------


def test_truth_tables(market: dict) -> None:
    truth, intents = market["queries"], market["impression_intents"]
    assert dict(truth.schema) == schema.ORACLE_QUERIES
    assert dict(intents.schema) == schema.ORACLE_INTENTS
    logged = pl.concat([market["impressions"]["query"], market["behaviour"]["query"]])
    assert set(truth["query"]) == set(logged.drop_nulls())
    assert truth["query"].is_unique().all()
    imp = market["impressions"].join(intents, on="impression_id")
    assert imp.height == market["impressions"].height
    assert (imp["query"].is_null() == imp["intent"].is_null()).all()
    labelled = imp.drop_nulls("query").join(truth, on="query", suffix="_truth")
    assert (labelled["intent"] == labelled["intent_truth"]).all()
    share = labelled["intent"].value_counts(normalize=True)
    for intent, expected in zip(qv.INTENTS, INTENT_MIX, strict=True):
        got = share.filter(pl.col("intent") == intent)["proportion"].item()
        assert abs(got - expected) < 0.03, intent
    searches = market["behaviour"].filter(pl.col("event") == "search")
    history = searches.join(truth, on="query")
    assert history.height == searches.height and history["intent"].n_unique() == 6


def test_brand_and_price_cap_move_the_oracle(market: dict) -> None:
    imp = (
        market["impressions"]
        .join(market["oracle"], on="impression_id")
        .join(market["ads"].select("ad_id", "brand", "price"), on="ad_id")
        .join(market["queries"].select("query", "brand", "price_cap"), on="query", suffix="_q")
    )
    named = imp.filter(pl.col("brand_q").is_not_null())
    matched = named.filter(pl.col("brand_q") == pl.col("brand"))
    other = named.filter(pl.col("brand_q") != pl.col("brand"))
    unnamed = imp.filter(pl.col("brand_q").is_null())
    assert matched.height > 50 and other.height > 500
    assert matched["p_click"].mean() > 1.5 * other["p_click"].mean()
    assert matched["p_click"].mean() > unnamed["p_click"].mean() > other["p_click"].mean()
    capped = imp.filter(pl.col("price_cap").is_not_null())
    within = capped.filter(pl.col("price") <= pl.col("price_cap"))
    over = capped.filter(pl.col("price") > pl.col("price_cap"))
    assert within.height > 100 and over.height > 100
    assert within["p_conversion"].mean() > 2 * over["p_conversion"].mean()


def test_support_queries_convert_least(market: dict) -> None:
    imp = (
        market["impressions"]
        .join(market["oracle"], on="impression_id")
        .join(market["impression_intents"], on="impression_id")
        .drop_nulls("intent")
    )
    by = imp.group_by("intent").agg(pl.col("p_conversion").mean()).sort("p_conversion")
    assert by["intent"][0] == "support"


# --- annotations ---------------------------------------------------------------------------


def test_annotations_label_train_queries_only(
    annotations: pl.DataFrame, market: dict, small: tuple
) -> None:
    assert dict(annotations.schema) == schema.QUERY_ANNOTATIONS
    assert annotations["query"].is_unique().all()
    _, bounds = assign_split(market["impressions"], small[1])
    valid_start = datetime.fromisoformat(bounds["valid_start"])
    imp, beh = market["impressions"], market["behaviour"]
    seen = set(imp.filter(pl.col("ts") < valid_start)["query"].drop_nulls())
    seen |= set(beh.filter(pl.col("ts") < valid_start)["query"].drop_nulls())
    later = set(imp["query"].drop_nulls()) - seen
    assert later, "the test needs queries first searched after the valid start"
    assert set(annotations["query"]) <= seen
    assert set(train_queries(market, small[1])) == seen
    assert annotations.height == min(small[0].n_annotations, len(seen))


def test_annotation_noise_is_about_five_percent(annotations: pl.DataFrame, market: dict) -> None:
    both = annotations.join(market["queries"], on="query", suffix="_true")
    assert both.height == annotations.height >= 1000
    intent_noise = (both["intent"] != both["intent_true"]).mean()
    sentiment_noise = (both["sentiment"] != both["sentiment_true"]).mean()
    assert 0.02 <= intent_noise <= 0.09
    assert 0.02 <= sentiment_noise <= 0.09
    spans = both.select(
        pl.col("spans").list.len().alias("n"), pl.col("spans_true").list.len().alias("n_true")
    )
    dropped = (spans["n_true"] - spans["n"]).sum() / spans["n_true"].sum()
    assert 0.005 <= dropped <= 0.06
    pairs = zip(both["spans"].to_list(), both["spans_true"].to_list(), strict=True)
    changed = np.mean([a != b for a, b in pairs])
    assert 0.03 <= changed <= 0.2


def test_annotations_are_deterministic(
    annotations: pl.DataFrame, market: dict, small: tuple
) -> None:
    assert annotations.equals(query_annotations(market, small[1], small[0].n_annotations, SEED))
    assert query_annotations(market, small[1], 0, SEED).height == 0
    few = query_annotations(market, small[1], 25, SEED)
    assert few.height == 25 and set(few["query"]) <= set(train_queries(market, small[1]))
