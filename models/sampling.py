"""Negative downsampling for models fitted in memory, and the correction of its predictions.

A model fitted on every positive and a uniform sample of the negatives at rate w sees the odds
of a click multiplied by 1 / w, so its probability p is recalibrated to the full data by
q = p / (p + (1 - p) / w) (He et al. 2014, "Practical lessons from predicting clicks on ads at
Facebook", section 6.3). w = 1 keeps every row and leaves p unchanged.
"""

from __future__ import annotations

import numpy as np

CORRECTION = "q = p / (p + (1 - p) / w)"


def check_rate(rate: float) -> float:
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"negative_rate must lie in (0, 1], got {rate}")
    return float(rate)


def negative_sample(click: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """Boolean mask: every positive, and each negative with probability `rate` (seeded)."""
    rate = check_rate(rate)
    positive = np.asarray(click) > 0
    if rate == 1.0:
        return np.ones(len(positive), dtype=bool)
    keep = np.random.default_rng(seed).random(len(positive)) < rate
    return positive | keep


def corrected(p: np.ndarray, rate: float) -> np.ndarray:
    """Probabilities of a model fitted at negative rate `rate`, recalibrated to the full data."""
    rate = check_rate(rate)
    if rate == 1.0:
        return p
    return p / (p + (1.0 - p) / rate)
