"""Reference logistic regression: the estimator contract, determinism, save / load without
pickle, click-only data, hashed ids, missing numerics and embeddings."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse
from sklearn.metrics import roc_auc_score

from models.logreg import LogRegConfig, LogRegCTR, hash_codes
from models.matrix import FeatureMatrix, KeyedVectors

CFG = LogRegConfig(hash_bits=10, max_iter=300)


def _data(n: int, seed: int) -> tuple[FeatureMatrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 6, size=(n, 2))
    num = rng.normal(size=(n, 3)).astype(np.float32)
    emb = rng.normal(size=(n, 4)).astype(np.float32)
    logit = -2.0 + 1.5 * num[:, 0] + 1.2 * (cat[:, 0] == 3) + 1.0 * emb[:, 2]
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    conv = (click * (rng.random(n) < 1 / (1 + np.exp(-(2 * num[:, 1] - 0.5))))).astype(np.float32)
    num[rng.random(n) < 0.1, 2] = np.nan  # a column with gaps: gets a missing flag
    x = FeatureMatrix(
        cat, num, ("c_a", "c_b"), ("n_x", "n_y", "n_z"), (6, 6), embeddings={"e_text": emb}
    )
    return x, click, conv


@pytest.fixture(scope="module")
def fitted() -> tuple[LogRegCTR, FeatureMatrix]:
    x, c, v = _data(3000, 0)
    xv, cv, vv = _data(1000, 1)
    return LogRegCTR(CFG, random_state=3, num_threads=1).fit(x, c, v, xv, cv, vv), xv


def test_fit_returns_self_and_probabilities_are_in_range(fitted) -> None:
    model, xv = fitted
    p = model.predict_proba(xv)
    assert isinstance(model, LogRegCTR)
    assert p.shape == (len(xv), 3)
    assert np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(p[:, 2], p[:, 0] * p[:, 1])
    assert model.missing_index_ == [2]
    assert model.embedding_names_ == ["e_text"]


def test_learns_the_planted_signal(fitted) -> None:
    model, xv = fitted
    _, cv, vv = _data(1000, 1)
    p = model.predict_proba(xv)
    assert roc_auc_score(cv, p[:, 0]) > 0.75
    clicked = cv == 1
    assert roc_auc_score(vv[clicked], p[clicked, 1]) > 0.7


def test_each_input_block_carries_signal() -> None:
    """Ids alone (one-hot hashed), embeddings alone: each learns its planted effect."""
    x, c, v = _data(3000, 0)
    xv, cv, _ = _data(1000, 1)
    no_text = LogRegCTR(LogRegConfig(hash_bits=10, text=False)).fit(x, c, v, xv, cv, None)
    with_text = LogRegCTR(CFG).fit(x, c, v, xv, cv, None)
    auc_no = roc_auc_score(cv, no_text.predict_proba(xv)[:, 0])
    auc_with = roc_auc_score(cv, with_text.predict_proba(xv)[:, 0])
    assert no_text.embedding_names_ == []
    assert auc_with > auc_no + 0.02


def test_same_seed_gives_identical_predictions(fitted) -> None:
    model, xv = fitted
    x, c, v = _data(3000, 0)
    _, cv, vv = _data(1000, 1)
    again = LogRegCTR(CFG, random_state=3, num_threads=1).fit(x, c, v, xv, cv, vv)
    np.testing.assert_array_equal(model.predict_proba(xv), again.predict_proba(xv))


def test_subsample_is_seeded_and_logged(caplog) -> None:
    caplog.set_level(logging.INFO, logger="models.logreg")
    x, c, v = _data(3000, 0)
    xv, cv, vv = _data(1000, 1)
    cfg = LogRegConfig(hash_bits=10, max_train_rows=1000)
    a = LogRegCTR(cfg, random_state=1).fit(x, c, v, xv, cv, vv).predict_proba(xv)
    b = LogRegCTR(cfg, random_state=1).fit(x, c, v, xv, cv, vv).predict_proba(xv)
    other = LogRegCTR(cfg, random_state=2).fit(x, c, v, xv, cv, vv).predict_proba(xv)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 0], other[:, 0])
    assert "subsample of 1000 of 3000" in caplog.text


def test_save_load_round_trip_without_pickle(fitted, tmp_path: Path) -> None:
    model, xv = fitted
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logreg.json", "weights.npz"]
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as w:  # plain arrays only
        assert all(w[k].dtype == np.float64 for k in w.files)
    loaded = LogRegCTR.load(tmp_path, num_threads=2)
    assert loaded.num_threads == 2
    np.testing.assert_array_equal(loaded.predict_proba(xv), model.predict_proba(xv))


def test_click_only_data_leaves_pcvr_nan(tmp_path: Path) -> None:
    x, c, _ = _data(2000, 0)
    xv, cv, _ = _data(500, 1)
    model = LogRegCTR(CFG).fit(x, c, None, xv, cv, None)
    p = model.predict_proba(xv)
    assert model.cvr_ is None
    assert np.isfinite(p[:, 0]).all() and np.isnan(p[:, 1]).all() and np.isnan(p[:, 2]).all()
    model.save(tmp_path)
    np.testing.assert_array_equal(LogRegCTR.load(tmp_path).predict_proba(xv), p)


def test_prediction_does_not_depend_on_chunking(fitted, monkeypatch) -> None:
    model, xv = fitted
    whole = model.predict_proba(xv)
    monkeypatch.setattr("models.logreg.DESIGN_CHUNK", 97)
    np.testing.assert_allclose(model.predict_proba(xv), whole, rtol=1e-12)


def test_design_blocks_equal_the_matrix_built_in_one_piece(fitted, monkeypatch) -> None:
    """The stacked blocks hold exactly the values of [dense | hashed one-hot] built by COO."""
    model, xv = fitted
    num = xv.numeric.astype(np.float64)
    z = np.nan_to_num((num - model.mean_) / model.scale_, nan=0.0)
    flags = np.isnan(num[:, model.missing_index_]).astype(np.float64)
    embs = [xv.embeddings[k].astype(np.float64) for k in model.embedding_names_]
    bits = model._cfg().hash_bits
    cols = hash_codes(xv.categorical, bits)
    rows = np.repeat(np.arange(len(xv)), cols.shape[1])
    onehot = sparse.coo_matrix((np.ones(cols.size), (rows, cols.ravel())), (len(xv), 1 << bits))
    expected = sparse.hstack([sparse.csr_matrix(np.hstack([z, flags, *embs])), onehot]).toarray()
    monkeypatch.setattr("models.logreg.DESIGN_CHUNK", 97)  # several blocks
    design = model._design(xv)
    assert design.shape == expected.shape and design.has_sorted_indices
    np.testing.assert_array_equal(design.toarray(), expected)


def test_hash_codes_are_deterministic_in_range_and_field_aware() -> None:
    codes = np.array([[0, 0], [5, 5], [123456, 7]])
    h = hash_codes(codes, 12)
    np.testing.assert_array_equal(h, hash_codes(codes.copy(), 12))
    assert h.min() >= 0 and h.max() < 2**12
    assert h[1, 0] != h[1, 1]  # the same code in two fields lands in different columns
    spread = hash_codes(np.arange(5000).reshape(-1, 1), 16)
    assert len(np.unique(spread)) > 4800


@pytest.mark.parametrize(
    "bad",
    [{"C": 0.0}, {"max_iter": 0}, {"hash_bits": 0}, {"hash_bits": 40}, {"max_train_rows": -1}],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        LogRegConfig(**bad)


def test_keyed_embedding_fits_and_scores_as_its_rows(tmp_path: Path) -> None:
    """An embedding as codes into a table gives the fit of its rows, bit for bit; the saved
    model scores codes alone."""
    x, c, v = _data(3000, 0)
    xv, cv, vv = _data(1000, 1)
    zero = np.zeros((1, 4), np.float32)
    table = np.vstack([zero, x.embeddings["e_text"], xv.embeddings["e_text"]])

    def keyed(m: FeatureMatrix, first: int, with_table: bool) -> FeatureMatrix:
        codes = np.arange(first, first + len(m))
        return replace(
            m, embeddings={"e_text": KeyedVectors(codes, table if with_table else None, 4)}
        )

    dense = LogRegCTR(CFG, random_state=3).fit(x, c, v, xv, cv, vv)
    model = LogRegCTR(CFG, random_state=3).fit(keyed(x, 1, True), c, v, xv, cv, vv)
    np.testing.assert_array_equal(model.ctr_["coef"], dense.ctr_["coef"])
    model.save(tmp_path)
    loaded = LogRegCTR.load(tmp_path)
    scored = loaded.predict_proba(keyed(xv, 1 + len(x), False))  # its own copy of the table
    np.testing.assert_array_equal(scored, dense.predict_proba(xv))
