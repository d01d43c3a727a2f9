"""Categorical encoders fitted on train: value -> code, 0 reserved for unseen or missing."""

from __future__ import annotations

import polars as pl


def fit_vocab(train: pl.LazyFrame | pl.DataFrame, column: str, min_count: int = 1) -> pl.DataFrame:
    """Codes 1..V by descending train frequency (ties by value), for values seen >= min_count.

    Columns: column (the source column's name), value (String), code (Int32), count.
    """
    return (
        train.lazy()
        .select(pl.col(column).cast(pl.String).alias("value"))
        .drop_nulls()
        .group_by("value")
        .agg(pl.len().alias("count"))
        .filter(pl.col("count") >= min_count)
        .sort(["count", "value"], descending=[True, False])
        .with_row_index("code", offset=1)
        .select(pl.lit(column).alias("column"), "value", pl.col("code").cast(pl.Int32), "count")
        .collect()
    )


def encode(column: str, vocab: pl.DataFrame, out: str, dtype: pl.DataType | None = None) -> pl.Expr:
    """An expression: the code of `column`'s value, 0 when unseen in train or null.

    With the column's `dtype` (an integer type, say) the lookup runs on the column as it is
    instead of on its string form: same codes, no string copy of a large column.
    """
    mapping = vocab.filter(pl.col("column") == column)
    values, col = mapping["value"], pl.col(column).cast(pl.String)
    if dtype is not None and dtype.is_integer():
        values, col = values.cast(dtype), pl.col(column)
    return (
        col.replace_strict(values, mapping["code"], default=0, return_dtype=pl.Int32)
        .fill_null(0)
        .alias(out)
    )
