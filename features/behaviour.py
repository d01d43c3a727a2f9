"""Point-in-time behaviour and context features (pure polars)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureConfig:
    text: bool = True  # the text ablation switch
    windows_days: tuple[int, ...] = (1, 7, 28)
    prior_strength: float = 20.0
