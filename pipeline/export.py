"""Publish the bid / placement weight table for the ad server.

Reads the champion model version (`models:/adctr-<exp>-<kind>@champion`), the most recent
feature rows (`features/<export.score_splits>.parquet` + feature_spec.json), raw `ads` and
`users`, and the table published before (for the guardrail). Writes `exports/` through
`pipeline.publish` (a symlink to `export-versions/<version>/` swapped in one rename: readers see
the old table or the new one, never a mix) and one MLflow run (tag stage=export) with the
table, the manifest and a histogram of bids.

Steps: score the recent rows with the champion; average the calibrated pCTR / pCVR into a grid
of (active ad, placement, user segment) cells with a fallback for cells without rows
(`models.bidding.cell_estimates`); tune the configured strategy's bid level on the same rows
replayed as an auction stream (`export.budget_fraction` of their logged cost); compute values,
bids and placement weights (`models.bidding.bid_table`); validate; check the guardrail; publish.
A refusal raises `ExportRefused` (a DataError: the CLI prints one line and exits 2) and leaves
the published table untouched.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from models.bidding import (
    BidParams,
    bid_table,
    cell_estimates,
    frame_value,
    ortb_lambda,
    split_strategy,
)
from models.replay import Auctions, pacing_multipliers, tune
from pipeline.config import Experiment
from pipeline.datasets import load_spec
from pipeline.io import DataError, code_version, read_table
from pipeline.publish import CSV_FILE, TABLE_FILE, publish, published_manifest
from pipeline.stage import Layout, StageSummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("adctr.export")

KEY_COLUMNS = ("ad_id", "placement", "segment")
VALUE_COLUMNS: dict[str, pl.DataType] = {
    "goal": pl.String(),
    "pctr": pl.Float64(),
    "pcvr": pl.Float64(),
    "value": pl.Float64(),
    "bid": pl.Float64(),
    "bid_multiplier": pl.Float64(),
    "placement_weight": pl.Float64(),
    "rows": pl.Int64(),
    "source": pl.String(),
}


class ExportRefused(DataError):
    """The new table failed validation or the guardrail; the published table is untouched."""


@dataclass(frozen=True)
class Champion:
    """The registered model version the table comes from and its guardrail metric."""

    kind: str
    name: str
    version: str
    run_id: str
    uri: str
    metric: str
    metric_value: float


def table_schema(segment_columns: tuple[str, ...]) -> dict[str, pl.DataType]:
    """Columns and types of bid_weights, in order."""
    keys: dict[str, pl.DataType] = {"ad_id": pl.Int64(), "placement": pl.String()}
    keys |= {"segment": pl.String()} | {c: pl.String() for c in segment_columns}
    return keys | VALUE_COLUMNS


def load_champion(exp: Experiment, layout: Layout) -> tuple[Champion, Any]:
    """The champion version from the registry, its metric, and the loaded pyfunc's model."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import use_experiment

    use_experiment(exp)
    client = MlflowClient()
    path = layout.root / "evaluation" / "metrics.json"
    named = json.loads(path.read_text()).get("champion") if path.is_file() else None
    for kind in [named] if named else list(exp.train.models):
        name = f"adctr-{exp.name}-{kind}"
        try:
            mv = client.get_model_version_by_alias(name, "champion")
        except MlflowException:
            continue
        metrics = client.get_run(mv.run_id).data.metrics
        metric = "test_ctcvr_logloss"
        if not np.isfinite(metrics.get(metric, np.nan)):
            metric = "test_ctr_logloss"  # datasets without conversions
        uri = f"models:/{name}@champion"
        model = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        value = float(metrics.get(metric, np.nan))
        return Champion(kind, name, str(mv.version), mv.run_id, uri, metric, value), model
    raise DataError(f"no 'champion' alias on adctr-{exp.name}-*; run `make evaluate` first")


def _segment_expr(columns: tuple[str, ...]) -> pl.Expr:
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
    frames = [read_table(layout.features, s).collect() for s in exp.export.score_splits]
    rows = pl.concat(frames, how="vertical_relaxed")
    rows = rows.drop([c for c in (*seg, "category") if c in rows.columns])
    rows = rows.join(profile, on="user_id", how="left").join(ads, on="ad_id", how="left")
    return rows.with_columns(
        *[pl.col(c).fill_null("unknown") for c in (*seg, "category")],
        pl.col("placement").fill_null("unknown"),
    ).with_columns(segment=_segment_expr(seg))


def score(model: Any, rows: pl.DataFrame) -> pl.DataFrame:
    """Calibrated pctr / pcvr of the champion for every row (pcvr 0 for CTR-only models)."""
    pred = model.predict(None, rows)
    pcvr = np.asarray(pred["pcvr"], dtype=np.float64)
    if np.isnan(pcvr).all():
        pcvr = np.zeros_like(pcvr)
    return rows.with_columns(
        pctr=pl.Series(np.asarray(pred["pctr"], dtype=np.float64)), pcvr=pl.Series(pcvr)
    )


def _ad_terms(frame: pl.DataFrame | pl.LazyFrame) -> Any:
    """goal null -> cpc; a CPC ad without max_cpc is worth its pCTR (max_cpc 1)."""
    return frame.with_columns(
        pl.col("goal").fill_null("cpc"),
        pl.when(pl.col("goal").fill_null("cpc") == "cpc")
        .then(pl.col("max_cpc").fill_null(1.0))
        .otherwise(pl.col("max_cpc"))
        .alias("max_cpc"),
    )


def valid_from(layout: Layout, rows: pl.DataFrame) -> str | None:
    """Where the data ends: the test split's end, else the last scored impression."""
    split = load_spec(layout.features).get("split", {})
    if split.get("test_end"):
        return str(split["test_end"])
    ts = rows["ts"].max() if "ts" in rows.columns else None
    return ts.isoformat() if ts is not None else None


def candidate_grid(
    exp: Experiment, layout: Layout, rows: pl.DataFrame, start: str | None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(grid, active ads, placements): every active ad (created before `start`) x placement x
    segment (user profiles' and scored rows'), with the ad's category and goal terms."""
    ads = _ad_terms(read_table(layout.raw, "ads").collect())
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
        segments.with_columns(segment=_segment_expr(tuple(seg))).sort("segment")
        if seg
        else pl.DataFrame({"segment": ["all"]})
    )
    return ads.join(placements, how="cross").join(segments, how="cross"), ads, placements


def strategy_params(
    exp: Experiment, rows: pl.DataFrame, has_conversion: bool
) -> tuple[BidParams, float]:
    """Tune the configured strategy on the scored rows replayed as an auction stream.

    Returns the parameters and, for a paced strategy, the pacing multiplier to start from: the
    median multiplier the controller held over that replay (1 when nothing could be tuned).
    """
    cfg, name = exp.bidding, exp.export.strategy
    base, paced = split_strategy(name, cfg.paced_base)
    terms = _ad_terms(rows)
    value = np.nan_to_num(frame_value(terms), nan=0.0)
    price = rows["market_price"] if "market_price" in rows.columns else None
    if price is None or price.null_count() or not (price > 0).any():
        mean = float(value.mean()) or 1.0
        c = cfg.ortb_c or cfg.base_bid
        lam = ortb_lambda(cfg.base_bid, c, mean)
        return BidParams(base, cfg.base_bid, mean, c, lam, paced), 1.0
    stream = Auctions(
        value=value,
        market_price=price.to_numpy().astype(np.float64),
        click=rows["click"].to_numpy().astype(np.int64),
        conversion=rows["conversion"].fill_null(0).to_numpy().astype(np.int64),
    )
    use_conv = has_conversion and stream.conversion.sum() > 0
    objective = "conversions" if use_conv else "clicks"
    budget = exp.export.budget_fraction * stream.cost
    params = tune(name, stream, budget, cfg, objective)
    if not paced:
        return params, 1.0
    return params, float(np.median(pacing_multipliers(params, stream, budget, cfg)))


def build_table(
    exp: Experiment, rows: pl.DataFrame, grid: pl.DataFrame, params: BidParams
) -> pl.DataFrame:
    """Cells -> the bid_weights table in `table_schema` order."""
    seg = exp.export.segment_columns
    cells = cell_estimates(rows, grid, ("pctr", "pcvr"), exp.export.shrinkage)
    cells = cells.join(
        grid.select(*KEY_COLUMNS, *seg, "goal", "max_cpc", "target_cpa"), on=list(KEY_COLUMNS)
    )
    table = bid_table(cells, params, exp.bidding)
    schema = table_schema(seg)
    return table.select([pl.col(c).cast(t) for c, t in schema.items()]).sort(list(KEY_COLUMNS))


def validate(
    table: pl.DataFrame, ads: pl.DataFrame, placements: pl.DataFrame, exp: Experiment
) -> list[str]:
    """Every reason the table must not be published (empty list: fine)."""
    problems: list[str] = []
    schema = table_schema(exp.export.segment_columns)
    if dict(table.schema) != schema:
        got = ", ".join(f"{k}:{v}" for k, v in table.schema.items())
        return [f"schema is [{got}], expected [{', '.join(f'{k}:{v}' for k, v in schema.items())}]"]
    if table.is_empty():
        return ["the table is empty"]
    for col in table.columns:
        if table[col].null_count():
            problems.append(f"{col} has {table[col].null_count()} null(s)")
    for col in [c for c, t in VALUE_COLUMNS.items() if t == pl.Float64()]:
        x = table[col].to_numpy()
        bad = int((~np.isfinite(x)).sum() + (x < 0).sum())
        if bad:
            problems.append(f"{col} has {bad} NaN/inf/negative value(s)")
    for col in ("pctr", "pcvr"):
        if (table[col] > 1).any():
            problems.append(f"{col} has values above 1")
    cfg, eps = exp.bidding, 1e-9
    for col in ("bid_multiplier", "placement_weight"):
        out = table.filter(
            (pl.col(col) < cfg.min_multiplier - eps) | (pl.col(col) > cfg.max_multiplier + eps)
        ).height
        if out:
            problems.append(f"{out} {col}(s) outside [{cfg.min_multiplier}, {cfg.max_multiplier}]")
    if cfg.bid_cap and (table["bid"] > cfg.bid_cap + eps).any():
        problems.append(f"bids above bid_cap {cfg.bid_cap}")
    if (table["bid"] < cfg.bid_floor - eps).any():
        problems.append(f"bids below bid_floor {cfg.bid_floor}")
    if not (table["bid"] > 0).any():
        problems.append("every bid is 0")
    if table.select(KEY_COLUMNS).is_duplicated().any():
        problems.append("duplicate (ad_id, placement, segment) rows")
    wanted = ads.select("ad_id").join(placements, how="cross")
    lacking = wanted.join(table.select("ad_id", "placement"), on=["ad_id", "placement"], how="anti")
    if lacking.height:
        ex = ", ".join(f"{a}/{p}" for a, p in lacking.head(3).iter_rows())
        problems.append(f"{lacking.height} active (ad, placement) pair(s) missing, e.g. {ex}")
    return problems


def guardrail(champion: Champion, previous: dict[str, Any] | None, margin: float) -> str | None:
    """Why the champion must not replace the published model's table, or None."""
    if not previous:
        return None
    old = previous.get("model", {})
    if old.get("metric") != champion.metric:
        log.warning("guardrail: the published table has no %s to compare with", champion.metric)
        return None
    before, now = float(old["metric_value"]), champion.metric_value
    if not np.isfinite(now):
        return f"champion {champion.name} v{champion.version} has no finite {champion.metric}"
    if now > before * (1 + margin):
        return (
            f"champion {champion.name} v{champion.version} {champion.metric} {now:.6g} is worse "
            f"than the published {old.get('name')} v{old.get('version')} ({before:.6g}) by more "
            f"than {margin:.1%}"
        )
    return None


def bid_histogram(table: pl.DataFrame) -> Figure:
    """Bids per cell, one histogram per placement."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for (placement,), part in table.group_by("placement", maintain_order=True):
        ax.hist(part["bid"].to_numpy(), bins=60, histtype="step", label=str(placement))
    ax.set(xlabel="bid (market-price units)", ylabel="cells", title="Exported bids")
    ax.legend(fontsize=8)
    return fig


def _manifest(
    exp: Experiment,
    champion: Champion,
    params: BidParams,
    multiplier: float,
    start: str | None,
    rows: pl.DataFrame,
    table: pl.DataFrame,
    run_id: str,
) -> dict[str, Any]:
    cfg = exp.bidding
    pacing = None
    if params.paced:
        keys = ("pacing_slots", "pacing_gain", "pacing_step", "pacing_slot_cap")
        pacing = {"multiplier": multiplier, "min": cfg.pacing_min, "max": cfg.pacing_max}
        pacing |= {k.removeprefix("pacing_"): getattr(cfg, k) for k in keys}
    stamp = datetime.now(UTC)
    return {
        "version": f"{stamp:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}",
        "table": TABLE_FILE,
        "csv": CSV_FILE,
        "schema": {k: str(v) for k, v in table.schema.items()},
        "model": asdict(champion),
        "model_run_id": champion.run_id,
        "export_run_id": run_id,
        "strategy": {
            "name": exp.export.strategy,
            "params": params.as_dict(),
            "pacing": pacing,
            "budget_fraction": exp.export.budget_fraction,
            "bounds": {
                k: getattr(cfg, k)
                for k in ("min_multiplier", "max_multiplier", "bid_floor", "bid_cap")
            },
        },
        "valid_from": start,
        "segment_columns": list(exp.export.segment_columns),
        "scored_rows": rows.height,
        "cells_by_source": dict(table.group_by("source").len().sort("source").iter_rows()),
        "config_hash": exp.digest(),
        "code_version": code_version(),
        "created_at": stamp.isoformat(timespec="seconds"),
    }


def run(exp: Experiment) -> StageSummary:
    """Score, build, validate, guard and publish the bid table (or refuse with a reason)."""
    import mlflow

    from pipeline.tracking import log_metrics, stage_run

    layout = Layout.of(exp)
    summary = StageSummary("export", output=str(layout.exports))
    champion, model = load_champion(exp, layout)
    log.info("export: champion %s v%s (%s)", champion.name, champion.version, champion.uri)
    rows = score(model, scoring_rows(exp, layout))
    start = valid_from(layout, rows)
    grid, ads, placements = candidate_grid(exp, layout, rows, start)
    has_conversion = bool(load_spec(layout.features).get("has_conversion", True))
    params, multiplier = strategy_params(exp, rows, has_conversion)
    table = build_table(exp, rows, grid, params)
    tags = {"model_name": champion.name, "model_version": champion.version}
    with stage_run(exp, "export", tags=tags | {"strategy": exp.export.strategy}) as run:
        bids = table["bid"].to_numpy()
        log_metrics(
            {
                "export_rows": table.height,
                "export_active_ads": ads.height,
                "export_bid_mean": float(np.nanmean(bids)) if bids.size else np.nan,
                "export_bid_max": float(np.nanmax(bids)) if bids.size else np.nan,
                "export_cells_with_rows": float((table["rows"] > 0).mean()),
                f"export_champion_{champion.metric}": champion.metric_value,
            }
        )
        previous = published_manifest(layout.exports)
        problems = validate(table, ads, placements, exp)
        margin = exp.export.guardrail_margin
        reason = f"validation failed: {'; '.join(problems)}" if problems else None
        reason = reason or guardrail(champion, previous, margin)
        if reason:
            mlflow.set_tags({"export_status": "refused", "refused_reason": reason[:5000]})
            kept = f"published table kept ({layout.exports})" if previous else "nothing published"
            raise ExportRefused(f"export refused: {reason}; {kept}")
        manifest = _manifest(exp, champion, params, multiplier, start, rows, table, run.info.run_id)
        final = publish(table, manifest, layout.root, exp.export.keep_versions)
        mlflow.log_artifacts(str(final), "export")
        mlflow.log_figure(bid_histogram(table), "plots/bid_histogram.png")
        mlflow.set_tag("export_status", "published")
    log.info("export: published %s (%d rows, strategy %s)", final, table.height, params.strategy)
    summary.rows_in, summary.rows_out = rows.height, table.height
    summary.notes = {"model": f"{champion.name}/v{champion.version}", "version": final.name}
    return summary
