"""Sampling helpers shared by the simulator's event modules: time stamps, draws within groups
(ads of one subtopic or category) and draws from a user's hidden taste mixture."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import polars as pl

from features import schema
from pipeline.sources.simulated.marketplace import MarketConfig

DAY_S = 86_400

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


def sample_in_group(
    rng: np.random.Generator, csr: Grouped, groups: np.ndarray, size: int
) -> np.ndarray:
    """(len(groups), size) items drawn uniformly from each row's group (anywhere if it is empty)."""
    order, starts, counts = csr
    c = counts[groups][:, None]
    pick = np.floor(rng.random((len(groups), size)) * np.maximum(c, 1)).astype(np.int64)
    idx = order[np.minimum(starts[groups][:, None] + pick, len(order) - 1)]
    return np.where(c > 0, idx, rng.integers(len(order), size=(len(groups), size)))


def sample_taste(rng: np.random.Generator, tastes: np.ndarray, users: np.ndarray) -> np.ndarray:
    """One subtopic per row drawn from the user's taste mixture (at most 4 non-zeros a user)."""
    top = np.argsort(-tastes, axis=1, kind="stable")[:, :4]
    weights = np.take_along_axis(tastes, top, axis=1)
    cum = np.cumsum(weights[users], axis=1)
    pick = (cum < rng.random((len(users), 1)) * cum[:, -1:]).sum(axis=1)
    return top[users, np.minimum(pick, 3)]
