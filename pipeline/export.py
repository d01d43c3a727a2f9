"""Publish the bid / placement weight table for the ad server.

Reads the champion model version (`models:/adctr-<exp>-<kind>@champion`, see
`pipeline.registry`), the most recent feature rows (`features/<export.score_splits>.parquet` +
their `FeatureSpec`), raw `ads` and `users`, and the table published before (for the
guardrail). Writes `exports/` through `pipeline.publish` (a symlink to
`export-versions/<version>/` swapped in one rename: readers see the old table or the new one,
never a mix) and one MLflow run (tag stage=export) with the table, the manifest and a
histogram of bids.

Steps: score the recent rows with the champion; average the calibrated pCTR / pCVR into a grid
of (active ad, placement, user segment) cells with a fallback for cells without rows
(`pipeline.export_grid`); tune the configured strategy's bid level on the same rows replayed
as an auction stream (`export.budget_fraction` of their logged cost); compute values, bids and
placement weights (`models.bidding.bid_table`); validate; check the guardrail (the champion
metric of `evaluate`, against the published model's); publish. A refusal raises
`ExportRefused` (a DataError: the CLI prints one line and exits 2) and leaves the published
table untouched.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from models.bidding import BidParams, bid_table, frame_value, ortb_lambda, split_strategy
from models.replay import Auctions, pacing_multipliers, tune
from pipeline import registry
from pipeline.config import Experiment
from pipeline.datasets import load_spec
from pipeline.export_checks import Champion, guardrail, table_schema, validate
from pipeline.export_grid import (
    KEY_COLUMNS,
    ad_terms,
    candidate_grid,
    cell_estimates,
    score,
    scoring_rows,
    valid_from,
)
from pipeline.io import MANIFEST, DataError, code_version, read_manifest
from pipeline.lineage import check_lineage, check_same_run
from pipeline.publish import CSV_FILE, TABLE_FILE, publish, published_manifest
from pipeline.stage import Layout, StageSummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("adctr.export")


class ExportRefused(DataError):
    """The new table failed validation or the guardrail; the published table is untouched."""


def champion_version(exp: Experiment, layout: Layout) -> Champion:
    """The champion version from the registry and its value of the champion metric
    (`registry.ranking_metric`: `evaluate.champion_metric`, else the CTR logloss)."""
    from mlflow import MlflowClient

    from pipeline.tracking import use_experiment

    use_experiment(exp)
    found = registry.find_champion(exp.name, layout, exp.train.models)
    barred = registry.no_champion_reason(layout)
    if barred:
        raise DataError(f"export refused: `evaluate` crowned no champion ({barred})")
    if found is None:
        raise DataError(
            f"no '{registry.CHAMPION}' alias on {registry.model_name(exp.name, '*')}; "
            "run `make evaluate` first"
        )
    kind, mv = found
    metrics = MlflowClient().get_run(mv.run_id).data.metrics
    metric, mode = registry.ranking_metric(exp.evaluate, [metrics])
    name, uri = registry.model_name(exp.name, kind), registry.champion_uri(exp.name, kind)
    value = float(metrics.get(metric, np.nan))
    return Champion(kind, name, str(mv.version), mv.run_id, uri, metric, value, mode)


def check_inputs(layout: Layout) -> None:
    """Refuse a stale `evaluation/`: the champion's model and predictions must be one run over
    the features on disk (else `make train`), and `evaluation/` built from those features and
    predictions (else `make evaluate`). Nothing evaluated yet: the champion lookup says so."""
    if not (layout.evaluation / MANIFEST).is_file():
        return
    kind = registry.champion_kind(layout)
    if kind and (layout.model_dir(kind) / MANIFEST).is_file():
        for out in (layout.model_dir(kind), layout.prediction_dir(kind)):
            check_lineage(out, {"features": layout.features}, "make train")
        check_same_run(layout.model_dir(kind), layout.prediction_dir(kind), "make train")
    if "embeddings" in (read_manifest(layout.features).get("inputs") or {}):
        # the text features must come from the embeddings (and the encoder) on disk now
        check_lineage(layout.features, {"embeddings": layout.embeddings}, "make features")
    recorded = read_manifest(layout.evaluation).get("inputs") or {}
    scored = [n.removeprefix("predictions_") for n in recorded if n.startswith("predictions_")]
    upstream = {f"predictions_{k}": layout.prediction_dir(k) for k in scored}
    check_lineage(layout.evaluation, {"features": layout.features} | upstream, "make evaluate")


def load_champion(exp: Experiment, layout: Layout) -> tuple[Champion, Any]:
    """The champion version (`champion_version`) and its loaded pyfunc model."""
    import mlflow

    champion = champion_version(exp, layout)
    return champion, mlflow.pyfunc.load_model(champion.uri).unwrap_python_model()


def strategy_params(
    exp: Experiment, rows: pl.DataFrame, has_conversion: bool
) -> tuple[BidParams, float]:
    """Tune the configured strategy on the scored rows replayed as an auction stream.

    Returns the parameters and, for a paced strategy, the pacing multiplier to start from: the
    median multiplier the controller held over that replay (1 when nothing could be tuned).
    """
    cfg, name = exp.bidding, exp.export.strategy
    base, paced = split_strategy(name, cfg.paced_base)
    terms = ad_terms(rows)
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
        # the encoder behind the text features, the one the champion was trained with
        "encoder": read_manifest(Layout.of(exp).features).get("encoder"),
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
    check_inputs(layout)
    champion, model = load_champion(exp, layout)
    log.info("export: champion %s v%s (%s)", champion.name, champion.version, champion.uri)
    spec = load_spec(layout)
    rows = score(model, scoring_rows(exp, layout))
    start = valid_from(spec, rows)
    grid, ads, placements = candidate_grid(exp, layout, rows, start)
    params, multiplier = strategy_params(exp, rows, spec.has_conversion)
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
                "export_cells_with_rows": float(table["rows"].gt(0).mean() or np.nan),
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
        final = publish(
            table, manifest, layout.exports, layout.export_versions, exp.export.keep_versions
        )
        mlflow.log_artifacts(str(final), "export")
        mlflow.log_figure(bid_histogram(table), "plots/bid_histogram.png")
        mlflow.set_tag("export_status", "published")
    log.info("export: published %s (%d rows, strategy %s)", final, table.height, params.strategy)
    summary.rows_in, summary.rows_out = rows.height, table.height
    summary.notes = {"model": f"{champion.name}/v{champion.version}", "version": final.name}
    return summary
