"""The canonical raw schema every dataset is mapped into (see ARCHITECTURE.md)."""

from __future__ import annotations

import polars as pl

TS = pl.Datetime("us")

ADS: dict[str, pl.DataType] = {
    "ad_id": pl.Int64,
    "advertiser_id": pl.Int64,
    "campaign_id": pl.Int64,
    "category": pl.String,
    "brand": pl.String,
    "title": pl.String,
    "description": pl.String,
    "keywords": pl.List(pl.String),
    "price": pl.Float64,
    "goal": pl.String,  # cpc | cpa
    "max_cpc": pl.Float64,
    "target_cpa": pl.Float64,
    "created_at": TS,
}

USERS: dict[str, pl.DataType] = {
    "user_id": pl.Int64,
    "age_bucket": pl.String,
    "gender": pl.String,
    "region": pl.String,
    "device": pl.String,
}

BEHAVIOUR: dict[str, pl.DataType] = {
    "user_id": pl.Int64,
    "ts": TS,
    "event": pl.String,  # search | view | click | purchase
    "ad_id": pl.Int64,
    "query": pl.String,
}

IMPRESSIONS: dict[str, pl.DataType] = {
    "impression_id": pl.Int64,
    "ts": TS,
    "user_id": pl.Int64,
    "ad_id": pl.Int64,
    "placement": pl.String,
    "position": pl.Int32,
    "device": pl.String,
    "query": pl.String,
    "click": pl.Int8,
    "conversion": pl.Int8,
    "cost": pl.Float64,
    "market_price": pl.Float64,
}

ORACLE: dict[str, pl.DataType] = {
    "impression_id": pl.Int64,
    "p_click": pl.Float64,
    "p_conversion": pl.Float64,
}

# entity spans of a query: character offsets [start, end) into its text; label BRAND | PRODUCT
# | PRICE
SPANS = pl.List(pl.Struct({"start": pl.Int32, "end": pl.Int32, "label": pl.String}))

# labelled queries (the simulator writes an annotation team's noisy labels to raw/; no ingested
# dataset has them, so they are not a RAW_TABLES table)
QUERY_ANNOTATIONS: dict[str, pl.DataType] = {
    "query": pl.String,
    "intent": pl.String,  # buy | compare | reviews | cheap | info | support
    "sentiment": pl.String,  # negative | neutral | positive
    "spans": SPANS,
}

# the simulator's noise-free truth of every distinct query of its log (oracle/queries)
ORACLE_QUERIES: dict[str, pl.DataType] = {
    "query": pl.String,
    "intent": pl.String,
    "sentiment": pl.String,
    "brand": pl.String,
    "product": pl.String,
    "price_cap": pl.Float64,
    "spans": SPANS,
}

# the simulator's true intent of each impression (null off search; oracle/impression_intents)
ORACLE_INTENTS: dict[str, pl.DataType] = {"impression_id": pl.Int64, "intent": pl.String}

RAW_TABLES: dict[str, dict[str, pl.DataType]] = {
    "ads": ADS,
    "users": USERS,
    "behaviour": BEHAVIOUR,
    "impressions": IMPRESSIONS,
}


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
