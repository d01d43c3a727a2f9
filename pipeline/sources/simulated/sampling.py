"""Sampling helpers shared by the simulator's event modules: time stamps, draws within groups
(ads of one subtopic or category), draws from a user's hidden taste mixture, and the reordering
of many columns at once."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import polars as pl

from features import schema
from pipeline.sources.simulated.marketplace import MarketConfig

DAY_S = 86_400
BLOCK = 65_536  # rows a row-wise step computes at a time (its temporaries stay in cache)

# item indices grouped by a key, as (order, starts, counts): the members of group g are
# order[starts[g] : starts[g] + counts[g]]
Grouped = tuple[np.ndarray, np.ndarray, np.ndarray]


def to_datetime(cfg: MarketConfig, seconds: np.ndarray) -> pl.Series:
    """Seconds since `cfg.start` -> a naive microsecond Datetime series."""
    t0_us = int(cfg.t0.replace(tzinfo=UTC).timestamp()) * 1_000_000
    return pl.Series(t0_us + np.asarray(seconds, dtype=np.int64) * 1_000_000).cast(schema.TS)


def grouped(values: np.ndarray, n_groups: int) -> Grouped:
    """CSR layout of item indices by group: (order, starts, counts)."""
    order = np.argsort(values, kind="stable")
    counts = np.bincount(values, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, starts, counts


def group_draws(
    rng: np.random.Generator, csr: Grouped, rows: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The random numbers `sample_in_group` takes for `rows` rows, in its order: (uniforms,
    fallback items)."""
    return rng.random((rows, size)), rng.integers(len(csr[0]), size=(rows, size))


def pick_in_group(
    csr: Grouped, groups: np.ndarray, uniforms: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """The items `group_draws` picks: row i's from its group, `fallback` where it is empty.
    Row by row, so rows may be picked in blocks."""
    order, starts, counts = csr
    c = counts[groups][:, None]
    pick = np.floor(uniforms * np.maximum(c, 1)).astype(np.int64)
    idx = order[np.minimum(starts[groups][:, None] + pick, len(order) - 1)]
    return np.where(c > 0, idx, fallback)


def sample_in_group(
    rng: np.random.Generator, csr: Grouped, groups: np.ndarray, size: int
) -> np.ndarray:
    """(len(groups), size) items drawn uniformly from each row's group (anywhere if it is empty)."""
    return pick_in_group(csr, groups, *group_draws(rng, csr, len(groups), size))


def sample_taste(rng: np.random.Generator, tastes: np.ndarray, users: np.ndarray) -> np.ndarray:
    """One subtopic per row drawn from the user's taste mixture (at most 4 non-zeros a user)."""
    top = np.argsort(-tastes, axis=1, kind="stable")[:, :4]
    weights = np.take_along_axis(tastes, top, axis=1)
    uniforms = rng.random((len(users), 1))
    out = np.empty(len(users), top.dtype)
    for start in range(0, len(users), BLOCK):  # blocks of rows stay in the CPU's cache
        r = slice(start, start + BLOCK)
        cum = np.cumsum(weights[users[r]], axis=1)
        pick = (cum < uniforms[r] * cum[:, -1:]).sum(axis=1)
        out[r] = top[users[r], np.minimum(pick, 3)]
    return out


def gathered(order: np.ndarray, **columns: np.ndarray) -> dict[str, np.ndarray]:
    """`column[order]` of each (1-d, integer, bool or float) column, the same values in the same
    dtypes. Sorting a log by time is a random permutation of its draw order: a gather per column
    misses the cache once per row and column, so the columns are gathered a row at a time, as
    one (n, k) block per kind (int64 for integers and bools, float64 for floats)."""
    out: dict[str, np.ndarray] = {}
    for kind, names in (
        (np.int64, [n for n, c in columns.items() if c.dtype.kind in "biu"]),
        (np.float64, [n for n, c in columns.items() if c.dtype.kind == "f"]),
    ):
        if not names:
            continue
        block = np.empty((len(order), len(names)), kind)
        for j, name in enumerate(names):
            block[:, j] = columns[name]
        block = block[order]
        for j, name in enumerate(names):
            out[name] = np.ascontiguousarray(block[:, j]).astype(columns[name].dtype, copy=False)
    missing = set(columns) - set(out)
    if missing:
        raise TypeError(f"gathered: columns {sorted(missing)} are neither numbers nor bools")
    return out
