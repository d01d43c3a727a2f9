"""Look rows up by key in frame order (pure polars): one helper for every "left join that
keeps the left side's rows and order" of the features stage.

A position lookup (`replace_strict` over the distinct keys) and a gather per column: the rows
stay where they are, and no join has to restore their order (a join that keeps order costs
several times more).
"""

from __future__ import annotations

import polars as pl


def positions(values: pl.Series, keys: pl.Series) -> pl.Series:
    """For each value, the position (UInt32) of its first occurrence in `keys`; null where the
    value is null or absent from `keys`. `values` are cast to the dtype of `keys`."""
    first = (
        pl.DataFrame({"key": keys, "pos": pl.int_range(len(keys), dtype=pl.UInt32, eager=True)})
        .unique("key", keep="first", maintain_order=True)
        .drop_nulls("key")
    )
    return values.cast(keys.dtype).replace_strict(
        first["key"], first["pos"], default=None, return_dtype=pl.UInt32
    )


def attach(frame: pl.DataFrame, table: pl.DataFrame, key: str) -> pl.DataFrame:
    """`frame` with the other columns of `table` beside it: for each row, those of the first
    `table` row with the same `key` (nulls where none has it), in frame order."""
    cols = [c for c in table.columns if c != key]
    pos = positions(frame[key], table[key])
    return frame.hstack(table.select(pl.col(cols).gather(pos)))
