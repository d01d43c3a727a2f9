"""The export's grid of (active ad, placement, user segment) cells and their estimates.

`scoring_rows` joins the most recent feature rows with the user's segment columns and the ad's
category; `score` adds the champion's calibrated pCTR / pCVR; `candidate_grid` lists every cell
to publish; `cell_estimates` averages the scored rows per cell, with a fallback for cells
without rows (`pipeline.export` turns the cells into bids).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from features.spec import FeatureSpec
from models.bidding import stable_mean, stable_sum
from pipeline.config import Experiment
from pipeline.datasets import load_split
from pipeline.io import DataError, read_table
from pipeline.stage import Layout

KEY_COLUMNS = ("ad_id", "placement", "segment")
# the ad_id of every row when the log has no ad ids: one bid per (placement, segment), any ad
ANY_AD = -1


def segment_expr(columns: tuple[str, ...]) -> pl.Expr:
    """A row's segment: its segment columns joined with "|" ("all" without any)."""
    if not columns:
        return pl.lit("all")
    return pl.concat_str([pl.col(c) for c in columns], separator="|")


def scoring_rows(exp: Experiment, layout: Layout) -> pl.DataFrame:
    """The recent feature rows with the user's segment columns and the ad's category."""
    seg = exp.export.segment_columns
    users = read_table(layout.raw, "users").collect()
    missing = [c for c in seg if c not in users.columns]
    if missing:
        raise DataError(
            f"{layout.raw / 'users.parquet'}: no segment column(s) {missing}; "
            "set export.segment_columns to some of " + ", ".join(users.columns[1:])
        )
    profile = users.select("user_id", *[pl.col(c).cast(pl.String) for c in seg])
    ads = read_table(layout.raw, "ads").select("ad_id", "category").collect()
    frames = [load_split(layout, s) for s in exp.export.score_splits]
    rows = pl.concat(frames, how="vertical_relaxed")
    rows = rows.drop([c for c in (*seg, "category") if c in rows.columns])
    rows = rows.join(profile, on="user_id", how="left").join(ads, on="ad_id", how="left")
    if rows["ad_id"].null_count() == rows.height:
        rows = rows.with_columns(pl.lit(ANY_AD, pl.Int64).alias("ad_id"))
    return rows.with_columns(
        *[pl.col(c).fill_null("unknown") for c in (*seg, "category")],
        pl.col("placement").fill_null("unknown"),
    ).with_columns(segment=segment_expr(seg))


def score(model: Any, rows: pl.DataFrame) -> pl.DataFrame:
    """Calibrated pctr / pcvr of the champion for every row (pcvr 0 for CTR-only models)."""
    pred = model.predict(None, rows)
    pcvr = np.asarray(pred["pcvr"], dtype=np.float64)
    if np.isnan(pcvr).all():
        pcvr = np.zeros_like(pcvr)
    return rows.with_columns(
        pctr=pl.Series(np.asarray(pred["pctr"], dtype=np.float64)), pcvr=pl.Series(pcvr)
    )


def ad_terms(frame: pl.DataFrame | pl.LazyFrame) -> Any:
    """goal null -> cpc; a CPC ad without max_cpc is worth its pCTR (max_cpc 1)."""
    return frame.with_columns(
        pl.col("goal").fill_null("cpc"),
        pl.when(pl.col("goal").fill_null("cpc") == "cpc")
        .then(pl.col("max_cpc").fill_null(1.0))
        .otherwise(pl.col("max_cpc"))
        .alias("max_cpc"),
    )


def valid_from(spec: FeatureSpec, rows: pl.DataFrame) -> str | None:
    """Where the data ends: the test split's end, else the last scored impression."""
    if spec.split.test_end:
        return spec.split.test_end
    ts = rows["ts"].max() if "ts" in rows.columns else None
    return ts.isoformat() if ts is not None else None


def candidate_grid(
    exp: Experiment, layout: Layout, rows: pl.DataFrame, start: str | None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(grid, active ads, placements): every active ad (created before `start`) x placement x
    segment (user profiles' and scored rows'), with the ad's category and goal terms."""
    ads = ad_terms(read_table(layout.raw, "ads").collect())
    if ads.is_empty() and rows["ad_id"].eq(ANY_AD).all():  # a log without ad ids
        blank = [pl.lit(None, t).alias(c) for c, t in ads.schema.items() if c != "ad_id"]
        ads = ad_terms(pl.DataFrame({"ad_id": [ANY_AD]}).with_columns(blank))
    if start is not None and "created_at" in ads.columns:
        cut = datetime.fromisoformat(start)
        ads = ads.filter(pl.col("created_at").is_null() | (pl.col("created_at") < cut))
    ads = ads.select(
        "ad_id", pl.col("category").fill_null("unknown"), "goal", "max_cpc", "target_cpa"
    )
    places = pl.concat(
        [
            read_table(layout.features, s).select(pl.col("placement").fill_null("unknown"))
            for s in ("train", "valid", "test")
        ]
    )
    placements = places.unique().collect().sort("placement")
    seg = list(exp.export.segment_columns)
    users = read_table(layout.raw, "users").select("user_id", *seg).collect()
    profile = users.select([pl.col(c).cast(pl.String).fill_null("unknown") for c in seg])
    segments = pl.concat([profile, rows.select(seg)]).unique() if seg else pl.DataFrame()
    segments = (
        segments.with_columns(segment=segment_expr(tuple(seg))).sort("segment")
        if seg
        else pl.DataFrame({"segment": ["all"]})
    )
    return ads.join(placements, how="cross").join(segments, how="cross"), ads, placements


def cell_estimates(
    rows: pl.DataFrame,
    grid: pl.DataFrame,
    targets: tuple[str, ...] = ("pctr", "pcvr"),
    shrinkage: float = 20.0,
) -> pl.DataFrame:
    """Mean prediction per grid cell (ad_id, placement, segment), with a fallback for thin cells.

    `rows` are scored impressions (`ad_id`, `placement`, `segment`, `category` and `targets`);
    `grid` lists the cells wanted (`ad_id`, `placement`, `segment`, `category`). Per target:
    `prior = ratio * base`, where `base` is the mean over rows of the cell's (placement,
    segment), else of its placement, else of all rows, and `ratio` is how the ad's rows compare
    with the base of their own (placement, segment) (`sum(pred) / sum(base)`), else the same
    for the ad's category, else 1. The estimate is `(n * cell mean + shrinkage * prior) /
    (n + shrinkage)` for a cell with n rows; `source` says the finest level used (`cell`, `ad`,
    `category`, `prior`) and `rows` is n. A NaN prediction stays NaN in its cells.
    """
    cell_keys = list(KEY_COLUMNS)
    means = [stable_mean(t) for t in targets]
    cells = rows.group_by(cell_keys).agg(*means, rows=pl.len())
    out = (
        grid.select(*cell_keys, "category")
        .join(cells, on=cell_keys, how="left")
        .with_columns(pl.col("rows").fill_null(0))
    )
    known_ads = rows.select("ad_id").unique().with_columns(_has_ad=pl.lit(True))
    known_cats = rows.select("category").unique().with_columns(_has_cat=pl.lit(True))
    out = out.join(known_ads, on="ad_id", how="left").join(known_cats, on="category", how="left")
    n = pl.col("rows").cast(pl.Float64)
    for t in targets:
        by_ps = rows.group_by("placement", "segment").agg(stable_mean(t).alias("b_ps"))
        by_p = rows.group_by("placement").agg(stable_mean(t).alias("b_p"))
        scored = rows.join(by_ps, on=["placement", "segment"])
        # null (-> the next fallback) where the base is 0: all-zero predictions give 0, not 0/0
        base_sum = stable_sum("b_ps")
        ratio = pl.when(base_sum > 0).then(stable_sum(t) / base_sum)
        r_ad = scored.group_by("ad_id").agg(ratio.alias("r_ad"))
        r_cat = scored.group_by("category").agg(ratio.alias("r_cat"))
        base = pl.coalesce("b_ps", "b_p", pl.lit(rows[t].mean(), pl.Float64))
        prior = (pl.coalesce("r_ad", "r_cat", pl.lit(1.0)) * base).clip(0.0, 1.0)
        blended = (n * pl.col(t) + shrinkage * prior) / (n + shrinkage)
        out = (
            out.join(by_ps, on=["placement", "segment"], how="left")
            .join(by_p, on="placement", how="left")
            .join(r_ad, on="ad_id", how="left")
            .join(r_cat, on="category", how="left")
            .with_columns(pl.when(n > 0).then(blended).otherwise(prior).alias(t))
            .drop("b_ps", "b_p", "r_ad", "r_cat")
        )
    source = (
        pl.when(pl.col("rows") > 0)
        .then(pl.lit("cell"))
        .when(pl.col("_has_ad").fill_null(False))
        .then(pl.lit("ad"))
        .when(pl.col("_has_cat").fill_null(False))
        .then(pl.lit("category"))
        .otherwise(pl.lit("prior"))
    )
    return out.with_columns(source=source).drop("_has_ad", "_has_cat").sort(cell_keys)
