"""Build point-in-time features. Reads `raw/` (and `embeddings/` when text features are on).
Writes `features/{train,valid,test}.parquet` (rows in time order), `feature_spec.json`,
`vocab.parquet`, and the quarantined impressions (with a `reason`) to
`quarantine/features/impressions.parquet`.

Every impression is accounted for: rows in = train + valid + test + quarantined.
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from features import behaviour as bf
from features import events, schema
from features.encoders import encode, fit_vocab
from features.quality import flag_rows, reason_counts
from features.spec import FeatureSpec
from features.split import SPLITS, assign_split, cold_start_flag, new_user_flag
from pipeline.config import Experiment
from pipeline.io import DataError, read_manifest, read_table, write_tables
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
AD_NUMERIC = ["position", "log_price", "max_cpc", "target_cpa", "ad_age_days"]


def _has(frame: pl.DataFrame | pl.LazyFrame, col: str) -> bool:
    """The impressions carry `col` with at least one non-null value."""
    if col not in frame.collect_schema().names():
        return False
    return frame.lazy().select(pl.col(col).is_not_null().any()).collect().item()


def _contiguous(frame: pl.DataFrame) -> pl.DataFrame:
    """One chunk per column when columns are chunked differently: polars would otherwise copy
    the whole (wide) frame on the next select or filter, once per such call."""
    return frame.rechunk() if len(set(frame.n_chunks("all"))) > 1 else frame


def _attach(frame: pl.DataFrame, table: pl.DataFrame, key: str) -> pl.DataFrame:
    """`frame` left-joined with `table` on `key` (first row per key), in frame order: a
    position lookup and a gather per column (a join that keeps order costs several times more).
    """
    cols = [c for c in table.columns if c != key]
    table = table.unique(key, keep="first", maintain_order=True).drop_nulls(key)
    if table.height == 0:
        return frame.with_columns(pl.lit(None, table.schema[c]).alias(c) for c in cols)
    rows = pl.int_range(table.height, dtype=pl.UInt32, eager=True)
    pos = frame[key].replace_strict(table[key], rows, default=None, return_dtype=pl.UInt32)
    return frame.hstack(table.select(pl.col(cols).gather(pos)))


def _time_sorted(frame: pl.DataFrame) -> bool:
    """Rows are in (ts, impression_id) order (the simulator and most logs already are)."""
    ts, ids = pl.col("ts"), pl.col("impression_id")
    later = (ts > ts.shift(1)) | ((ts == ts.shift(1)) & (ids > ids.shift(1)))
    return bool(frame.select(later.slice(1).all()).item())


def _joined(
    layout: Layout, exp: Experiment
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any], int]:
    """Good impressions joined with ad attributes and user profile, with the split column,
    sorted by (ts, impression_id); the quarantined rows (+ reason); split bounds; rows in."""
    ads = read_table(layout.raw, "ads", schema.ADS)
    users = read_table(layout.raw, "users", schema.USERS)
    imps = read_table(layout.raw, "impressions", schema.IMPRESSIONS)
    required = ["ts", *[c for c in ("user_id", "ad_id") if _has(imps, c)]]
    rows_in = imps.select(pl.len()).collect().item()
    flagged = flag_rows(imps, ads, users, required).collect().rechunk()
    bad = flagged.filter(pl.col("reason").is_not_null())
    good = flagged.filter(pl.col("reason").is_null()) if bad.height else flagged
    del flagged
    frame = _attach(good.drop("reason"), ads.select(AD_COLUMNS).collect(), "ad_id")
    frame = _attach(frame, users.rename({"device": "profile_device"}).collect(), "user_id")
    del good
    frame, bounds = assign_split(frame, exp.split)
    inside = frame["split"].is_in(SPLITS).fill_null(False)
    if not inside.all():
        outside = frame.filter(~inside).select(imps.collect_schema().names())
        reason = "outside_split_period" if bounds["split_mode"] == "time" else "unknown_split"
        outside = outside.with_columns(pl.lit(reason).alias("reason"))
        bad = pl.concat([bad, outside], how="vertical_relaxed")
        frame = frame.filter(inside)
    if not _time_sorted(frame):
        frame = frame.sort(["ts", "impression_id"])
    return _contiguous(frame), bad, bounds, rows_in


def _behaviour(
    frame: pl.DataFrame, layout: Layout, exp: Experiment, has_conv: bool, priors: bf.Priors
) -> pl.DataFrame:
    """Every behaviour feature column, row-aligned with `frame` (sorted by ts)."""
    cfg = exp.features
    keys = bf.present_keys(frame, cfg.behaviour_keys)
    log.info("behaviour features: keys %s, windows %s days", keys, list(cfg.windows_days))
    behaviour = read_table(layout.raw, "behaviour", schema.BEHAVIOUR)
    outcomes = events.outcome_events(frame, behaviour, cfg)
    tl = events.timeline(frame, outcomes, has_conv, cfg.windows_days)
    blocks = [
        bf.key_features(frame, tl, key, cfg.windows_days, priors, cfg.prior_strength, has_conv)
        for key in tqdm(keys, desc="behaviour keys", unit="key", disable=frame.height < 100_000)
    ]
    return pl.concat(blocks, how="horizontal") if blocks else pl.DataFrame()


def _spec_entries(
    categorical: list[str], numeric: list[str], vocab: pl.DataFrame, beh_names: set[str]
) -> list[dict[str, Any]]:
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


def _encode(
    frame: pl.DataFrame, beh_names: list[str]
) -> tuple[pl.DataFrame, list[str], list[str], pl.DataFrame]:
    """Fit vocabularies on train, add `c_*` codes and `n_*` numerics; drop what train lacks."""
    names = frame.columns
    train = frame.lazy().filter(pl.col("split") == "train")  # lazy: only the needed columns
    candidates = [c for c in CATEGORICAL if c in names] + [c for c in names if c.startswith("cat_")]
    vocabs = [v for v in (fit_vocab(train, c) for c in candidates) if v.height > 0]
    categorical = [v["column"][0] for v in vocabs]
    vocab = pl.concat(vocabs) if vocabs else pl.DataFrame()
    numeric = [c for c in [*AD_NUMERIC, *beh_names] if c in names]
    numeric += [c for c in names if c.startswith("num_")]
    if numeric:
        has_values = train.select(pl.col(numeric).is_not_null().any()).collect().row(0, named=True)
        numeric = [c for c in numeric if has_values[c]]
    frame = frame.with_columns(
        [encode(c, vocab, f"c_{c}", frame.schema[c]) for c in categorical]
        + [pl.col(c).cast(pl.Float32).alias(f"n_{c}") for c in numeric]
    )
    return frame, categorical, numeric, vocab


def run(exp: Experiment) -> StageSummary:
    layout = Layout.of(exp)
    summary = StageSummary("features", output=str(layout.features))
    has_conv = bool(read_manifest(layout.raw).get("has_conversion", True))
    frame, bad, bounds, rows_in = _joined(layout, exp)
    train = frame.lazy().filter(pl.col("split") == "train").select("click", "conversion")
    if train.select(pl.len()).collect().item() == 0:
        raise DataError(f"{layout.raw}: no train impressions after quarantine ({bounds})")
    priors = bf.fit_priors(train)
    log.info("%s impressions to featurise, %s quarantined", f"{frame.height:,}", f"{bad.height:,}")
    beh = _behaviour(frame, layout, exp, has_conv, priors)
    beh_names = beh.columns
    frame = frame.hstack(beh)
    del beh, train
    frame = frame.with_columns(  # eager: keeps one chunk per column
        *bf.context(),
        cold_start_flag(frame).alias("cold_start"),
        new_user_flag(frame).alias("new_user"),
        pl.col("price").log1p().cast(pl.Float32).alias("log_price"),
        ((pl.col("ts") - pl.col("created_at")).dt.total_hours() / 24.0)
        .cast(pl.Float32)
        .alias("ad_age_days"),
    )
    order = frame["impression_id"]
    frame = frame.lazy()
    frame, text_spec = add_text_features(frame, layout, exp)
    frame = _contiguous(frame.collect())
    if not frame["impression_id"].equals(order):  # the text hook may reorder rows
        frame = frame.sort(["ts", "impression_id"])
    del order
    log.info("encoding categorical columns (%s columns so far)", f"{frame.width:,}")
    frame, categorical, numeric, vocab = _encode(frame, beh_names)
    spec_features = _spec_entries(categorical, numeric, vocab, set(beh_names)) + text_spec
    meta = [c for c in META if c in frame.columns]
    frame = frame.select(meta + [f["name"] for f in spec_features])
    rows = {s: int(frame["split"].eq(s).sum()) for s in SPLITS}
    spec = {
        "features": spec_features,
        "labels": ["click", "conversion"] if has_conv else ["click"],
        "meta": meta,
        "has_conversion": has_conv,
        "has_text": bool(text_spec),
        "priors": {"ctr": priors.ctr, "cvr": priors.cvr},
        "split": bounds,
        "rows": rows,
    }
    reasons = reason_counts(bad)
    write_tables(layout.features_quarantine, {"impressions": bad}, config_digest=exp.digest())
    log.info(
        "writing %s rows x %s columns to %s", f"{frame.height:,}", frame.width, layout.features
    )
    tables = {s: frame.lazy().filter(pl.col("split") == s) for s in SPLITS}
    write_tables(
        layout.features,
        {**tables, "vocab": vocab},
        config_digest=exp.digest(),
        inputs={"raw": layout.raw},
        files={layout.feature_spec.name: FeatureSpec.from_dict(spec).to_json().encode()},
        extra={"quarantined": bad.height, "quarantine_reasons": reasons, "rows_in": rows_in},
    )
    summary.rows_in = rows_in
    summary.rows_out = frame.height
    summary.rows_quarantined = bad.height
    if summary.rows_in != summary.rows_out + summary.rows_quarantined:
        raise RuntimeError(f"row accounting broken: {summary.line()}")
    summary.notes = dict(rows)
    summary.notes["features"] = len(spec_features)
    if reasons:
        summary.notes["quarantine"] = ",".join(f"{k}:{v}" for k, v in reasons.items())
    return summary
