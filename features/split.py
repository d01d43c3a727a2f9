"""Time-based train / valid / test split and the cold-start flag."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import polars as pl

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)
SPLITS = ("train", "valid", "test")
SPLIT_BY = ("auto", "days", "fraction")


@dataclass(frozen=True)
class SplitConfig:
    """Day boundaries count from the first impression's day (train, then valid, then test).

    Datasets without usable timestamps carry their own `split` column (from the dataset's files
    or a seeded random split made at ingest: `random_seed`, `valid_fraction`, `test_fraction`).
    """

    train_days: int = 18
    valid_days: int = 5
    test_days: int = 5
    random_seed: int = 7
    valid_fraction: float = 0.1
    test_fraction: float = 0.2
    # how a time split cuts: `days` (train_days, valid_days, test_days from the first day),
    # `fraction` (the last test_fraction of the rows in time order is test, the valid_fraction
    # before it valid), or `auto`: days when every part gets rows that way, else fraction
    by: str = "auto"

    def __post_init__(self) -> None:
        for name in ("train_days", "valid_days", "test_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.random_seed < 0:
            raise ValueError(f"random_seed must be >= 0, got {self.random_seed}")
        for name in ("valid_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "valid_fraction + test_fraction must be below 1 (the rest is train), got "
                f"{self.valid_fraction} + {self.test_fraction}"
            )
        if self.by not in SPLIT_BY:
            raise ValueError(f"by must be one of {', '.join(SPLIT_BY)}, got {self.by!r}")


def _day_bounds(first: datetime, cfg: SplitConfig) -> tuple[datetime, datetime, datetime]:
    day0 = first.replace(hour=0, minute=0, second=0, microsecond=0)
    valid_start = day0 + timedelta(days=cfg.train_days)
    test_start = valid_start + timedelta(days=cfg.valid_days)
    return valid_start, test_start, test_start + timedelta(days=cfg.test_days)


def _fraction_bounds(ts: pl.Series, cfg: SplitConfig) -> tuple[datetime, datetime, datetime]:
    """Cuts at the timestamps of the rows that start the last valid + test and test shares."""
    ts = ts.drop_nulls().sort()
    n = len(ts)
    valid_start = ts[min(n - 1, int(n * (1 - cfg.valid_fraction - cfg.test_fraction)))]
    test_start = ts[min(n - 1, int(n * (1 - cfg.test_fraction)))]
    return valid_start, test_start, ts[-1] + timedelta(microseconds=1)


def _fills_every_part(ts: pl.Series, bounds: tuple[datetime, datetime, datetime]) -> bool:
    valid_start, test_start, test_end = bounds
    return bool(
        (ts < valid_start).any()
        and ((ts >= valid_start) & (ts < test_start)).any()
        and ((ts >= test_start) & (ts < test_end)).any()
    )


def assign_split(impressions: Frame, cfg: SplitConfig) -> tuple[Frame, dict]:
    """Add a `split` column (unless the data brings one) and return the boundaries used.
    A DataFrame comes back as a DataFrame, a LazyFrame as a LazyFrame.

    Rows after the test period get `after` (and null ts would get null): the caller
    quarantines every row whose split is not one of SPLITS. A part can still be empty (with
    `by = "days"`, or timestamps too few to cut): the caller checks.
    """
    if "split" in impressions.collect_schema().names():
        return impressions, {"split_mode": "given"}
    ts = impressions.lazy().select("ts").collect()["ts"]
    if ts.null_count() == len(ts):  # no rows: nothing to split
        return impressions.with_columns(pl.lit(None, pl.String).alias("split")), {
            "split_mode": "time"
        }
    by = cfg.by
    if by in ("auto", "days"):
        cuts = _day_bounds(ts.min(), cfg)
        if by == "auto":
            by = "days" if _fills_every_part(ts, cuts) else "fraction"
    if by == "fraction":
        cuts = _fraction_bounds(ts, cfg)
    valid_start, test_start, test_end = cuts
    split = (
        pl.when(pl.col("ts") < valid_start)
        .then(pl.lit("train"))
        .when(pl.col("ts") < test_start)
        .then(pl.lit("valid"))
        .when(pl.col("ts") < test_end)
        .then(pl.lit("test"))
        .otherwise(pl.lit("after"))
    )
    bounds = {
        "split_mode": "time",
        **({"split_by": by} if by != "days" else {}),
        "valid_start": valid_start.isoformat(),
        "test_start": test_start.isoformat(),
        "test_end": test_end.isoformat(),
    }
    return impressions.with_columns(split.alias("split")), bounds


def cold_start_flag(impressions: pl.LazyFrame | pl.DataFrame) -> pl.Expr:
    """True on test rows whose ad had no impression before the test period (in train or
    valid); false elsewhere, and false for a null ad id."""
    seen = (
        impressions.lazy()
        .filter(pl.col("split") != "test")
        .select(pl.col("ad_id").drop_nulls().unique())
        .collect()["ad_id"]
    )
    unseen = ~pl.col("ad_id").is_in(seen.implode()) & pl.col("ad_id").is_not_null()
    return (pl.col("split") == "test") & unseen


def new_user_flag(impressions: pl.LazyFrame | pl.DataFrame) -> pl.Expr:
    """True on test rows whose user has no train impression; false elsewhere and for a null
    user id."""
    seen = (
        impressions.lazy()
        .filter(pl.col("split") == "train")
        .select(pl.col("user_id").drop_nulls().unique())
        .collect()["user_id"]
    )
    unseen = ~pl.col("user_id").is_in(seen.implode()) & pl.col("user_id").is_not_null()
    return (pl.col("split") == "test") & unseen
