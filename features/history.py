"""The user's recent items for target attention (DIN, Zhou et al. 2018), point in time (pure
polars / numpy).

Rather than k vectors per impression, the features stage stores per impression the codes of the
user's `k` most recent viewed or clicked ads strictly before the impression (`s_history`, most
recent first, 0 = padding) and the impressed ad's own code (`s_ad_item`), and once per
experiment the item table `code -> vector` (`item_vectors.parquet`) for every ad with a text
embedding (ads are side information known in advance, so an ad never impressed in train still
has its vector). The neural model gathers the vectors itself.

The events and the "strictly before t" rule are those of the interest vector
(`features.interest`): behaviour `view` and `click` events with an ad, an event at exactly `t`
not counting.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.interest import last_prior, micros

HISTORY_EVENTS = ("view", "click")  # the interest vector's item events (search has no item)


def item_table(ids: pl.Series, vectors: np.ndarray) -> pl.DataFrame:
    """item_code (Int32, 1..M: row i of `vectors` is code i + 1), ad_id and vec
    (Array(Float32, d)); code 0 is the padding (the zero vector), not a row."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"item_table: {len(ids)} ids but vectors of shape {vectors.shape}")
    return pl.DataFrame(
        {
            "item_code": pl.Series(np.arange(1, len(ids) + 1), dtype=pl.Int32),
            "ad_id": ids,
            "vec": pl.Series("vec", vectors),
        }
    )


def table_matrix(table: pl.DataFrame) -> np.ndarray:
    """The (M + 1, d) float32 lookup of `item_table`'s frame: row c is the vector of code c,
    row 0 (padding) zero. The codes must be 1..M (any order)."""
    codes = table["item_code"].to_numpy().astype(np.int64)
    if sorted(codes.tolist()) != list(range(1, len(codes) + 1)):
        raise ValueError("item table: codes must be 1..M, each once")
    vec = table["vec"]
    if not isinstance(vec.dtype, pl.Array) or vec.null_count():
        raise ValueError("item table: vec must be a non-null Array(Float32, d) column")
    out = np.zeros((len(codes) + 1, vec.dtype.size), dtype=np.float32)
    out[codes] = vec.to_numpy().reshape(len(codes), vec.dtype.size)
    return out


def recent_items(
    impressions: pl.DataFrame, events: pl.DataFrame, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The codes of each impression's user's last `k` items strictly before its time.

    impressions: user_id, ts. events: user_id, ts, code (int >= 1; the caller keeps only the
    item events whose ad has a code). Returns (codes (N, k) int32, most recent first, 0 after
    the user's history runs out; counts (N,) int64, how many are set, <= k), in impression
    order. Events at the same time keep their input order (the later row is more recent).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = impressions.height
    out = np.zeros((n, k), dtype=np.int32)
    if events.height == 0 or n == 0:
        return out, np.zeros(n, dtype=np.int64)
    user = events["user_id"].to_numpy().astype(np.int64)
    ts = micros(events["ts"])
    order = np.lexsort((np.arange(len(user)), ts, user))
    code = events["code"].to_numpy().astype(np.int32)[order]
    if (code < 1).any():
        raise ValueError("recent_items: event codes must be >= 1 (0 is the padding)")
    last, count = last_prior(
        impressions["user_id"].to_numpy().astype(np.int64),
        micros(impressions["ts"]),
        user[order],
        ts[order],
    )
    used = np.minimum(count, k)
    for lag in range(k):
        ok = np.flatnonzero(used > lag)
        out[ok, lag] = code[last[ok] - lag]
    return out, used
