"""The tabular columns of the feature tables: which raw columns are kept as meta, which become
categorical codes or numerics, and their feature-spec entries. Pure: names and dicts only."""

from __future__ import annotations

from typing import Any

import polars as pl

# kept in every split table beside the features: ids for slicing, labels, money for bidding
META = [
    "impression_id",
    "ts",
    "user_id",
    "ad_id",
    "placement",
    "position",
    "device",
    "split",
    "cold_start",
    "new_user",
    "click",
    "conversion",
    "market_price",
    "cost",
    "goal",
    "max_cpc",
    "target_cpa",
]
AD_COLUMNS = [
    "ad_id",
    "advertiser_id",
    "campaign_id",
    "category",
    "brand",
    "price",
    "goal",
    "max_cpc",
    "target_cpa",
    "created_at",
]
CATEGORICAL = [
    "user_id",
    "ad_id",
    "advertiser_id",
    "campaign_id",
    "category",
    "brand",
    "goal",
    "placement",
    "device",
    "age_bucket",
    "gender",
    "region",
    "hour",
    "weekday",
]
AD_NUMERIC = ["position", "log_price", "max_cpc", "target_cpa", "ad_age_days"]


def categorical_sources(names: list[str]) -> list[str]:
    """The columns among `names` that may become `c_*` codes: the known ones, then `cat_*`."""
    return [c for c in CATEGORICAL if c in names] + [c for c in names if c.startswith("cat_")]


def numeric_sources(names: list[str], behaviour: list[str]) -> list[str]:
    """The columns among `names` that may become `n_*` numerics: the ad's and context's, the
    behaviour columns, then `num_*`."""
    known = [c for c in [*AD_NUMERIC, *behaviour] if c in names]
    return known + [c for c in names if c.startswith("num_")]


def spec_entries(
    categorical: list[str], numeric: list[str], vocab: pl.DataFrame, beh_names: set[str]
) -> list[dict[str, Any]]:
    """The feature-spec entries of the `c_*` codes (cardinality from `vocab`, plus one for
    unseen values) and the `n_*` numerics, each with its family (id, context, ad, behaviour)."""
    cats = [
        {
            "name": f"c_{c}",
            "kind": "categorical",
            "source": c,
            "cardinality": int(vocab.filter(pl.col("column") == c).height) + 1,
            "family": "id" if c.endswith("_id") or c in ("category", "brand") else "context",
        }
        for c in categorical
    ]
    nums = [
        {
            "name": f"n_{c}",
            "kind": "numeric",
            "source": c,
            "family": "behaviour"
            if c in beh_names
            else ("context" if c == "position" or c.startswith("num_") else "ad"),
        }
        for c in numeric
    ]
    return cats + nums
