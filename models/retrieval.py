"""Retrieval metrics (pure numpy): where the clicked ad ranks among all candidates by cosine.

A rank is 1 for the top; only strictly higher scores rank above the target (ties go its way).
"""

from __future__ import annotations

import numpy as np

CHUNK = 1024  # queries scored at a time (a chunk x candidates score matrix)


def retrieval_ranks(
    queries: np.ndarray, candidates: np.ndarray, query_of: np.ndarray, target_of: np.ndarray
) -> np.ndarray:
    """The rank of each (query, target) instance: `queries` (q, d) and `candidates` (c, d) are
    unit vectors; instance i asks query row `query_of[i]` for candidate row `target_of[i]`."""
    query_of = np.asarray(query_of, dtype=np.int64)
    target_of = np.asarray(target_of, dtype=np.int64)
    ranks = np.empty(len(query_of), dtype=np.int64)
    for start in range(0, len(query_of), CHUNK):
        q = query_of[start : start + CHUNK]
        t = target_of[start : start + CHUNK]
        scores = queries[q] @ candidates.T
        own = scores[np.arange(len(q)), t]
        ranks[start : start + CHUNK] = (scores > own[:, None]).sum(axis=1) + 1
    return ranks


def retrieval_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """recall@k, MRR and the median rank of `ranks` (NaN where there are none)."""
    if len(ranks) == 0:
        nan = float("nan")
        return {f"recall_at_{k}": nan, "mrr": nan, "median_rank": nan, "n": 0.0}
    return {
        f"recall_at_{k}": float((ranks <= k).mean()),
        "mrr": float((1.0 / ranks).mean()),
        "median_rank": float(np.median(ranks)),
        "n": float(len(ranks)),
    }
