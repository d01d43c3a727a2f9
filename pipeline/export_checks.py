"""What must hold before the export publishes a table: its schema (`table_schema`), its
values (`validate`) and the champion's metric against the published model's (`guardrail`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipeline.config import Experiment
from pipeline.export_grid import KEY_COLUMNS

log = logging.getLogger("adctr.export")

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


@dataclass(frozen=True)
class Champion:
    """The registered model version the table comes from and its guardrail metric (the
    champion metric of `evaluate`, `mode` min or max: which way is better)."""

    kind: str
    name: str
    version: str
    run_id: str
    uri: str
    metric: str
    metric_value: float
    mode: str = "min"


def table_schema(segment_columns: tuple[str, ...]) -> dict[str, pl.DataType]:
    """Columns and types of bid_weights, in order."""
    keys: dict[str, pl.DataType] = {"ad_id": pl.Int64(), "placement": pl.String()}
    keys |= {"segment": pl.String()} | {c: pl.String() for c in segment_columns}
    return keys | VALUE_COLUMNS


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
    worse = now > before * (1 + margin) if champion.mode == "min" else now < before * (1 - margin)
    if worse:
        return (
            f"champion {champion.name} v{champion.version} {champion.metric} {now:.6g} is worse "
            f"than the published {old.get('name')} v{old.get('version')} ({before:.6g}) by more "
            f"than {margin:.1%}"
        )
    return None
