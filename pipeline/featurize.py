"""Build point-in-time features. Reads `raw/` (and `embeddings/` when text features are on).
Writes `features/{train,valid,test}.parquet`, `feature_spec.json`, `vocab.parquet`, and the
quarantined impressions to `quarantine/features.parquet`."""

from __future__ import annotations

import json
import logging

import polars as pl

from features import behaviour as bf
from features import schema
from features.encoders import apply_vocab, fit_vocab
from features.quality import split_quarantine
from features.split import SPLITS, assign_split, cold_start_flag
from pipeline.config import Experiment
from pipeline.io import read_manifest, read_table, write_tables
from pipeline.stage import Layout, StageSummary
from pipeline.text_features import add_text_features

log = logging.getLogger(__name__)

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


def _joined(layout: Layout, exp: Experiment) -> tuple[pl.LazyFrame, pl.LazyFrame, dict, int]:
    """Impressions joined with ad attributes and user profile; quarantine; the split column."""
    ads = read_table(layout.raw, "ads", schema.ADS)
    users = read_table(layout.raw, "users", schema.USERS)
    imps = read_table(layout.raw, "impressions", schema.IMPRESSIONS)
    rows_in = imps.select(pl.len()).collect().item()
    has_users = users.select(pl.len()).collect().item() > 0
    good, bad = split_quarantine(imps, ads, users if has_users else None)
    profile = users.rename({"device": "profile_device"})
    frame = good.join(ads.select(AD_COLUMNS), on="ad_id", how="left").join(
        profile, on="user_id", how="left"
    )
    frame, bounds = assign_split(frame, exp.split)
    outside = frame.filter(~pl.col("split").is_in(SPLITS))
    bad = pl.concat(
        [
            bad,
            outside.select(bad.collect_schema().names()[:-1]).with_columns(
                pl.lit("outside_split_period").alias("reason")
            ),
        ],
        how="vertical_relaxed",
    )
    frame = frame.filter(pl.col("split").is_in(SPLITS))
    return frame, bad, bounds, rows_in


def _behaviour(frame: pl.LazyFrame, exp: Experiment, has_conv: bool, priors: dict) -> tuple:
    """All behaviour feature columns joined by impression_id; their names."""
    cfg = exp.features
    schema_names = frame.collect_schema().names()
    out = frame.select("impression_id")
    names: list[str] = []
    windows = ["all", *[f"{w}d" for w in cfg.windows_days]]
    for key in cfg.behaviour_keys:
        cols = bf.KEYS[key]
        if any(c not in schema_names for c in cols):
            continue
        if (
            frame.select(pl.col(list(cols)).null_count().sum()).collect().row(0)[0] > 0
            and frame.select(pl.col(cols[0]).is_null().all()).collect().item()
        ):
            continue  # the dataset does not have this key
        keyed = frame.select(["impression_id", "ts", *cols, "click", "conversion"])
        counts = bf.key_counts(keyed, keyed, key, cfg.windows_days, has_conv)
        counts = counts.with_columns(
            bf.smoothed_rates(
                key, windows, priors["ctr"], priors["cvr"], cfg.prior_strength, has_conv
            )
        )
        out = out.join(counts, on="impression_id", how="left")
    rec = bf.recency(frame, frame)
    out = out.join(rec, on="impression_id", how="left")
    names = [c for c in out.collect_schema().names() if c != "impression_id"]
    return out, names


def run(exp: Experiment) -> StageSummary:
    layout = Layout.of(exp)
    summary = StageSummary("features", output=str(layout.features))
    raw_manifest = read_manifest(layout.raw)
    has_conv = bool(raw_manifest.get("has_conversion", True))
    frame, bad, bounds, rows_in = _joined(layout, exp)
    frame = frame.with_columns(bf.context()).collect().lazy()
    train = frame.filter(pl.col("split") == "train")
    priors = (
        train.select(
            pl.col("click").mean().alias("ctr"),
            (pl.col("conversion").fill_null(0).sum() / pl.col("click").sum().clip(1)).alias("cvr"),
        )
        .collect()
        .row(0, named=True)
    )
    log.info(
        "building behaviour features (%s keys, windows %s days)",
        len(exp.features.behaviour_keys),
        list(exp.features.windows_days),
    )
    beh, beh_names = _behaviour(frame, exp, has_conv, priors)
    frame = frame.join(beh, on="impression_id", how="left")
    frame = frame.with_columns(
        cold_start_flag(frame).alias("cold_start"),
        (
            (pl.col("split") == "test")
            & ~pl.col("user_id").is_in(
                train.select("user_id").unique().collect()["user_id"].implode()
            )
        ).alias("new_user"),
        (pl.col("price").log1p()).cast(pl.Float32).alias("log_price"),
        ((pl.col("ts") - pl.col("created_at")).dt.total_hours() / 24.0)
        .cast(pl.Float32)
        .alias("ad_age_days"),
    )
    frame, text_spec = add_text_features(frame, layout, exp)
    names = frame.collect_schema().names()
    extra_cat = [c for c in names if c.startswith("cat_")]
    extra_num = [c for c in names if c.startswith("num_")]
    categorical = [c for c in CATEGORICAL if c in names] + extra_cat
    numeric = [
        "position",
        "log_price",
        "max_cpc",
        "target_cpa",
        "ad_age_days",
        *beh_names,
        *extra_num,
    ]
    train = frame.filter(pl.col("split") == "train")
    vocabs = [fit_vocab(train, c) for c in categorical]
    vocabs = [v for v in vocabs if v.height > 0]  # a column the dataset lacks is dropped
    categorical = [v["column"][0] for v in vocabs]
    vocab = pl.concat(vocabs) if vocabs else pl.DataFrame()
    for col in categorical:
        frame = apply_vocab(frame, col, vocab, f"c_{col}")
    train_nulls = (
        frame.filter(pl.col("split") == "train")
        .select(
            [pl.col(c).is_null().all().alias(c) for c in numeric if c in names or c in beh_names]
        )
        .collect()
        .row(0, named=True)
    )
    numeric = [c for c, all_null in train_nulls.items() if not all_null]
    frame = frame.with_columns([pl.col(c).cast(pl.Float32).alias(f"n_{c}") for c in numeric])
    spec_features = (
        [
            {
                "name": f"c_{c}",
                "kind": "categorical",
                "source": c,
                "cardinality": int(vocab.filter(pl.col("column") == c).height) + 1,
                "family": "id" if c.endswith("_id") or c in ("category", "brand") else "context",
            }
            for c in categorical
        ]
        + [
            {
                "name": f"n_{c}",
                "kind": "numeric",
                "source": c,
                "family": "behaviour"
                if c in beh_names
                else ("context" if c == "position" else "ad"),
            }
            for c in numeric
        ]
        + text_spec
    )
    meta = [c for c in META if c in frame.collect_schema().names()]
    keep = meta + [f["name"] for f in spec_features]
    frame = frame.select(keep).sort("impression_id").collect()
    tables = {s: frame.filter(pl.col("split") == s) for s in SPLITS}
    spec = {
        "features": spec_features,
        "labels": ["click", "conversion"] if has_conv else ["click"],
        "meta": meta,
        "has_conversion": has_conv,
        "has_text": bool(text_spec),
        "priors": priors,
        "split": bounds,
        "rows": {s: t.height for s, t in tables.items()},
    }
    bad_df = bad.collect()
    if bad_df.height:
        write_tables(
            layout.quarantine / "features", {"impressions": bad_df}, config_digest=exp.digest()
        )
    write_tables(
        layout.features,
        {**tables, "vocab": vocab},
        config_digest=exp.digest(),
        inputs={"raw": layout.raw},
        files={"feature_spec.json": json.dumps(spec, indent=2).encode()},
        extra={"quarantined": bad_df.height, "rows_in": rows_in},
    )
    summary.rows_in = rows_in
    summary.rows_out = frame.height
    summary.rows_quarantined = bad_df.height
    if summary.rows_in != summary.rows_out + summary.rows_quarantined:
        raise RuntimeError(f"row accounting broken: {summary.line()}")
    summary.notes = {s: t.height for s, t in tables.items()}
    summary.notes["features"] = len(spec_features)
    return summary
