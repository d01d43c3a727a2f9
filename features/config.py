"""The `[features]` settings and the behaviour keys they choose from (no logic beyond checks).

`features.behaviour`, `features.events` and `features.text_features` read their settings from
`FeatureConfig`; it lives here, apart from all of them, so that none imports another for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    """A behaviour key: the columns that form it and which features it gets."""

    cols: tuple[str, ...]
    rates: bool = True  # counts + smoothed CTR / CVR over every window
    recency: bool = False  # seconds since the last display / click


KEYS: dict[str, Key] = {
    "user": Key(("user_id",)),
    "ad": Key(("ad_id",)),
    "advertiser": Key(("advertiser_id",)),
    "campaign": Key(("campaign_id",)),
    "category": Key(("category",)),
    "placement": Key(("placement",)),
    "user_category": Key(("user_id", "category"), recency=True),
    "user_ad": Key(("user_id", "ad_id"), rates=False, recency=True),
}


@dataclass(frozen=True)
class FeatureConfig:
    """Which feature families to build and their settings."""

    text: bool = True  # the text ablation switch
    # the query-understanding ablation switch: intent, brand, price-cap and entity features from
    # the `understand` stage's labels (when it ran)
    query_understanding: bool = True
    windows_days: tuple[int, ...] = (1, 7, 28)
    prior_strength: float = 20.0  # pseudo-impressions of the Bayesian prior
    behaviour_keys: tuple[str, ...] = tuple(KEYS)
    click_window_hours: float = 1.0  # a click is matched to a logged click event within this
    conversion_window_hours: float = 24.0  # a conversion to a logged purchase within this
    interest_half_life_days: float = 7.0
    interest_dim: int = 64  # PCA width of the user interest vector
    lgbm_text_dim: int = 16  # PCA width of the ad embedding for LightGBM
    recent_clicks: int = 5
    # the user's last k viewed / clicked items (codes) for the neural model's target attention;
    # 0: no history columns
    history_length: int = 10
    # more impressions quarantined than this share stops the stage: the rest is unlikely to be
    # a sample of the log the user meant
    max_quarantine_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.max_quarantine_fraction <= 1:
            raise ValueError("max_quarantine_fraction must lie in [0, 1]")
        unknown = set(self.behaviour_keys) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown behaviour_keys {sorted(unknown)} (known: {list(KEYS)})")
        for name in ("behaviour_keys", "windows_days"):  # one feature column per key / window
            values = getattr(self, name)
            if len(set(values)) < len(values):
                raise ValueError(f"{name} names a value twice: {list(values)}")
        if any(w <= 0 for w in self.windows_days):
            raise ValueError(f"windows_days must be positive, got {list(self.windows_days)}")
        for name in ("click_window_hours", "conversion_window_hours"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("prior_strength", "interest_half_life_days"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.history_length <= 100:
            raise ValueError(f"history_length must lie in [0, 100], got {self.history_length}")
        for name in ("interest_dim", "lgbm_text_dim", "recent_clicks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
