"""Calibrators: isotonic / Platt fitted on valid, monotone, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.calibration import CalibrationConfig, Calibrator


def _miscalibrated(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.beta(1, 20, n)
    y = (rng.random(n) < true).astype(float)
    return np.clip(true * 2.5, 0, 1), y  # scores that overstate the rate 2.5x


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_brings_the_ratio_near_one(method: str) -> None:
    p, y = _miscalibrated()
    assert p.sum() / y.sum() > 2
    cal = Calibrator(method).fit(p, y)
    q = cal.transform(p)
    assert cal.method_ == method
    assert 0.95 < q.sum() / y.sum() < 1.05
    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= -1e-12)  # monotone in the score


def test_thin_data_falls_back_to_platt() -> None:
    p, y = _miscalibrated(n=2000)
    cal = Calibrator("isotonic", min_positives_isotonic=10_000).fit(p, y)
    assert cal.method_ == "platt"


def test_one_class_is_identity() -> None:
    p = np.array([0.1, 0.2, 0.3] * 10)
    cal = Calibrator().fit(p, np.zeros(30))
    assert cal.method_ == "identity"
    np.testing.assert_array_equal(cal.transform(p), p)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_json_round_trip_is_exact(method: str) -> None:
    p, y = _miscalibrated(n=5000)
    cal = Calibrator(method).fit(p, y)
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(back.transform(p), cal.transform(p))


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="isotonic or platt"):
        CalibrationConfig(method="beta")


def test_isotonic_is_strictly_increasing_and_keeps_the_ranking() -> None:
    """Centred isotonic: distinct scores stay distinct and in order (no ~80-value step map),
    so the calibrated AUC is the raw score's AUC; the ratio stays calibrated."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.3, 50_000)
    y = (rng.random(len(p)) < p / 2).astype(float)  # the scores overstate the rate 2x
    cal = Calibrator("isotonic").fit(p, y)
    q = cal.transform(np.sort(p))
    assert np.all(np.diff(q) > 0)
    assert roc_auc_score(y, cal.transform(p)) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert 0.97 < cal.transform(p).sum() / y.sum() < 1.03
    # beyond the first and last knot the map follows the score's odds from the edge knot
    tails = cal.transform(np.array([0.001, 0.005, 0.4, 0.6]))
    assert np.all(np.diff(tails) > 0)
    assert tails[0] < q[0] and tails[-2] > q[-1]


def test_block_centres_by_hand() -> None:
    from models.calibration import _block_centres

    x, y = _block_centres(np.array([0, 1, 2, 3, 4.0]), np.array([0.1, 0.1, 0.5, 0.5, 0.9]))
    assert x == [0.5, 2.5, 4.0]
    assert y == [0.1, 0.5, 0.9]


def test_a_step_map_saved_before_centring_still_loads_as_a_step_map() -> None:
    cal = Calibrator.from_dict({"method": "isotonic", "x": [0.1, 0.2, 0.3], "y": [0.2, 0.2, 0.4]})
    np.testing.assert_allclose(
        cal.transform(np.array([0.0, 0.15, 0.25, 0.5])), [0.2, 0.2, 0.3, 0.4]
    )


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibrated_probabilities_stay_inside_what_the_fit_rows_can_show(method: str) -> None:
    rng = np.random.default_rng(4)
    p = rng.random(3000) * 0.2
    y = (rng.random(3000) < p).astype(float)
    cal = Calibrator(method, min_positives_isotonic=50).fit(p, y)
    extreme = np.array([0.0, 1e-300, 1e-9, 0.5, 1 - 1e-12, 1.0])
    out = cal.transform(extreme)
    edge = 0.5 / (3000 + 1)
    assert out.min() >= edge and out.max() <= 1 - edge
    assert np.all(np.diff(out) >= 0)
    again = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(again.transform(extreme), out)


def test_one_class_data_is_bounded_too() -> None:
    cal = Calibrator().fit(np.array([0.0, 0.3, 1.0]), np.zeros(3))
    assert cal.method_ == "identity"
    np.testing.assert_allclose(cal.transform(np.array([0.0, 1.0])), [0.125, 0.875])
