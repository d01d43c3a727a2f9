"""Categorical encoders fitted on train: value -> code, 0 reserved for unseen or missing."""

from __future__ import annotations

import polars as pl


def fit_vocab(train: pl.LazyFrame, column: str, min_count: int = 1) -> pl.DataFrame:
    """Codes 1..V by descending train frequency (ties by value), for values seen >= min_count."""
    return (
        train.select(pl.col(column).cast(pl.String).alias("value"))
        .drop_nulls()
        .group_by("value")
        .agg(pl.len().alias("count"))
        .filter(pl.col("count") >= min_count)
        .sort(["count", "value"], descending=[True, False])
        .with_row_index("code", offset=1)
        .select(pl.lit(column).alias("column"), "value", pl.col("code").cast(pl.Int32), "count")
        .collect()
    )


def apply_vocab(frame: pl.LazyFrame, column: str, vocab: pl.DataFrame, out: str) -> pl.LazyFrame:
    """Add `out` = the code of `column`'s value, 0 when unseen in train or null."""
    mapping = vocab.filter(pl.col("column") == column).select(
        pl.col("value"), pl.col("code").alias(out)
    )
    return (
        frame.with_columns(pl.col(column).cast(pl.String).alias("__value"))
        .join(mapping.lazy(), left_on="__value", right_on="value", how="left")
        .with_columns(pl.col(out).fill_null(0))
        .drop("__value")
    )
