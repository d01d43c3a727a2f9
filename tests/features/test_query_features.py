"""Query-understanding features: brand and price-cap matches, entity overlap, and the user's
intent mix strictly before each impression."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from features.query_features import brand_matches, query_features

T0 = datetime(2026, 3, 2)


def _queries() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "query": ["pacewell running shoes under $80", "cheap yoga mat", "pacwell shoes"],
            "p_intent_buy": [0.7, 0.2, 0.9],
            "p_intent_cheap": [0.3, 0.8, 0.1],
            "p_sentiment_negative": [0.1, 0.2, 0.0],
            "brand": ["pacewell", None, "pacwell"],
            "product": ["running shoes", "yoga mat", "shoes"],
            "price_cap": [80.0, None, None],
        }
    )


def _rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=m) for m in (0, 10, 20, 30)],
            "user_id": [1, 1, 2, 1],
            "query": ["pacewell running shoes under $80", None, "cheap yoga mat", "pacwell shoes"],
            "ad_id": [10, 11, 12, 13],
            "brand": ["Pacewell", "Kestrova", "Lumafit", "Kestrova"],
            "price": [60.0, 30.0, 25.0, 90.0],
        }
    )


def _keywords() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ad_id": [10, 11, 12, 13],
            "keywords": [["running shoes", "trainers"], ["socks"], ["mat"], ["boots"]],
        }
    )


def _searches() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [1, 1, 2],
            "ts": [T0 - timedelta(seconds=2), T0 + timedelta(minutes=30), T0 + timedelta(hours=1)],
            "query": ["pacewell running shoes under $80", "pacwell shoes", "cheap yoga mat"],
        }
    )


def test_impression_columns():
    out, spec = query_features(_rows(), _queries(), _searches(), _keywords())
    assert out.height == 4
    assert {f["family"] for f in spec} == {"query"}
    assert [f["name"] for f in spec] == out.columns
    row = out.row(0, named=True)
    assert row["n_q_intent_buy"] == pytest.approx(0.7)
    assert row["n_q_brand_named"] == 1.0 and row["n_q_brand_match"] == 1.0
    assert row["n_q_price_capped"] == 1.0 and row["n_q_price_ok"] == 1.0
    assert row["n_q_price_over"] == pytest.approx(-0.287682, abs=1e-5)  # log(60 / 80)
    assert row["n_q_entity_overlap"] == pytest.approx(2 / 3)  # running, shoes of pacewell..
    no_query = out.row(1, named=True)
    assert all(no_query[c] is None for c in out.columns if c.startswith("n_q_"))
    third = out.row(2, named=True)
    assert third["n_q_brand_named"] == 0.0 and third["n_q_brand_match"] is None
    assert third["n_q_price_ok"] is None and third["n_q_entity_overlap"] == pytest.approx(0.5)
    fourth = out.row(3, named=True)  # a typo of another brand than the ad's
    assert fourth["n_q_brand_named"] == 1.0 and fourth["n_q_brand_match"] == 0.0


def test_user_mix_uses_only_earlier_searches():
    out, _ = query_features(_rows(), _queries(), _searches(), _keywords())
    mix = out["n_u_intent_buy"].to_list()
    # row 0: the search 2 s before counts; row 1: still that one; row 2: user 2 searched later
    # only; row 3: the search at the same instant is not strictly before, so still one search
    assert mix[0] == pytest.approx(0.7) and mix[1] == pytest.approx(0.7)
    assert mix[2] is None
    assert mix[3] == pytest.approx(0.7)


def test_user_mix_averages_past_searches():
    searches = _searches().with_columns(
        pl.when(pl.col("query") == "pacwell shoes")
        .then(pl.lit(T0 + timedelta(minutes=25)))
        .otherwise(pl.col("ts"))
        .alias("ts")
    )
    out, _ = query_features(_rows(), _queries(), searches, _keywords())
    assert out["n_u_intent_buy"][3] == pytest.approx((0.7 + 0.9) / 2)


def test_brand_similarity_tolerates_typos_only():
    pairs = pl.DataFrame(
        {
            "q_brand": ["pacwell", "Brightwave labs", "kestrova", None],
            "brand": ["Pacewell", "Brightwave Labs", "Pacewell", "X"],
        }
    )
    found = brand_matches(pairs)
    same = dict(zip(found["q_brand"], found["same"], strict=True))
    assert same == {"pacwell": True, "Brightwave labs": True, "kestrova": False}
