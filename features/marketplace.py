"""The simulated ad marketplace (the embedded default dataset)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MarketConfig:
    n_ads: int = 3000
    n_users: int = 20000
    n_impressions: int = 500_000
