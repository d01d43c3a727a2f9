"""Negative downsampling (models.sampling), the size-derived rate (models.sizing), and the
chunked model input (models.matrix.MatrixChunks) the neural model streams from."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.dcn_esmm import numeric_statistics
from models.lgbm import LightGBMConfig, LightGBMCTR
from models.matrix import FeatureMatrix, KeyedVectors, MatrixChunks
from models.neural import NeuralCTR
from models.sampling import corrected, negative_sample
from models.sizing import MIN_NEGATIVE_RATE, negative_rate
from tests.models.test_neural import THREADS, TINY, make_data


def test_negative_sample_keeps_every_positive_and_the_rate_of_negatives() -> None:
    rng = np.random.default_rng(0)
    click = (rng.random(200_000) < 0.03).astype(np.float32)
    keep = negative_sample(click, 0.2, seed=5)
    assert keep[click == 1].all()
    assert abs(keep[click == 0].mean() - 0.2) < 0.005
    np.testing.assert_array_equal(keep, negative_sample(click, 0.2, seed=5))
    assert not np.array_equal(keep, negative_sample(click, 0.2, seed=6))
    assert negative_sample(click, 1.0, seed=5).all()
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="negative_rate"):
            negative_sample(click, bad, seed=5)


def test_the_correction_undoes_the_sampling_of_the_odds() -> None:
    p = np.array([1e-4, 0.01, 0.1, 0.5, 0.9])
    for w in (0.01, 0.1, 0.5):
        sampled = p / (p + (1.0 - p) * w)  # odds / w: what a model fitted on the sample sees
        np.testing.assert_allclose(corrected(sampled, w), p, rtol=1e-12)
    assert corrected(p, 1.0) is p
    assert corrected(np.array([0.5]), 0.25)[0] == pytest.approx(0.5 / (0.5 + 0.5 / 0.25))


def test_negative_rate_is_one_until_the_rows_exceed_the_cap() -> None:
    assert negative_rate(2_000_000, 50_000, 2_000_000) == 1.0
    rate = negative_rate(6_000_000, 150_000, 2_000_000)
    assert rate == pytest.approx((2_000_000 - 150_000) / 5_850_000)
    assert negative_rate(3_000_000, 2_500_000, 2_000_000) == MIN_NEGATIVE_RATE
    assert negative_rate(10, 10, 5) == 1.0  # no negatives to sample


def test_lightgbm_fitted_on_a_negative_sample_predicts_the_full_rate(tmp_path) -> None:
    rng = np.random.default_rng(1)
    n = 60_000
    x0 = rng.normal(size=n).astype(np.float32)
    click = (rng.random(n) < 1 / (1 + np.exp(-(x0 - 4.0)))).astype(np.float32)
    X = FeatureMatrix(
        categorical=np.zeros((n, 0), np.int64),
        numeric=np.column_stack([x0, rng.normal(size=n)]).astype(np.float32),
        categorical_names=(),
        numeric_names=("x0", "noise"),
        cardinalities=(),
    )
    fit, valid = np.arange(n) < 40_000, np.arange(n) >= 40_000
    w = 0.1
    keep_t = fit & negative_sample(click, w, seed=0)
    keep_v = valid & negative_sample(click, w, seed=1)
    cfg = LightGBMConfig(num_leaves=7, min_data_in_leaf=50, num_boost_round=100)
    model = LightGBMCTR(cfg, 0, THREADS)
    model.fit(X.take(keep_t), click[keep_t], None, X.take(keep_v), click[keep_v], None, w)
    assert model.negative_rate_ == w
    pctr = model.predict_proba(X.take(valid))[:, 0]
    raw = model.ctr_booster_.predict(X.take(valid).numeric)
    rate = click[valid].mean()
    assert abs(pctr.mean() / rate - 1.0) < 0.15  # corrected: the full data's rate
    assert raw.mean() / rate > 3.0  # uncorrected: the sample's, several times higher
    model.save(tmp_path / "m")  # the rate travels with the model: a loaded one corrects too
    loaded = LightGBMCTR.load(tmp_path / "m", num_threads=THREADS)
    assert loaded.negative_rate_ == w
    np.testing.assert_array_equal(
        loaded.predict_proba(X.take(valid)), model.predict_proba(X.take(valid))
    )


def _chunks(X: FeatureMatrix, size: int) -> MatrixChunks:
    starts = list(range(0, len(X), size))
    sizes = [min(size, len(X) - s) for s in starts]
    return MatrixChunks(sizes, lambda i: X.take(np.arange(starts[i], starts[i] + sizes[i])))


def test_concat_of_slabs_is_the_matrix() -> None:
    X, _, _ = make_data(n=100)
    table = np.arange(30, dtype=np.float32).reshape(10, 3)
    keyed = KeyedVectors(np.arange(100) % 10, table, 3)
    X = FeatureMatrix(
        X.categorical, X.numeric, X.categorical_names, X.numeric_names, X.cardinalities,
        embeddings={**X.embeddings, "ad_text": keyed},
    )  # fmt: skip
    parts = list(_chunks(X, 32))
    assert [len(p) for p in parts] == [32, 32, 32, 4]
    back = FeatureMatrix.concat(parts)
    np.testing.assert_array_equal(back.categorical, X.categorical)
    np.testing.assert_array_equal(back.numeric, X.numeric)
    np.testing.assert_array_equal(back.embeddings["ad_text"].dense(), keyed.dense())
    np.testing.assert_array_equal(back.embeddings["user_interest"], X.embeddings["user_interest"])


def test_numeric_statistics_over_slabs_equal_one_pass() -> None:
    X, _, _ = make_data(n=500)
    whole = numeric_statistics(torch.from_numpy(X.numeric), log_transform=True)
    parts = numeric_statistics(
        (torch.from_numpy(p.numeric) for p in _chunks(X, 128)), log_transform=True
    )
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_neural_fit_from_one_slab_is_bit_identical_to_in_memory() -> None:
    X, click, conv = make_data(n=400)
    a = NeuralCTR(TINY, 3, THREADS).fit(X, click, conv, X, click, conv)
    b = NeuralCTR(TINY, 3, THREADS).fit(_chunks(X, 400), click, conv, _chunks(X, 400), click, conv)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(b.predict_proba(_chunks(X, 100)), b.predict_proba(X))


def test_neural_fit_from_slabs_is_seeded_and_learns() -> None:
    X, click, conv = make_data(n=2000)
    held, hc, hv = make_data(n=1000, seed=9)
    cfg = replace(TINY, epochs=4)
    fits = [
        NeuralCTR(cfg, 3, THREADS).fit(_chunks(X, 256), click, conv, held, hc, hv) for _ in range(2)
    ]
    p = [f.predict_proba(held) for f in fits]
    np.testing.assert_array_equal(p[0], p[1])
    memory = NeuralCTR(cfg, 3, THREADS).fit(X, click, conv, held, hc, hv).predict_proba(held)
    assert not np.array_equal(p[0], memory)  # the slab order and in-slab shuffles differ
    slab_auc, memory_auc = roc_auc_score(hc, p[0][:, 0]), roc_auc_score(hc, memory[:, 0])
    assert slab_auc > 0.7 and abs(slab_auc - memory_auc) < 0.03


def test_logreg_keeps_its_negative_rate_through_save_and_load(tmp_path) -> None:
    from models.logreg import LogRegConfig, LogRegCTR

    X, click, conv = make_data(n=600, embeddings=False)
    model = LogRegCTR(LogRegConfig(max_iter=50), 0, THREADS).fit(
        X, click, conv, X, click, conv, 0.5
    )
    p = model.predict_proba(X)
    raw = 1.0 / (
        1.0 + np.exp(-(model._design_block(X) @ model.ctr_["coef"] + model.ctr_["intercept"]))
    )
    np.testing.assert_allclose(p[:, 0], corrected(raw, 0.5))
    model.save(tmp_path / "m")
    loaded = LogRegCTR.load(tmp_path / "m", num_threads=THREADS)
    assert loaded.negative_rate_ == 0.5
    np.testing.assert_array_equal(loaded.predict_proba(X), p)
