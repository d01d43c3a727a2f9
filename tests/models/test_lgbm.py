"""LightGBM baseline: the estimator contract, determinism, save / load without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.lgbm import DataParallel, LightGBMConfig, LightGBMCTR
from models.matrix import FeatureMatrix

CFG = LightGBMConfig(
    num_boost_round=60,
    early_stopping_rounds=10,
    min_data_in_leaf=5,
    cvr_min_data_in_leaf=5,
    num_leaves=7,
)


def _data(n: int, seed: int) -> tuple[FeatureMatrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 6, size=(n, 2))
    num = rng.normal(size=(n, 3)).astype(np.float32)
    logit = -2.0 + 1.5 * num[:, 0] + 0.8 * (cat[:, 0] == 3)
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    conv = (click * (rng.random(n) < 1 / (1 + np.exp(-(num[:, 1] - 0.5))))).astype(np.float32)
    x = FeatureMatrix(cat, num, ("c_a", "c_b"), ("n_x", "n_y", "n_z"), (6, 6))
    return x, click, conv


@pytest.fixture(scope="module")
def fitted() -> tuple[LightGBMCTR, FeatureMatrix]:
    x, c, v = _data(3000, 0)
    xv, cv, vv = _data(1000, 1)
    return LightGBMCTR(CFG, random_state=3, num_threads=1).fit(x, c, v, xv, cv, vv), xv


def test_fit_returns_self_and_probabilities_are_in_range(fitted) -> None:
    model, xv = fitted
    p = model.predict_proba(xv)
    assert isinstance(model, LightGBMCTR)
    assert p.shape == (len(xv), 3)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p[:, 2], p[:, 0] * p[:, 1])


def test_learns_the_planted_signal(fitted) -> None:
    from sklearn.metrics import roc_auc_score

    model, xv = fitted
    _, cv, _ = _data(1000, 1)
    assert roc_auc_score(cv, model.predict_proba(xv)[:, 0]) > 0.7


def test_same_seed_gives_identical_predictions(fitted) -> None:
    model, xv = fitted
    x, c, v = _data(3000, 0)
    _, cv, vv = _data(1000, 1)
    again = LightGBMCTR(CFG, random_state=3, num_threads=2).fit(x, c, v, xv, cv, vv)
    np.testing.assert_array_equal(model.predict_proba(xv), again.predict_proba(xv))


def test_save_load_round_trip_is_exact_and_pickle_free(fitted, tmp_path: Path) -> None:
    model, xv = fitted
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "ctr.txt",
        "cvr.txt",
        "lightgbm.json",
    ]
    np.testing.assert_array_equal(
        LightGBMCTR.load(tmp_path / "m").predict_proba(xv), model.predict_proba(xv)
    )


def test_num_threads_survives_save_and_load(fitted, tmp_path: Path, monkeypatch) -> None:
    import json

    model, xv = fitted
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "lightgbm.json").read_text())["num_threads"] == 1
    assert LightGBMCTR.load(tmp_path / "m").num_threads == 1
    other = LightGBMCTR.load(tmp_path / "m", num_threads=2)
    assert other.num_threads == 2
    seen: list[dict] = []
    real = other.ctr_booster_.predict

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(other.ctr_booster_, "predict", spy)
    np.testing.assert_array_equal(other.predict_proba(xv), model.predict_proba(xv))
    assert seen[0]["num_threads"] == 2  # prediction runs on the restored thread count
    assert model._params(cvr=False)["num_threads"] == 1
    assert "num_threads" not in LightGBMCTR(CFG)._params(cvr=False)  # None: LightGBM's own


def test_no_conversions_means_no_cvr_booster() -> None:
    x, c, _ = _data(1500, 4)
    xv, cv, _ = _data(500, 5)
    model = LightGBMCTR(CFG).fit(x, c, None, xv, cv, None)
    p = model.predict_proba(xv)
    assert model.cvr_booster_ is None
    assert np.isnan(p[:, 1]).all() and np.isfinite(p[:, 0]).all()
    assert set(model.feature_importance()) == {"ctr"}


def _one_machine(x: FeatureMatrix, click, conv, bins: FeatureMatrix) -> DataParallel:
    clicked = click == 1
    return DataParallel(
        {}, len(x) * 4, int(click.sum()) * 4, int(conv.sum()), bins, x.take(np.flatnonzero(clicked))
    )


def test_data_parallel_on_one_machine_with_bins_from_all_rows_is_the_plain_fit(fitted) -> None:
    """The data-parallel path (bins from the rows named, `tree_learner = "data"`) on a network
    of one machine, binned on every train row, fits the boosters of the plain path; the sizing
    defaults come from the rows over all machines."""
    xv = fitted[1]
    x, c, v = _data(3000, 0)
    _, cv, vv = _data(1000, 1)
    config = LightGBMConfig(num_boost_round=60, early_stopping_rounds=10, cvr_min_data_in_leaf=5)
    parallel = _one_machine(x, c, v, x)
    sharded = LightGBMCTR(config, 3, 1).fit(x, c, v, xv, cv, vv, parallel=parallel)
    plain = LightGBMCTR(config, 3, 1).fit(x, c, v, xv, cv, vv)
    assert sharded.derived_ != plain.derived_  # sized for 4x the rows
    sized = LightGBMConfig(**{**config.__dict__, **sharded.derived_})
    plain = LightGBMCTR(sized, 3, 1).fit(x, c, v, xv, cv, vv)
    np.testing.assert_array_equal(sharded.predict_proba(xv), plain.predict_proba(xv))


def test_data_parallel_bins_come_from_the_rows_named() -> None:
    x, c, v = _data(3000, 0)
    xv, cv, vv = _data(1000, 1)
    few = x.take(np.arange(40))  # 40 rows: coarser bins than 3,000 rows give
    on_few = LightGBMCTR(CFG, 3, 1).fit(x, c, v, xv, cv, vv, parallel=_one_machine(x, c, v, few))
    on_all = LightGBMCTR(CFG, 3, 1).fit(x, c, v, xv, cv, vv, parallel=_one_machine(x, c, v, x))
    assert not np.array_equal(on_few.predict_proba(xv)[:, 0], on_all.predict_proba(xv)[:, 0])
