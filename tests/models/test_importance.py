"""Permutation importance over a FeatureMatrix: the input a model reads loses AUC when
shuffled, the ones it ignores lose none, every kind of input is shuffled as a whole."""

from __future__ import annotations

import numpy as np
import pytest

from models.importance import permutation_importance
from models.matrix import FeatureMatrix, KeyedVectors

N = 600


def _matrix() -> tuple[FeatureMatrix, np.ndarray]:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(11, 4)).astype(np.float32)
    x = FeatureMatrix(
        categorical=rng.integers(0, 5, (N, 2)),
        numeric=rng.normal(size=(N, 2)).astype(np.float32),
        categorical_names=("c_a", "c_b"),
        numeric_names=("n_a", "n_b"),
        cardinalities=(5, 5),
        embeddings={
            "e_dense": rng.normal(size=(N, 3)).astype(np.float32),
            "e_keyed": KeyedVectors(rng.integers(1, 11, N), table, 4),
        },
        items={"s_history": rng.integers(0, 9, (N, 3))},
    )
    score = x.numeric[:, 0] + x.embeddings["e_keyed"].dense()[:, 0]
    click = (score + 0.2 * rng.normal(size=N) > 0).astype(int)
    return x, click


def _model(x: FeatureMatrix) -> np.ndarray:
    """Reads n_a and the keyed embedding's first dimension only."""
    score = x.numeric[:, 0] + x.embeddings["e_keyed"].dense()[:, 0]
    p = 1 / (1 + np.exp(-score))
    return np.column_stack([p, p, p])


def test_what_the_model_reads_matters_and_nothing_else_does() -> None:
    x, click = _matrix()
    drops = permutation_importance(_model, x, click, seed=3)
    assert set(drops) == {"c_a", "c_b", "n_a", "n_b", "e_dense", "e_keyed", "s_history"}
    assert drops["n_a"] > 0.1 and drops["e_keyed"] > 0.1
    for ignored in ("c_a", "c_b", "n_b", "e_dense", "s_history"):
        assert drops[ignored] == pytest.approx(0.0, abs=1e-12), ignored
    assert drops == permutation_importance(_model, x, click, seed=3)  # seeded
    assert np.array_equal(x.numeric, _matrix()[0].numeric)  # the input is left as it was


def test_one_class_has_no_importance() -> None:
    x, _ = _matrix()
    assert permutation_importance(_model, x, np.zeros(N, dtype=int), seed=0) == {}
