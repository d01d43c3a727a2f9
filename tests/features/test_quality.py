"""Quarantine of raw impressions: every row lands in exactly one place, with the first reason."""

from __future__ import annotations

from datetime import datetime

import polars as pl
from polars.testing import assert_frame_equal

from features.quality import flag_rows, reason_counts, split_quarantine, unusable

T = datetime(2026, 3, 2)


def _imps() -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "impression_id": [1, 2, 3, 4, 5, 6, 7, 8, 9, 3, None],
            "ts": [T, None, T, T, T, T, T, T, T, T, T],
            "user_id": [1, 1, None, 1, 1, 1, 9, 1, 1, 1, 1],
            "ad_id": [10, 10, 10, None, 10, 99, 10, 10, 10, 10, 10],
            "click": [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0],
            "conversion": [1, 0, 0, 0, 0, 0, 0, 1, None, 0, 0],
        },
        schema_overrides={"click": pl.Int8, "conversion": pl.Int8},
    )


ADS = pl.LazyFrame({"ad_id": [10, 11]})
USERS = pl.LazyFrame({"user_id": [1, 2]})
REASONS = [
    None,
    "null_ts",
    "null_user_id",
    "null_ad_id",
    "bad_click",
    "unknown_ad",
    "unknown_user",
    "bad_conversion",  # 1 without a click
    None,  # a null conversion is allowed (datasets without conversions)
    "duplicate_impression_id",  # the second id 3 (the first one is bad for another reason)
    "null_impression_id",
]


def test_each_bad_row_gets_its_first_reason_in_row_order() -> None:
    got = flag_rows(_imps(), ADS, USERS).collect()
    assert got["reason"].to_list() == REASONS
    assert_frame_equal(got.drop("reason"), _imps().collect())


def test_split_keeps_every_row_exactly_once() -> None:
    good, bad = split_quarantine(_imps(), ADS, USERS)
    assert good.height + bad.height == _imps().collect().height
    assert good["impression_id"].to_list() == [1, 9]
    assert "reason" not in good.columns
    assert bad["reason"].null_count() == 0


def test_split_of_clean_rows_is_the_input_in_one_chunk() -> None:
    rows = _imps().collect()
    clean = rows.head(1).vstack(rows.slice(8, 1))
    assert max(clean.n_chunks("all")) == 2
    good, bad = split_quarantine(clean.lazy(), ADS, USERS)
    assert_frame_equal(good, clean)
    assert set(good.n_chunks("all")) == {1}
    assert bad.height == 0 and bad.columns == [*clean.columns, "reason"]


def test_checks_skip_what_the_dataset_lacks() -> None:
    """No ads / users table and no user or ad column: nothing is unknown or required."""
    imps = _imps().with_columns(pl.lit(None, pl.Int64).alias("user_id"))
    got = flag_rows(imps, None, pl.LazyFrame(schema={"user_id": pl.Int64}), ["ts"])
    reasons = got.collect()["reason"].to_list()
    assert reasons[2] is None and reasons[3] is None and reasons[5] is None
    assert reasons[1] == "null_ts" and reasons[4] == "bad_click"


def test_duplicates_keep_the_first_occurrence() -> None:
    imps = pl.LazyFrame(
        {
            "impression_id": [7, 8, 7, 7],
            "ts": [T] * 4,
            "user_id": [1] * 4,
            "ad_id": [10] * 4,
            "click": [0, 0, 1, 0],
            "conversion": [0] * 4,
        }
    )
    got = flag_rows(imps, ADS, USERS).collect()
    dup = "duplicate_impression_id"
    assert got["reason"].to_list() == [None, None, dup, dup]


def test_reason_counts() -> None:
    _, bad = split_quarantine(_imps(), ADS, USERS)
    counts = reason_counts(bad)
    assert sum(counts.values()) == bad.height == 9
    assert list(counts) == sorted(counts)  # all once: ties by name
    assert counts["null_ts"] == 1


def _split_rows(train_clicks: list[int], valid: int = 2, test: int = 2) -> pl.DataFrame:
    n = len(train_clicks)
    return pl.DataFrame(
        {
            "split": ["train"] * n + ["valid"] * valid + ["test"] * test,
            "click": train_clicks + [0] * (valid + test),
        }
    )


def test_unusable_names_what_stops_a_model() -> None:
    good = _split_rows([0, 1, 0])
    none_bad = pl.DataFrame({"reason": pl.Series([], dtype=pl.String)})
    assert unusable(good, none_bad, 7, 0.5) is None
    many_bad = pl.DataFrame({"reason": ["missing_ts"] * 8})
    assert "8 of 15 impressions quarantined (missing_ts: 8)" in unusable(good, many_bad, 15, 0.5)
    assert unusable(good, many_bad, 15, 0.6) is None
    empty = unusable(_split_rows([0, 1], valid=0, test=0), none_bad, 2, 0.5)
    assert "leaves valid and test empty (train 2, valid 0, test 0 rows)" in empty
    assert "no click in the 3 train" in unusable(_split_rows([0, 0, 0]), none_bad, 7, 0.5)
    assert "a click on every row" in unusable(_split_rows([1, 1]), none_bad, 6, 0.5)
