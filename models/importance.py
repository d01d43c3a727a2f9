"""Permutation importance over a `FeatureMatrix`, for any model with `predict_proba`.

An input's importance is the drop in CTR AUC when that input alone is shuffled across the rows
(Breiman 2001; scikit-learn's `permutation_importance` does the same over a 2-D array, which a
matrix of ids, numerics, keyed vectors and item codes is not). Each categorical or numeric
column, each embedding and each item list is one input, shuffled as a whole: an embedding's
rows move together, so the drop is the vector's, not one dimension's. Shuffles are seeded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
from sklearn.metrics import roc_auc_score

from models.matrix import FeatureMatrix

Predict = Callable[[FeatureMatrix], np.ndarray]  # (N, 3): pCTR, pCVR, pCTCVR


def _shuffled(x: FeatureMatrix, perm: np.ndarray) -> Iterator[tuple[str, FeatureMatrix]]:
    """(input name, `x` with that input's rows in the order `perm`) for every input."""
    for j, name in enumerate(x.categorical_names):
        cat = x.categorical.copy()
        cat[:, j] = cat[perm, j]
        yield name, replace(x, categorical=cat)
    for j, name in enumerate(x.numeric_names):
        num = x.numeric.copy()
        num[:, j] = num[perm, j]
        yield name, replace(x, numeric=num)
    for name, emb in x.embeddings.items():
        yield name, replace(x, embeddings={**x.embeddings, name: emb[perm]})
    for name, codes in x.items.items():
        yield name, replace(x, items={**x.items, name: codes[perm]})


def permutation_importance(
    predict: Predict, x: FeatureMatrix, click: np.ndarray, seed: int
) -> dict[str, float]:
    """Per input: CTR AUC of `predict(x)` minus the AUC with that input shuffled (one seeded
    permutation, the same for every input); larger is more important, near 0 is noise.
    Empty when `click` has one class."""
    click = np.asarray(click)
    if len(np.unique(click)) < 2:
        return {}
    base = roc_auc_score(click, predict(x)[:, 0])
    perm = np.random.default_rng(seed).permutation(len(click))
    return {
        name: float(base - roc_auc_score(click, predict(shuffled)[:, 0]))
        for name, shuffled in _shuffled(x, perm)
    }
