"""Size-aware defaults: unset settings follow the data's size, explicit settings win."""

from __future__ import annotations

import numpy as np
import pytest

from models.lgbm import LightGBMConfig, LightGBMCTR
from models.matrix import FeatureMatrix
from models.neural_config import NeuralConfig
from models.sizing import lightgbm_defaults, neural_defaults, resolve


@pytest.mark.parametrize(
    ("rows", "positives", "batch", "dropout"),
    [
        (200, 12, 64, 0.2),  # a tiny pilot log
        (7_200, 1_500, 256, 0.2),  # criteo_8k's train split: ~30 steps an epoch
        (60_000, 3_000, 2048, 0.2),
        (321_317, 9_800, 2048, 0.1),  # default's train split
        (2_000_000_000, 20_000_000, 2048, 0.1),
    ],
)
def test_neural_defaults_follow_the_size(rows, positives, batch, dropout) -> None:
    got = neural_defaults(rows, positives)
    assert got["batch_size"] == batch and got["dropout"] == dropout
    assert 2 <= got["epochs"] <= 30 and got["lr"] == 1e-3
    assert got["embedding_dim"] == (32 if rows >= 10_000_000 else 16)


def test_smaller_logs_get_more_epochs_and_more_regularisation() -> None:
    small, large = neural_defaults(7_200, 1_500), neural_defaults(321_317, 9_800)
    assert small["epochs"] > large["epochs"] >= 2
    assert small["weight_decay"] > large["weight_decay"]


@pytest.mark.parametrize(
    ("rows", "positives", "leaves", "min_leaf"),
    [
        (200, 12, 7, 20),  # a tenth of the rows at most
        (7_200, 1_550, 15, 93),  # ~20 expected clicks a leaf at a 21.5% click rate
        (321_317, 9_800, 127, 656),
        (1_000_000_000, 10_000_000, 255, 2000),
    ],
)
def test_lightgbm_defaults_follow_the_size(rows, positives, leaves, min_leaf) -> None:
    assert lightgbm_defaults(rows, positives) == {
        "num_leaves": leaves,
        "min_data_in_leaf": min_leaf,
    }


def test_lightgbm_defaults_without_positives_do_not_divide_by_zero() -> None:
    assert lightgbm_defaults(1000, 0) == {"num_leaves": 7, "min_data_in_leaf": 20}
    assert lightgbm_defaults(0, 0)["min_data_in_leaf"] == 1


def test_resolve_fills_only_what_the_config_leaves_unset() -> None:
    derived = neural_defaults(7_200, 1_500)
    config, used = resolve(NeuralConfig(batch_size=1024, lr=5e-4), derived)
    assert config.batch_size == 1024 and config.lr == 5e-4  # explicit settings win
    assert config.epochs == derived["epochs"] and config.dropout == 0.2
    assert set(used) == {"epochs", "dropout", "weight_decay", "embedding_dim"}


def _matrix(n: int, seed: int) -> tuple[FeatureMatrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, 3)).astype(np.float32)
    click = (rng.random(n) < 1 / (1 + np.exp(-numeric[:, 0] - 1.5))).astype(np.int8)
    cats = rng.integers(1, 5, size=(n, 1)).astype(np.int32)
    x = FeatureMatrix(
        categorical=cats,
        numeric=numeric,
        categorical_names=("c",),
        numeric_names=("a", "b", "d"),
        cardinalities=(5,),
        embeddings={},
    )
    return x, click


def test_the_fitted_lightgbm_model_records_what_it_derived(tmp_path) -> None:
    x, c = _matrix(3000, 0)
    xv, cv = _matrix(1000, 1)
    model = LightGBMCTR(LightGBMConfig(num_leaves=31), num_threads=1).fit(x, c, None, xv, cv, None)
    assert model.config_.num_leaves == 31 and "num_leaves" not in model.derived_
    rule = lightgbm_defaults(3000, int(c.sum()))["min_data_in_leaf"]
    assert model.derived_ == {"min_data_in_leaf": rule}
    assert model._params(cvr=False)["min_data_in_leaf"] == rule
    model.save(tmp_path / "m")
    assert LightGBMCTR.load(tmp_path / "m").config_.min_data_in_leaf == rule
