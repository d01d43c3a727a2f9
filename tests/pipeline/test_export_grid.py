"""The export's grid estimates: the per-cell mean and its fallbacks, by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from features.spec import FeatureSpec, SplitBounds
from pipeline.export_grid import cell_estimates, valid_from


def test_cell_estimates_fallbacks_by_hand() -> None:
    rows = pl.DataFrame(
        {
            "ad_id": [1, 1, 2, 3],
            "placement": ["a", "b", "a", "b"],
            "segment": ["s", "s", "s", "s"],
            "category": ["x", "x", "x", "y"],
            "pctr": [0.1, 0.2, 0.05, 0.3],
        }
    )
    grid = pl.DataFrame(
        {
            "ad_id": [1, 1, 2, 4, 5],
            "placement": ["a", "a", "b", "a", "a"],
            "segment": ["s", "t", "s", "s", "s"],
            "category": ["x", "x", "x", "x", "z"],
        }
    )
    out = cell_estimates(rows, grid, ("pctr",), shrinkage=1.0)
    # base(a, s) = 0.075, base(b, s) = 0.25; (a, t) has no rows -> base(a) = 0.075
    # ratio ad 1 = 0.3 / (0.075 + 0.25); ad 2 = 0.05 / 0.075; category x = 0.35 / 0.4
    r1, r2, rx = 0.3 / 0.325, 0.05 / 0.075, 0.35 / 0.4
    expected = {
        (1, "a", "s"): ((0.1 + r1 * 0.075) / 2, 1, "cell"),
        (1, "a", "t"): (r1 * 0.075, 0, "ad"),
        (2, "b", "s"): (r2 * 0.25, 0, "ad"),
        (4, "a", "s"): (rx * 0.075, 0, "category"),
        (5, "a", "s"): (0.075, 0, "prior"),
    }
    got = {
        (r["ad_id"], r["placement"], r["segment"]): (r["pctr"], r["rows"], r["source"])
        for r in out.iter_rows(named=True)
    }
    assert got.keys() == expected.keys()
    for key, (p, n, source) in expected.items():
        assert got[key][0] == pytest.approx(p) and got[key][1:] == (n, source), key
    # a NaN prediction is not hidden by the averaging
    nan_rows = rows.with_columns(pctr=pl.when(pl.col("ad_id") == 1).then(np.nan).otherwise(0.1))
    nan_out = cell_estimates(nan_rows, grid, ("pctr",), shrinkage=1.0)
    assert nan_out.filter(pl.col("ad_id") == 1)["pctr"].is_nan().all()


def test_valid_from_is_the_test_end_else_the_last_impression() -> None:
    from datetime import datetime

    rows = pl.DataFrame({"ts": [datetime(2026, 3, 1, 12), datetime(2026, 3, 2, 8)]})
    timed = FeatureSpec(features=(), split=SplitBounds("time", test_end="2026-03-30T00:00:00"))
    assert valid_from(timed, rows) == "2026-03-30T00:00:00"
    given = FeatureSpec(features=(), split=SplitBounds("given"))
    assert valid_from(given, rows) == "2026-03-02T08:00:00"
    assert valid_from(given, rows.drop("ts")) is None
