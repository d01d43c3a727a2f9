"""Time-based train / valid / test split and the cold-start flag."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SplitConfig:
    """Day boundaries are counted from the first impression day (0-based, end exclusive)."""

    train_days: int = 18
    valid_days: int = 5
    test_days: int = 5
    random_seed: int = 7  # for datasets without timestamps: seeded random split
    valid_fraction: float = 0.1
    test_fraction: float = 0.2
