"""Row checks on raw impressions: what cannot be featurised goes to quarantine with a reason."""

from __future__ import annotations

import polars as pl


def split_quarantine(
    impressions: pl.LazyFrame, ads: pl.LazyFrame, users: pl.LazyFrame | None
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(good rows, quarantined rows + `reason`). Every input row lands in exactly one of them.

    Reasons, first that applies: null_ts, null_user_id, null_ad_id, bad_click (not 0/1),
    bad_conversion (not 0/1/null, or 1 without a click), unknown_ad, unknown_user (only when a
    users table is given), duplicate_impression_id (every occurrence after the first).
    """
    known_ads = (
        ads.select(pl.col("ad_id").alias("__ad"))
        .unique()
        .with_columns(pl.lit(True).alias("__ad_ok"))
    )
    frame = impressions.with_row_index("__row").join(
        known_ads, left_on="ad_id", right_on="__ad", how="left"
    )
    user_ok = pl.lit(True)
    if users is not None:
        known_users = (
            users.select(pl.col("user_id").alias("__user"))
            .unique()
            .with_columns(pl.lit(True).alias("__user_ok"))
        )
        frame = frame.join(known_users, left_on="user_id", right_on="__user", how="left")
        user_ok = pl.col("__user_ok").fill_null(False)
    conv = pl.col("conversion")
    reason = (
        pl.when(pl.col("ts").is_null())
        .then(pl.lit("null_ts"))
        .when(pl.col("user_id").is_null())
        .then(pl.lit("null_user_id"))
        .when(pl.col("ad_id").is_null())
        .then(pl.lit("null_ad_id"))
        .when(~pl.col("click").is_in([0, 1]) | pl.col("click").is_null())
        .then(pl.lit("bad_click"))
        .when(conv.is_not_null() & (~conv.is_in([0, 1]) | (conv > pl.col("click"))))
        .then(pl.lit("bad_conversion"))
        .when(~pl.col("__ad_ok").fill_null(False))
        .then(pl.lit("unknown_ad"))
        .when(~user_ok)
        .then(pl.lit("unknown_user"))
        .when(pl.col("__row") != pl.col("__row").min().over("impression_id"))
        .then(pl.lit("duplicate_impression_id"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    drop = [c for c in ("__ad_ok", "__user_ok") if c in frame.collect_schema().names()]
    frame = frame.with_columns(reason.alias("reason")).drop(drop).sort("__row")
    good = frame.filter(pl.col("reason").is_null()).drop(["reason", "__row"])
    bad = frame.filter(pl.col("reason").is_not_null()).drop("__row")
    return good, bad
