"""Metrics against scikit-learn and hand-computed values, including the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from models.metrics import (
    binary_metrics,
    expected_calibration_error,
    group_auc,
    lift_curve,
    reliability_curve,
)

Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_logloss_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 1, 300), 2)  # rounding plants ties
    y = (rng.uniform(0, 1, 300) < p).astype(int)
    m = binary_metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["logloss"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), abs=1e-12)
    assert m["n"] == 300
    assert m["positives"] == y.sum()


def test_hand_computed_values() -> None:
    m = binary_metrics(Y, P, n_bins=2)
    assert m["auc"] == pytest.approx(0.75)
    expected_ll = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert m["logloss"] == pytest.approx(expected_ll)
    assert m["ne"] == pytest.approx(expected_ll / math.log(2))
    assert m["calibration"] == pytest.approx(1.65 / 2)
    # bin [0, .5): p .1 .4 .35 vs y 0 0 1 -> |.85/3 - 1/3| = .05; bin [.5, 1]: |.8 - 1| = .2
    assert m["ece"] == pytest.approx(0.75 * 0.05 + 0.25 * 0.2)
    assert "gauc" not in m


def test_ne_of_base_rate_prediction_is_one() -> None:
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    m = binary_metrics(y, np.full(8, 0.25))
    assert m["ne"] == pytest.approx(1.0)
    assert m["calibration"] == pytest.approx(1.0)
    assert m["ece"] == pytest.approx(0.0)


def test_gauc_hand_computed() -> None:
    y = np.array([1, 0, 1, 0, 1, 1, 1, 0, 1])
    p = np.array([0.9, 0.3, 0.2, 0.6, 0.7, 0.5, 0.5, 0.4, 0.4])
    g = np.array(["a", "a", "a", "b", "b", "c", "c", "d", "d"])
    # a: pairs (.9>.3)=1, (.2<.3)=0 -> .5, weight 3; b: 1.0, weight 2; c: one class, skipped;
    # d: tie -> .5, weight 2
    expected = (0.5 * 3 + 1.0 * 2 + 0.5 * 2) / 7
    assert group_auc(y, p, g) == pytest.approx(expected)
    assert binary_metrics(y, p, groups=g)["gauc"] == pytest.approx(expected)


def test_gauc_matches_per_group_sklearn() -> None:
    rng = np.random.default_rng(5)
    g = rng.integers(0, 40, 1000)
    p = np.round(rng.uniform(0, 1, 1000), 1)
    y = (rng.uniform(0, 1, 1000) < p).astype(int)
    aucs, weights = [], []
    for k in np.unique(g):
        sel = g == k
        if 0 < y[sel].sum() < sel.sum():
            aucs.append(roc_auc_score(y[sel], p[sel]))
            weights.append(sel.sum())
    assert group_auc(y, p, g) == pytest.approx(np.average(aucs, weights=weights), abs=1e-12)


def test_empty_input_is_all_missing() -> None:
    m = binary_metrics([], [], groups=[])
    assert m["n"] == 0 and m["positives"] == 0
    for key in ("auc", "logloss", "ne", "calibration", "ece", "gauc"):
        assert math.isnan(m[key]), key


def test_one_class_only() -> None:
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], groups=[1, 1, 2])
    assert math.isnan(m["auc"])
    assert math.isnan(m["gauc"])
    assert math.isnan(m["ne"])  # base-rate entropy is zero
    assert math.isnan(m["calibration"])  # zero positives
    assert m["logloss"] == pytest.approx(log_loss([0, 0, 0], [0.1, 0.2, 0.3], labels=[0, 1]))
    ones = binary_metrics([1, 1], [0.5, 0.5])
    assert math.isnan(ones["auc"])
    assert ones["calibration"] == pytest.approx(0.5)


def test_all_equal_predictions_give_auc_half() -> None:
    m = binary_metrics([0, 1, 0, 1, 1], np.full(5, 0.3))
    assert m["auc"] == pytest.approx(0.5)


def test_extreme_predictions_are_clipped_for_logloss() -> None:
    m = binary_metrics([1, 0], [0.0, 1.0])
    assert m["logloss"] == pytest.approx(-math.log(1e-7))
    assert math.isfinite(m["ne"])


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="predictions"):
        binary_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.1, float("nan")])


def test_reliability_curve_bins() -> None:
    mean_pred, frac_pos, counts = reliability_curve(Y, P, n_bins=4)
    np.testing.assert_array_equal(counts, [1, 2, 0, 1])
    np.testing.assert_allclose(mean_pred[[0, 1, 3]], [0.1, 0.375, 0.8])
    np.testing.assert_allclose(frac_pos[[0, 1, 3]], [0.0, 0.5, 1.0])
    assert math.isnan(mean_pred[2]) and math.isnan(frac_pos[2])
    # p == 1.0 lands in the last bin, not past it
    _, _, c = reliability_curve([1], [1.0], n_bins=4)
    np.testing.assert_array_equal(c, [0, 0, 0, 1])
    assert math.isnan(expected_calibration_error([], []))


def test_reliability_curve_quantile_bins() -> None:
    p = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    y = np.array([0, 0, 0, 1, 0, 1])
    mean_pred, frac_pos, counts = reliability_curve(y, p, n_bins=3, strategy="quantile")
    np.testing.assert_array_equal(counts, [2, 2, 2])
    np.testing.assert_allclose(mean_pred, [0.015, 0.035, 0.055])
    np.testing.assert_allclose(frac_pos, [0.0, 0.5, 0.5])
    _, _, one = reliability_curve([0, 1], [0.2, 0.2], n_bins=5, strategy="quantile")
    np.testing.assert_array_equal(one, [2])
    with pytest.raises(ValueError, match="strategy"):
        reliability_curve(y, p, strategy="nope")


def test_lift_curve() -> None:
    frac, gain = lift_curve([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    np.testing.assert_allclose(frac, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(gain, [0, 0.5, 1.0, 1.0, 1.0])
    _, none = lift_curve([0, 0], [0.1, 0.2])
    assert np.isnan(none).all()
