"""The simulator's sampling helpers: the reordering of many columns at once, and the candidate
draws split into draws and picks, give what one gather or one call gives."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.sources.simulated.sampling import (
    gathered,
    group_draws,
    grouped,
    pick_in_group,
    sample_in_group,
)


def test_gathered_is_a_gather_per_column_in_each_dtype() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    columns = {
        "ints": rng.integers(-(2**62), 2**62, n),
        "small": rng.integers(0, 5, n).astype(np.int8),
        "flags": rng.random(n) < 0.5,
        "floats": rng.normal(size=n),
        "singles": rng.normal(size=n).astype(np.float32),
    }
    order = rng.permutation(n)
    out = gathered(order, **columns)
    for name, column in columns.items():
        assert out[name].dtype == column.dtype and out[name].flags.c_contiguous
        np.testing.assert_array_equal(out[name], column[order])
    with pytest.raises(TypeError, match="neither numbers nor bools"):
        gathered(order, text=np.array(["a"] * n, dtype=object))


def test_picks_in_blocks_equal_one_draw_of_every_row() -> None:
    groups_of_items = np.array([0, 0, 1, 3, 3, 3])  # group 2 is empty
    csr = grouped(groups_of_items, 4)
    rows = np.random.default_rng(1).integers(0, 4, 500)
    whole = sample_in_group(np.random.default_rng(2), csr, rows, 3)
    uniforms, fallback = group_draws(np.random.default_rng(2), csr, len(rows), 3)
    blocks = [
        pick_in_group(csr, rows[s : s + 64], uniforms[s : s + 64], fallback[s : s + 64])
        for s in range(0, len(rows), 64)
    ]
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    inside = groups_of_items[whole] == rows[:, None]
    assert inside[rows != 2].all()  # a row of a non-empty group picks from it
