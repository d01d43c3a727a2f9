"""features.lookup: positions of values among keys and left attaches in frame order."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from features.lookup import attach, positions


def test_positions_first_occurrence_null_where_absent_or_null() -> None:
    keys = pl.Series([30, 10, 30, None, 20])
    got = positions(pl.Series([20, 30, 99, None, 10, 30]), keys)
    assert got.dtype == pl.UInt32
    assert got.to_list() == [4, 0, None, None, 1, 0]


def test_positions_cast_values_to_the_keys_dtype() -> None:
    got = positions(pl.Series([2, 1], dtype=pl.Int32), pl.Series([1, 2], dtype=pl.Int64))
    assert got.to_list() == [1, 0]
    assert positions(pl.Series(["b", "z"]), pl.Series(["a", "b"])).to_list() == [1, None]
    assert positions(pl.Series([1, 2]), pl.Series([], dtype=pl.Int64)).to_list() == [None, None]


def test_attach_keeps_frame_rows_and_order() -> None:
    frame = pl.DataFrame({"ad_id": [3, 1, None, 7, 3], "x": [1, 2, 3, 4, 5]})
    table = pl.DataFrame({"ad_id": [1, 3, 3], "price": [1.5, 3.5, 9.9], "goal": ["a", "b", "c"]})
    expected = frame.with_columns(
        pl.Series("price", [3.5, 1.5, None, None, 3.5]),
        pl.Series("goal", ["b", "a", None, None, "b"]),  # the first row of a repeated key
    )
    assert_frame_equal(attach(frame, table, "ad_id"), expected)


def test_attach_an_empty_table_gives_typed_nulls() -> None:
    frame = pl.DataFrame({"ad_id": [1, 2]})
    table = pl.DataFrame(schema={"ad_id": pl.Int64, "price": pl.Float64})
    got = attach(frame, table, "ad_id")
    assert got.schema["price"] == pl.Float64 and got["price"].null_count() == 2
