"""LightGBM CTR / CVR baseline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LightGBMConfig:
    num_leaves: int = 63
    learning_rate: float = 0.05
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
