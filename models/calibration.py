"""Probability calibration fitted on the validation split."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CalibrationConfig:
    method: str = "isotonic"  # isotonic | platt
    min_positives_isotonic: int = 200
