"""The user-history item codes (DIN's input): point in time, most recent first, padded with 0;
the item table and its lookup matrix."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.history import item_table, recent_items, table_matrix
from features.schema import BEHAVIOUR
from features.text_columns import Vectors, history_columns

T0 = datetime(2024, 1, 10, 12)


def _imps(rows: list[tuple[int, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [u for u, _ in rows], "ts": [t for _, t in rows]},
        schema={"user_id": pl.Int64, "ts": pl.Datetime("us")},
    )


def _events(rows: list[tuple[int, datetime, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "ts": [r[1] for r in rows], "code": [r[2] for r in rows]},
        schema={"user_id": pl.Int64, "ts": pl.Datetime("us"), "code": pl.Int32},
    )


def test_last_k_strictly_before_most_recent_first_padded() -> None:
    h = timedelta(hours=1)
    events = _events(
        [(1, T0 - 3 * h, 5), (1, T0 - 2 * h, 6), (1, T0 - h, 7), (1, T0, 8), (2, T0 - h, 9)]
    )
    imps = _imps([(1, T0), (1, T0 + h), (2, T0), (3, T0), (1, T0 - 3 * h)])
    codes, used = recent_items(imps, events, k=3)
    # the event at exactly t does not count; user 2 has one item; user 3 none; t = first event
    np.testing.assert_array_equal(codes, [[7, 6, 5], [8, 7, 6], [9, 0, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(used, [3, 3, 1, 0, 0])
    with pytest.raises(ValueError, match="k must be"):
        recent_items(imps, events, k=0)


def _behaviour(rows: list[tuple]) -> pl.DataFrame:
    cols = list(zip(*rows, strict=True))
    return pl.DataFrame(dict(zip(BEHAVIOUR, cols, strict=True)), schema=BEHAVIOUR)


def test_a_planted_future_click_changes_no_history_a_past_click_appears() -> None:
    """Leakage: a click after an impression must not enter that impression's history."""
    h = timedelta(hours=1)
    ads = Vectors(pl.Series("ad_id", [10, 20, 30, 40]), np.eye(4, dtype=np.float32))
    rows = pl.DataFrame(
        {"impression_id": [1, 2, 3], "user_id": [1, 1, 2], "ts": [T0, T0 + 5 * h, T0]},
        schema={"impression_id": pl.Int64, "user_id": pl.Int64, "ts": pl.Datetime("us")},
    ).with_columns(ad_id=pl.Series([10, 20, 30], dtype=pl.Int64))
    ad_idx = np.array([0, 1, 2])
    base = [
        (1, T0 - 2 * h, "view", 20, None),
        (1, T0 - h, "click", 30, None),
        (2, T0 - h, "search", None, "shoes"),  # searches carry no item
    ]
    before = history_columns(rows, _behaviour(base), ads, ad_idx, k=3)
    future = history_columns(
        rows, _behaviour([*base, (1, T0 + h, "click", 40, None)]), ads, ad_idx, k=3
    )
    past = history_columns(
        rows, _behaviour([*base, (2, T0 - 2 * h, "click", 40, None)]), ads, ad_idx, k=3
    )
    hist = {name: cols["s_history"].to_numpy() for name, cols in [("b", before), ("f", future)]}
    np.testing.assert_array_equal(hist["b"][0], [3, 2, 0])  # codes = position + 1
    np.testing.assert_array_equal(hist["f"][0], hist["b"][0])  # the future click: no change
    np.testing.assert_array_equal(hist["f"][1], [4, 3, 2])  # ... but a later impression sees it
    np.testing.assert_array_equal(past["s_history"].to_numpy()[2], [4, 0, 0])  # past click
    np.testing.assert_array_equal(before["s_ad_item"].to_numpy(), [1, 2, 3])
    assert before["s_history"].dtype == pl.Array(pl.Int32, 3)


def test_ads_without_text_are_no_history_items() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)  # ad 20 has no text
    ads = Vectors(pl.Series("ad_id", [10, 20]), vectors)
    rows = pl.DataFrame(
        {"impression_id": [1], "user_id": [1], "ts": [T0], "ad_id": [10]},
        schema={
            "impression_id": pl.Int64,
            "user_id": pl.Int64,
            "ts": pl.Datetime("us"),
            "ad_id": pl.Int64,
        },
    )
    events = _behaviour(
        [
            (1, T0 - timedelta(hours=2), "view", 10, None),
            (1, T0 - timedelta(hours=1), "view", 20, None),
        ]
    )
    cols = history_columns(rows, events, ads, np.array([0]), k=2)
    np.testing.assert_array_equal(cols["s_history"].to_numpy(), [[1, 0]])
    assert history_columns(rows, events.clear(), ads, np.array([0]), k=2) == {}


def test_item_table_round_trips_to_a_lookup_matrix() -> None:
    vec = np.arange(6, dtype=np.float32).reshape(3, 2)
    table = item_table(pl.Series("ad_id", [7, 8, 9]), vec)
    assert table["item_code"].to_list() == [1, 2, 3]
    matrix = table_matrix(table.reverse())  # any row order
    np.testing.assert_array_equal(matrix[0], 0.0)
    np.testing.assert_array_equal(matrix[1:], vec)
    with pytest.raises(ValueError, match="codes must be"):
        table_matrix(table.head(2).with_columns(pl.col("item_code") + 1))
