"""features.text_pairs: the fine-tuning pairs and the retrieval sets, on hand-made frames."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from features.text_pairs import (
    active_ads,
    history_pairs,
    history_targets,
    query_pairs,
    self_pairs,
    unclicked_pairs,
)

T0 = datetime(2026, 3, 1)


def t(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_query_pairs_are_the_clicks_from_a_query() -> None:
    imp = pl.DataFrame(
        {
            "query": ["shoes", "shoes", "shoes", None, " ", "coffee"],
            "ad_id": [1, 1, 2, 3, 4, 5],
            "click": [1, 1, 0, 1, 1, 1],
        },
        schema_overrides={"click": pl.Int8},
    )
    # one row per click: the clicked pair twice, the unclicked one not at all
    assert query_pairs(imp).rows() == [("coffee", 5), ("shoes", 1), ("shoes", 1)]


def test_hard_negatives_are_shown_for_the_query_and_never_clicked_from_it() -> None:
    imp = pl.DataFrame(
        {
            "query": ["shoes", "shoes", "shoes", "shoes", None, "mat"],
            "ad_id": [1, 2, 2, 3, 4, 1],
            "click": [1, 0, 1, 0, 0, 0],
        },
        schema_overrides={"click": pl.Int8},
    )
    # ad 2 was clicked once from "shoes", so it is no negative of it; ad 1 is one of "mat"
    assert unclicked_pairs(imp).rows() == [("mat", 1), ("shoes", 3)]


def test_history_is_the_users_earlier_ads_latest_first_without_the_clicked_one() -> None:
    beh = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 1, 2, 2],
            "ts": [t(0), t(1), t(2), t(3), t(4), t(0), t(1)],
            "event": ["view", "search", "view", "view", "click", "click", "view"],
            "ad_id": [10, None, 11, 12, 11, 20, 21],
        }
    )
    pairs = history_pairs(beh, length=2)
    # user 1 clicks 11 after viewing 10, 11, 12: the last two are 12, 11; 11 is the click itself
    assert pairs.select("user_id", "history", "ad_id").rows() == [(1, [12], 11)]
    longer = history_pairs(beh, length=5)
    assert longer["history"].to_list() == [[12, 10]]  # user 2's click has no earlier event


def test_an_impression_clicks_history_is_its_users_past_only() -> None:
    beh = pl.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2],
            "ts": [t(0), t(1), t(2), t(9), t(0)],
            "event": ["view", "click", "view", "view", "purchase"],
            "ad_id": [10, 11, 12, 13, 20],
        }
    )
    clicks = pl.DataFrame({"user_id": [1, 1, 2], "ts": [t(5), t(1), t(5)], "ad_id": [12, 50, 21]})
    found = history_targets(beh, clicks, length=5)
    # at t5 user 1 had seen 10, 11, 12 (12 is the clicked ad: left out; 13 comes later); at t1
    # only 10 (11 is at the same time, not before); user 2's purchase is no view or click
    assert found.select("ts", "history", "ad_id").rows() == [(t(5), [11, 10], 12), (t(1), [10], 50)]
    assert history_targets(beh, clicks, length=1)["history"].to_list() == [[11], [10]]


def test_history_needs_a_positive_length() -> None:
    with pytest.raises(ValueError, match="length"):
        history_pairs(pl.DataFrame(), length=0)


def test_self_pairs_skip_ads_created_after_the_cut_and_ads_without_text() -> None:
    ads = pl.DataFrame(
        {
            "ad_id": [1, 2, 3, 4],
            "title": ["Trail shoes", "Espresso machine", None, "Yoga mat"],
            "description": ["Light and fast", "Barista grade", "x", None],
            "keywords": ["running, trail", None, "y", None],
            "created_at": [t(0), t(10), t(0), None],
        }
    )
    pairs = self_pairs(ads, before=t(5))
    assert pairs.rows() == [("Trail shoes", "Light and fast. running, trail", 1)]
    assert self_pairs(ads, before=None)["ad_id"].to_list() == [1, 2]
    assert active_ads(ads, t(5)).to_list() == [1, 3, 4]
    assert active_ads(ads, None).to_list() == [1, 2, 3, 4]
