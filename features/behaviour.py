"""Point-in-time behaviour and context features (pure polars).

Every behaviour feature of an impression at time t uses only impressions strictly before t:
per key, the log is reduced to cumulative counts at each distinct timestamp, and each impression
looks up the last cumulative row strictly before t (and strictly before t - window) with
`join_asof(allow_exact_matches=False)` on frames sorted by (key, ts).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

DAY_US = 86_400 * 1_000_000

# key name -> columns that form it
KEYS: dict[str, tuple[str, ...]] = {
    "user": ("user_id",),
    "ad": ("ad_id",),
    "advertiser": ("advertiser_id",),
    "campaign": ("campaign_id",),
    "category": ("category",),
    "placement": ("placement",),
    "user_category": ("user_id", "category"),
}


@dataclass(frozen=True)
class FeatureConfig:
    """Which feature families to build and their settings."""

    text: bool = True  # the text ablation switch
    windows_days: tuple[int, ...] = (1, 7, 28)
    prior_strength: float = 20.0  # pseudo-impressions of the Bayesian prior
    behaviour_keys: tuple[str, ...] = tuple(KEYS)
    interest_half_life_days: float = 7.0
    interest_dim: int = 64  # PCA width of the user interest vector
    lgbm_text_dim: int = 16  # PCA width of the ad embedding for LightGBM
    recent_clicks: int = 5

    def __post_init__(self) -> None:
        unknown = set(self.behaviour_keys) - set(KEYS)
        if unknown:
            raise ValueError(f"unknown behaviour_keys {sorted(unknown)} (known: {list(KEYS)})")
        if any(w <= 0 for w in self.windows_days):
            raise ValueError("windows_days must be positive")


def _cumulative(log: pl.LazyFrame, cols: tuple[str, ...], has_conv: bool) -> pl.LazyFrame:
    """Per key and distinct ts: cumulative impressions, clicks, conversions up to that ts."""
    aggs = [pl.len().alias("n"), pl.col("click").sum().alias("k")]
    if has_conv:
        aggs.append(pl.col("conversion").fill_null(0).sum().alias("v"))
    per_ts = log.group_by([*cols, "ts"]).agg(aggs).sort([*cols, "ts"])
    cums = [
        pl.col(c).cum_sum().over(list(cols)).alias(f"cum_{c}")
        for c in ("n", "k", "v")
        if has_conv or c != "v"
    ]
    return per_ts.with_columns(cums).drop([c for c in ("n", "k", "v") if has_conv or c != "v"])


def _asof(
    left: pl.LazyFrame, right: pl.LazyFrame, cols: tuple[str, ...], on: str, suffix: str
) -> pl.LazyFrame:
    right = right.rename(
        {c: f"{c}{suffix}" for c in right.collect_schema().names() if c.startswith("cum_")}
    )
    return left.sort(on).join_asof(
        right.rename({"ts": on}).sort(on),
        on=on,
        by=list(cols),
        strategy="backward",
        allow_exact_matches=False,
        check_sortedness=False,
    )


def key_counts(
    queries: pl.LazyFrame,
    log: pl.LazyFrame,
    name: str,
    windows_days: tuple[int, ...],
    has_conv: bool,
) -> pl.LazyFrame:
    """Counts of impressions / clicks / conversions for key `name` strictly before each query
    row's ts, all-time and over each trailing window [t - w days, t).

    `queries` has impression_id, ts and the key columns; `log` has the key columns, ts, click
    (and conversion). Returns impression_id + `<name>_{imps,clicks,convs}_{all,<w>d}` (Float32).
    """
    cols = KEYS[name]
    cum = _cumulative(log, cols, has_conv)
    parts = ["n", "k", "v"] if has_conv else ["n", "k"]
    label = {"n": "imps", "k": "clicks", "v": "convs"}
    q = queries.select(["impression_id", "ts", *cols])
    out = _asof(q, cum, cols, "ts", "")
    exprs = [pl.col(f"cum_{p}").fill_null(0).alias(f"{name}_{label[p]}_all") for p in parts]
    for w in windows_days:
        shifted = q.with_columns((pl.col("ts") - pl.duration(days=w)).alias(f"ts_{w}"))
        back = _asof(shifted, cum, cols, f"ts_{w}", f"_{w}").select(
            ["impression_id", *[f"cum_{p}_{w}" for p in parts]]
        )
        out = out.join(back, on="impression_id", how="left")
        exprs += [
            (pl.col(f"cum_{p}").fill_null(0) - pl.col(f"cum_{p}_{w}").fill_null(0)).alias(
                f"{name}_{label[p]}_{w}d"
            )
            for p in parts
        ]
    return out.select(["impression_id", *[e.cast(pl.Float32) for e in exprs]])


def smoothed_rates(
    name: str,
    windows: list[str],
    ctr_prior: float,
    cvr_prior: float,
    strength: float,
    has_conv: bool,
) -> list[pl.Expr]:
    """Bayesian-smoothed CTR (and CVR) columns from the count columns of `key_counts`."""
    exprs = []
    for w in windows:
        imps, clicks = pl.col(f"{name}_imps_{w}"), pl.col(f"{name}_clicks_{w}")
        exprs.append(((clicks + strength * ctr_prior) / (imps + strength)).alias(f"{name}_ctr_{w}"))
        if has_conv:
            convs = pl.col(f"{name}_convs_{w}")
            exprs.append(
                ((convs + strength * cvr_prior) / (clicks + strength)).alias(f"{name}_cvr_{w}")
            )
    return [e.cast(pl.Float32) for e in exprs]


def recency(queries: pl.LazyFrame, log: pl.LazyFrame) -> pl.LazyFrame:
    """Seconds since the user last saw this ad, last clicked this ad's category, and the number
    of earlier impressions of this ad to this user (frequency); all strictly before t."""
    q = queries.select(["impression_id", "ts", "user_id", "ad_id", "category"])
    seen = (
        log.group_by(["user_id", "ad_id", "ts"])
        .agg(pl.len().alias("n"))
        .sort(["user_id", "ad_id", "ts"])
        .with_columns(
            pl.col("n").cum_sum().over(["user_id", "ad_id"]).alias("freq"),
            pl.col("ts").alias("last_seen"),
        )
        .drop("n")
    )
    clicked = (
        log.filter(pl.col("click") == 1)
        .group_by(["user_id", "category", "ts"])
        .agg()
        .sort(["user_id", "category", "ts"])
        .with_columns(pl.col("ts").alias("last_click"))
    )
    a = q.sort("ts").join_asof(
        seen.sort("ts"),
        on="ts",
        by=["user_id", "ad_id"],
        allow_exact_matches=False,
        check_sortedness=False,
    )
    b = a.sort("ts").join_asof(
        clicked.sort("ts"),
        on="ts",
        by=["user_id", "category"],
        allow_exact_matches=False,
        check_sortedness=False,
    )
    secs = 1_000_000
    return b.select(
        "impression_id",
        ((pl.col("ts") - pl.col("last_seen")).dt.total_microseconds() / secs)
        .cast(pl.Float32)
        .alias("user_ad_secs_since_seen"),
        ((pl.col("ts") - pl.col("last_click")).dt.total_microseconds() / secs)
        .cast(pl.Float32)
        .alias("user_category_secs_since_click"),
        pl.col("freq").fill_null(0).cast(pl.Float32).alias("user_ad_frequency"),
    )


def context() -> list[pl.Expr]:
    """Hour and weekday of the impression (placement, position, device pass through)."""
    return [
        pl.col("ts").dt.hour().cast(pl.Int32).alias("hour"),
        pl.col("ts").dt.weekday().cast(pl.Int32).alias("weekday"),
    ]
