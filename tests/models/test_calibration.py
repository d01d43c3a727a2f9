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
    p = np.array([0.1, 0.2, 0.3])
    cal = Calibrator().fit(p, np.zeros(3))
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
