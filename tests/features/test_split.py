"""Time split, a split given by the data, and the cold-start / new-user flags."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import polars as pl

from features.split import SplitConfig, assign_split, cold_start_flag, new_user_flag

D0 = datetime(2026, 3, 2, 7, 30)
CFG = SplitConfig(train_days=2, valid_days=1, test_days=1)


def _frame(days: list[float], users: list[int], ads: list[int]) -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "ts": [D0 + timedelta(days=d) for d in days],
            "user_id": users,
            "ad_id": ads,
        }
    )


def test_time_boundaries_count_from_the_first_day() -> None:
    # day 0 starts at midnight before the first impression (07:30)
    lf = _frame([0, 1.6, 1.7, 2.5, 3.0, 3.7], [1] * 6, [1] * 6)
    out, bounds = assign_split(lf, CFG)
    assert out.collect()["split"].to_list() == ["train", "train", "valid", "valid", "test", "after"]
    assert bounds == {
        "split_mode": "time",
        "valid_start": "2026-03-04T00:00:00",
        "test_start": "2026-03-05T00:00:00",
        "test_end": "2026-03-06T00:00:00",
    }


def test_a_split_column_from_the_data_wins() -> None:
    lf = _frame([0, 5, 9], [1, 2, 3], [1, 2, 3]).with_columns(
        pl.Series("split", ["test", "train", "valid"])
    )
    out, bounds = assign_split(lf, CFG)
    assert out.collect()["split"].to_list() == ["test", "train", "valid"]
    assert bounds == {"split_mode": "given"}


def test_cold_start_and_new_user_flags() -> None:
    frame = pl.DataFrame(
        {
            "split": ["train", "valid", "test", "test", "test", "test", "valid"],
            "user_id": [1, 2, 1, 2, 3, None, 3],
            "ad_id": [10, 11, 10, 11, 12, None, 10],
        }
    )
    out = frame.with_columns(
        cold_start_flag(frame.lazy()).alias("cold"), new_user_flag(frame).alias("new")
    )
    # ad 12 first appears in test; user 2 and 3 never in train (3 only in valid)
    assert out["cold"].to_list() == [False, False, False, False, True, False, False]
    assert out["new"].to_list() == [False, False, False, True, True, False, False]


def test_auto_falls_back_to_time_shares_when_the_days_leave_a_part_empty() -> None:
    # a 2-day log against 2 + 1 + 1 configured days: by days, valid and test would be empty
    days = [i / 10 for i in range(20)]
    out, bounds = assign_split(_frame(days, [1] * 20, [1] * 20), CFG)
    split = out.collect()["split"].to_list()
    assert split == ["train"] * 14 + ["valid"] * 2 + ["test"] * 4  # shares 0.7 / 0.1 / 0.2
    assert bounds["split_by"] == "fraction"
    assert bounds["valid_start"] == (D0 + timedelta(days=1.4)).isoformat()
    # the same log split by days, as asked, leaves test empty (the features stage refuses it)
    out, bounds = assign_split(_frame(days, [1] * 20, [1] * 20), replace(CFG, by="days"))
    assert set(out.collect()["split"].to_list()) == {"train", "valid"}
    assert "split_by" not in bounds


def test_fraction_split_keeps_one_timestamp_in_one_part() -> None:
    # one outlier from 1970 does not empty the later parts, and rows of one time never straddle
    days = [-20_000.0] + [1.0] * 4 + [2.0] * 3 + [3.0] * 2
    out, _ = assign_split(_frame(days, [1] * 10, [1] * 10), replace(CFG, by="fraction"))
    split = out.collect()["split"].to_list()
    assert split == ["train"] * 5 + ["valid"] * 3 + ["test"] * 2
