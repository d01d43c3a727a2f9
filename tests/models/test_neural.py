"""Estimator tests for the DCN-v2 x ESMM neural CTR/CVR model, on tiny data built here."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.dcn_esmm import esmm_loss, numeric_statistics
from models.matrix import FeatureMatrix, KeyedVectors
from models.neural import NeuralConfig, NeuralCTR

THREADS = 1  # tests share a small machine
TINY = NeuralConfig(
    embedding_dim=4,
    text_tower=(8,),
    cross_layers=2,
    mlp_sizes=(16,),
    head_sizes=(8,),
    batch_size=64,
    epochs=2,
    sparse_min_rows=20,  # the 40-row table takes SparseAdam, the others dense Adam
    precision="fp32",  # the same arithmetic on every CI machine (None: the CPU's own)
)


def make_data(
    n: int = 300, seed: int = 0, numeric: bool = True, embeddings: bool = True
) -> tuple[FeatureMatrix, np.ndarray, np.ndarray]:
    """A learnable toy: clicks depend on a category, a numeric column and a user-ad dot product."""
    rng = np.random.default_rng(seed)
    cards = (12, 40, 4)
    cat = np.column_stack([rng.integers(0, c, n) for c in cards]).astype(np.int64)
    num = rng.normal(size=(n, 3)).astype(np.float32)
    num[:, 2] = rng.exponential(50.0, n)  # a skewed count
    num[rng.random((n, 3)) < 0.1] = np.nan
    ad, user = (
        rng.normal(size=(n, 6)).astype(np.float32),
        rng.normal(size=(n, 6)).astype(np.float32),
    )
    logit = 1.5 * (cat[:, 0] % 2) - 0.5 + np.nan_to_num(num[:, 0]) + 0.5 * (ad * user).sum(1)
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    conversion = click * (rng.random(n) < np.where(cat[:, 2] == 1, 0.6, 0.1))
    X = FeatureMatrix(
        categorical=cat,
        numeric=num if numeric else np.zeros((n, 0), np.float32),
        categorical_names=("ad_id", "user_id", "placement"),
        numeric_names=("x0", "x1", "count") if numeric else (),
        cardinalities=cards,
        embeddings={"ad_text": ad, "user_interest": user} if embeddings else {},
    )
    return X, click, conversion.astype(np.int64)


@pytest.fixture(scope="module")
def data() -> tuple[FeatureMatrix, np.ndarray, np.ndarray]:
    return make_data()


@pytest.fixture(scope="module")
def fitted(data) -> NeuralCTR:
    X, click, conv = data
    return NeuralCTR(TINY, random_state=3, num_threads=THREADS).fit(X, click, conv)


def test_fit_returns_self_and_probabilities_are_consistent(data):
    X, click, conv = data
    est = NeuralCTR(TINY, random_state=3, num_threads=THREADS)
    assert est.fit(X, click, conv) is est
    p = est.predict_proba(X)
    assert p.shape == (len(X), 3)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    np.testing.assert_array_equal(p[:, 2], p[:, 0] * p[:, 1])
    assert len(est.history_) == TINY.epochs and est.best_epoch_ == TINY.epochs
    assert [t.sparse for t in est.module_.ids.tables] == [False, True, False]


def test_same_seed_same_predictions_other_seed_differs(data, fitted):
    X, click, conv = data
    again = NeuralCTR(TINY, random_state=3, num_threads=THREADS).fit(X, click, conv)
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    other = NeuralCTR(TINY, random_state=4, num_threads=THREADS).fit(X, click, conv)
    assert not np.allclose(other.predict_proba(X), fitted.predict_proba(X))


def test_overfits_one_small_batch():
    X, _, _ = make_data(n=128, seed=1)
    click = (X.categorical[:, 1] % 2).astype(np.int64)  # a pure id effect: memorise it
    conv = click * (X.categorical[:, 1] % 4 == 1)
    cfg = replace(TINY, batch_size=128, epochs=150, lr=1e-2, dropout=0.0, weight_decay=0.0)
    est = NeuralCTR(cfg, random_state=0, num_threads=THREADS).fit(X, click, conv)
    losses = [row["train_loss"] for row in est.history_]
    assert losses[-1] < 0.1 * losses[0]
    p = est.predict_proba(X)
    assert roc_auc_score(click, p[:, 0]) > 0.99
    assert roc_auc_score(conv, p[:, 2]) > 0.99


def test_esmm_loss_matches_the_formula_over_every_row():
    ctr_logit = torch.tensor([0.3, -1.0, 2.0, -0.2])
    cvr_logit = torch.tensor([-0.5, 0.7, -2.0, 1.1])
    click = torch.tensor([1.0, 0.0, 1.0, 0.0])
    conv = torch.tensor([1.0, 0.0, 0.0, 0.0])
    total, ctr_bce, ctcvr_bce = esmm_loss(ctr_logit, cvr_logit, click, conv)
    pctr, pcvr = torch.sigmoid(ctr_logit).double(), torch.sigmoid(cvr_logit).double()
    pctcvr = pctr * pcvr
    want_ctr = -(click * pctr.log() + (1 - click) * (1 - pctr).log()).mean()
    want_ctcvr = -(conv * pctcvr.log() + (1 - conv) * (1 - pctcvr).log()).mean()
    assert float(ctr_bce) == pytest.approx(float(want_ctr), rel=1e-5)
    assert float(ctcvr_bce) == pytest.approx(float(want_ctcvr), rel=1e-5)  # mean over all 4 rows
    assert float(total) == pytest.approx(float(want_ctr + want_ctcvr), rel=1e-5)


def test_cvr_learns_from_unclicked_rows_when_no_conversions():
    """Clicks but no conversions: every row, clicked or not, pushes pCVR (whole space)."""
    ctr_logit = torch.tensor([0.5, -0.5, 1.0, 0.0])
    cvr_logit = torch.zeros(4, requires_grad=True)
    click = torch.tensor([1.0, 0.0, 0.0, 1.0])
    _, _, ctcvr_bce = esmm_loss(ctr_logit, cvr_logit, click, torch.zeros(4))
    assert float(ctcvr_bce.detach()) > 0
    (grad,) = torch.autograd.grad(ctcvr_bce, cvr_logit)
    assert (grad > 0).all()  # a selection-biased CVR loss would leave rows 1 and 2 at zero


def test_a_row_without_click_or_conversion_is_in_the_ctcvr_loss():
    ctr_logit, cvr_logit = torch.tensor([1.0]), torch.tensor([2.0])
    _, _, ctcvr_bce = esmm_loss(ctr_logit, cvr_logit, torch.zeros(1), torch.zeros(1))
    pctcvr = torch.sigmoid(ctr_logit) * torch.sigmoid(cvr_logit)
    assert float(ctcvr_bce) == pytest.approx(-math.log(1 - float(pctcvr)), rel=1e-5)


def test_conversions_pull_pcvr_up_through_pctcvr():
    """Conversions (always with clicks): the conversion term raises pCVR and pCTR together."""
    ctr_logit = torch.zeros(3, requires_grad=True)
    cvr_logit = torch.zeros(3, requires_grad=True)
    ones = torch.ones(3)
    _, _, ctcvr_bce = esmm_loss(ctr_logit, cvr_logit, ones, ones)
    g_ctr, g_cvr = torch.autograd.grad(ctcvr_bce, [ctr_logit, cvr_logit])
    assert (g_ctr < 0).all() and (g_cvr < 0).all()


def test_esmm_loss_is_finite_for_extreme_logits():
    logits = torch.tensor([-60.0, -20.0, 0.0, 20.0, 60.0], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    total, _, _ = esmm_loss(logits, logits, labels, labels * 0)
    (grad,) = torch.autograd.grad(total, logits)
    assert torch.isfinite(total) and torch.isfinite(grad).all()


def test_fits_with_clicks_but_no_conversions(data):
    X, click, _ = data
    est = NeuralCTR(TINY, random_state=0, num_threads=THREADS).fit(X, click, np.zeros_like(click))
    p = est.predict_proba(X)
    assert p[:, 1].mean() < 0.05  # pCVR learned (downwards) from the whole space


def test_conversion_without_click_is_rejected(data):
    X, click, conv = data
    bad = conv.copy()
    bad[np.flatnonzero(click == 0)[0]] = 1
    with pytest.raises(ValueError, match="without a click"):
        NeuralCTR(TINY, num_threads=THREADS).fit(X, click, bad)


def test_save_load_gives_identical_predictions(tmp_path, data, fitted):
    X, _, _ = data
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["cardinalities"] == [12, 40, 4] and meta["config"]["embedding_dim"] == 4
    loaded = NeuralCTR.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    assert loaded.config_ == fitted.config_ and loaded.history_ == fitted.history_
    assert loaded.config_.dropout is not None  # saved resolved: no size rule at load time


def test_num_threads_survives_save_and_load(tmp_path, data, fitted):
    X, _, _ = data
    assert fitted.num_threads == THREADS and fitted.get_params()["num_threads"] == THREADS
    fitted.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["num_threads"] == THREADS
    assert NeuralCTR.load(tmp_path / "m").num_threads == THREADS
    other = NeuralCTR.load(tmp_path / "m", num_threads=2)
    assert other.num_threads == 2
    np.testing.assert_array_equal(other.predict_proba(X), fitted.predict_proba(X))
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:  # prediction runs under the estimator's thread count, and restores torch's
        seen = []
        real = torch.set_num_threads
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
            other.predict_proba(X)
        assert seen == [2, 3] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_models_saved_with_threads_in_their_config_still_load(tmp_path, data, fitted):
    X, _, _ = data
    fitted.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["config"]["num_threads"] = meta.pop("num_threads")  # the format before [engine]
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    loaded = NeuralCTR.load(tmp_path / "m")
    assert loaded.num_threads == THREADS and loaded.config_ == fitted.config_
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))


@pytest.mark.parametrize(("numeric", "embeddings"), [(False, True), (True, False), (False, False)])
def test_works_without_numeric_or_embeddings(numeric, embeddings, tmp_path):
    X, click, conv = make_data(n=200, numeric=numeric, embeddings=embeddings)
    est = NeuralCTR(TINY, num_threads=THREADS).fit(X, click, conv)
    p = est.predict_proba(X)
    assert p.shape == (200, 3) and (p >= 0).all() and (p <= 1).all()
    np.testing.assert_array_equal(NeuralCTR.load(est.save(tmp_path)).predict_proba(X), p)


def test_unseen_codes_map_to_zero(data, fitted):
    X, _, _ = data
    rows = X.take(np.arange(5))
    zero, huge, neg = (rows.categorical.copy() for _ in range(3))
    zero[:, 1], huge[:, 1], neg[:, 1] = 0, 10_000, -3
    preds = [fitted.predict_proba(replace(rows, categorical=codes)) for codes in (zero, huge, neg)]
    np.testing.assert_array_equal(preds[0], preds[1])
    np.testing.assert_array_equal(preds[0], preds[2])


def test_early_stopping_keeps_the_best_valid_epoch():
    X, click, conv = make_data(n=400, seed=2)
    Xv, cv, vv = make_data(n=200, seed=5)
    cfg = replace(TINY, epochs=6, patience=1, lr=5e-2)
    est = NeuralCTR(cfg, random_state=1, num_threads=THREADS).fit(X, click, conv, Xv, cv, vv)
    aucs = [row["valid_ctr_auc"] for row in est.history_]
    assert est.best_epoch_ == int(np.argmax(aucs)) + 1
    assert {"valid_loss", "valid_ctcvr_auc", "train_loss", "samples_per_s"} <= set(est.history_[0])
    p = est.predict_proba(Xv)
    assert roc_auc_score(cv, p[:, 0]) == pytest.approx(max(aucs), abs=1e-6)


def test_rejects_other_columns_and_bad_config(data, fitted):
    X, _, _ = data
    with pytest.raises(ValueError, match="numeric columns"):
        fitted.predict_proba(replace(X, numeric=X.numeric[:, :2], numeric_names=("x0", "x1")))
    with pytest.raises(ValueError, match="dropout"):
        NeuralConfig(dropout=1.5)


def test_numeric_statistics_skip_missing_values_and_guard_constant_columns():
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.nan]], np.float32)
    mean, std, missing = numeric_statistics(torch.from_numpy(x), log_transform=False, chunk=2)
    np.testing.assert_allclose(mean.numpy(), [2.0, 5.0, 0.0])
    np.testing.assert_allclose(std.numpy(), [1.0, 1.0, 1.0])  # constant / empty columns -> 1
    assert missing.tolist() == [True, False, True]
    logged, _, _ = numeric_statistics(torch.from_numpy(x), log_transform=True)
    assert float(logged[0]) == pytest.approx((math.log(2.0) + math.log(4.0)) / 2, rel=1e-6)


def make_history_data(n: int = 400, seed: int = 0) -> tuple[FeatureMatrix, np.ndarray]:
    """Clicks follow whether the user's recent items resemble the impressed ad."""
    X, _, _ = make_data(n, seed)
    rng = np.random.default_rng(seed)
    table = np.vstack([np.zeros((1, 4)), rng.normal(size=(20, 4))]).astype(np.float32)
    target = rng.integers(1, 21, n)
    history = rng.integers(0, 21, (n, 5))
    match = (table[history] @ table[target][:, :, None]).squeeze(-1).max(1)
    click = (rng.random(n) < 1 / (1 + np.exp(-2 * match + 1))).astype(np.int64)
    items = {"s_ad_item": target[:, None], "s_history": history}
    return replace(X, items=items, item_vectors=table), click


def test_attention_round_trips_and_the_switch_turns_it_off(tmp_path):
    X, click = make_history_data()
    conv = np.zeros_like(click)
    on = NeuralCTR(TINY, random_state=1, num_threads=THREADS).fit(X, click, conv)
    assert on.module_.attention is not None
    loaded = NeuralCTR.load(on.save(tmp_path / "on"))
    scoring = replace(X, item_vectors=None)  # scoring needs only the codes: the net has the table
    np.testing.assert_array_equal(loaded.predict_proba(scoring), on.predict_proba(X))
    other = replace(X, items={**X.items, "s_history": np.zeros_like(X.items["s_history"])})
    assert not np.allclose(on.predict_proba(other), on.predict_proba(X))  # history matters
    off = NeuralCTR(replace(TINY, attention=False), random_state=1, num_threads=THREADS)
    off.fit(X, click, conv)
    assert off.module_.attention is None
    np.testing.assert_array_equal(off.predict_proba(other), off.predict_proba(X))
    plain, _, _ = make_data()  # no item features: the same net as with the switch off
    np.testing.assert_array_equal(
        NeuralCTR(TINY, random_state=1, num_threads=THREADS)
        .fit(plain, click[:300], conv[:300])
        .predict_proba(plain),
        NeuralCTR(replace(TINY, attention=False), random_state=1, num_threads=THREADS)
        .fit(replace(plain, items=X.take(np.arange(300)).items), click[:300], conv[:300])
        .predict_proba(plain),
    )
    with pytest.raises(ValueError, match="item table"):
        NeuralCTR(TINY, num_threads=THREADS).fit(replace(X, item_vectors=None), click, conv)
    with pytest.raises(ValueError, match="attention_dim"):
        NeuralConfig(attention_dim=0)


def keyed(X: FeatureMatrix, name: str = "ad_text") -> FeatureMatrix:
    """X with embedding `name` stored once per distinct vector: codes into a table."""
    rows = X.embeddings[name]
    distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
    table = np.vstack([np.zeros((1, rows.shape[1]), np.float32), distinct])
    codes = KeyedVectors(inverse.reshape(-1) + 1, table, rows.shape[1])
    return replace(X, embeddings={**X.embeddings, name: codes})


def test_keyed_embedding_trains_and_predicts_as_its_rows(tmp_path, data):
    """A keyed embedding is gathered batch by batch: the same fit as its (N, D) rows, bit for
    bit; the saved model scores codes alone (its own copy of the table)."""
    X, click, conv = data
    dense = NeuralCTR(TINY, random_state=3, num_threads=THREADS).fit(X, click, conv)
    model = NeuralCTR(TINY, random_state=3, num_threads=THREADS).fit(keyed(X), click, conv)
    np.testing.assert_array_equal(model.predict_proba(keyed(X)), dense.predict_proba(X))
    model.save(tmp_path)
    loaded = NeuralCTR.load(tmp_path)
    codes_only = keyed(X)
    codes_only.embeddings["ad_text"] = codes_only.embeddings["ad_text"].with_table(None)
    np.testing.assert_array_equal(loaded.predict_proba(codes_only), dense.predict_proba(X))
    with pytest.raises(ValueError, match="without its table"):
        NeuralCTR(TINY, num_threads=THREADS).fit(codes_only, click, conv)


def test_bf16_steps_repeat_under_a_seed_and_save_their_setting(tmp_path, data):
    """precision = "bf16": the step's forward and backward under bf16 autocast; the same seed
    gives the same weights, the probabilities stay float, and the setting is saved."""
    X, click, conversion = data
    config = replace(TINY, precision="bf16")
    first = NeuralCTR(config, random_state=3, num_threads=THREADS).fit(X, click, conversion)
    again = NeuralCTR(config, random_state=3, num_threads=THREADS).fit(X, click, conversion)
    p = first.predict_proba(X)
    assert p.dtype == np.float64 and np.isfinite(p).all()
    np.testing.assert_array_equal(p, again.predict_proba(X))
    fp32 = NeuralCTR(TINY, random_state=3, num_threads=THREADS).fit(X, click, conversion)
    assert not np.array_equal(p, fp32.predict_proba(X))  # the arithmetic did change
    loaded = NeuralCTR.load(first.save(tmp_path / "bf16"))
    assert loaded.config_.precision == "bf16"
    np.testing.assert_array_equal(loaded.predict_proba(X), p)
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        NeuralConfig(precision="fp16")


def test_precision_left_unset_is_this_cpus_native_one(tmp_path, data, monkeypatch):
    """precision None: bf16 where the CPU has native bf16, else fp32, decided at fit, recorded
    as derived and saved; the fit is the one with that precision set."""
    from features.text import bf16_native
    from models.cpu import native_precision

    assert native_precision() == ("bf16" if bf16_native() else "fp32")  # the encoder's check
    X, click, conversion = data
    for native in (True, False):
        chosen = "bf16" if native else "fp32"
        monkeypatch.setattr("models.neural.native_precision", lambda chosen=chosen: chosen)
        unset = replace(TINY, precision=None)
        model = NeuralCTR(unset, random_state=3, num_threads=THREADS).fit(X, click, conversion)
        assert model.config_.precision == model.derived_["precision"] == chosen
        explicit = replace(TINY, precision=chosen)
        same = NeuralCTR(explicit, random_state=3, num_threads=THREADS).fit(X, click, conversion)
        assert "precision" not in same.derived_
        np.testing.assert_array_equal(model.predict_proba(X), same.predict_proba(X))
        loaded = NeuralCTR.load(model.save(tmp_path / chosen))
        assert loaded.config_.precision == chosen


def test_a_batch_split_over_threads_is_the_whole_batch_step(data, monkeypatch):
    """num_threads=2: each batch's two halves run forward and backward at once in two threads
    (one intra-op thread each), their gradients summed; the dropout masks are drawn for the
    whole batch first. So the fit is the one-thread fit up to float rounding, and a seed
    repeats it bit for bit."""
    X, click, conv = data
    import models.neural_loop as loop

    calls = []
    step = loop._parts_gradients
    monkeypatch.setattr(loop, "_parts_gradients", lambda *a: calls.append(a[-1]) or step(*a))
    config = replace(TINY, dropout=0.3)
    one = NeuralCTR(config, random_state=5, num_threads=1).fit(X, click, conv)
    assert calls == []
    two = NeuralCTR(config, random_state=5, num_threads=2).fit(X, click, conv)
    assert calls and set(calls) == {2}
    again = NeuralCTR(config, random_state=5, num_threads=2).fit(X, click, conv)
    np.testing.assert_array_equal(two.predict_proba(X), again.predict_proba(X))
    np.testing.assert_allclose(two.predict_proba(X), one.predict_proba(X), atol=1e-4)
