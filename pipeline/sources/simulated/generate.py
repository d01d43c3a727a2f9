"""Simulate the ad marketplace. Reads the experiment config. Writes `raw/` (ads, users,
behaviour, impressions) and `oracle/` (true click / conversion probabilities and the hidden
subtopics, which no feature job reads).

Runs only for `data.source = "simulated"`; any other source is a one-line error that names the
stage to run instead (`raw` picks the source by itself).
"""

from __future__ import annotations

import logging

import polars as pl

from features import schema
from pipeline.config import ConfigError, Experiment
from pipeline.io import check_schema, write_tables
from pipeline.sources.simulated import SOURCE
from pipeline.sources.simulated.market import simulate_market
from pipeline.stage import Layout, StageSummary

log = logging.getLogger(__name__)


def describe(tables: dict[str, pl.DataFrame]) -> dict[str, float]:
    """Headline figures of a simulated market (logged and put in the manifest)."""
    imp = tables["impressions"]
    clicks = int(imp["click"].sum())
    return {
        "impressions": imp.height,
        "ads": tables["ads"].height,
        "users": tables["users"].height,
        "behaviour_events": tables["behaviour"].height,
        "ctr": clicks / max(imp.height, 1),
        "cvr_after_click": int(imp["conversion"].sum()) / max(clicks, 1),
        "oracle_mean_p_click": float(tables["oracle"]["p_click"].mean()),
    }


def run(exp: Experiment) -> StageSummary:
    """Simulate the market of `exp.market` (seed `data.seed`) into `raw/` and `oracle/`."""
    if exp.data.source != SOURCE:
        raise ConfigError(
            f"`generate` runs the simulator only, and data.source = '{exp.data.source}': "
            "run `raw` (it picks the source) or `ingest`"
        )
    layout = Layout.of(exp)
    summary = StageSummary("generate", output=str(layout.raw))
    log.info(
        "simulating %s impressions, %s ads, %s users (seed %s)",
        f"{exp.market.n_impressions:,}",
        f"{exp.market.n_ads:,}",
        f"{exp.market.n_users:,}",
        exp.data.seed,
    )
    tables = simulate_market(exp.market, seed=exp.data.seed)
    for name, expected in schema.RAW_TABLES.items():
        check_schema(tables[name], expected, f"simulated {name}")
    stats = describe(tables)
    extra = {
        "source": SOURCE,
        "split_mode": "time",
        "has_text": True,
        "has_conversion": True,
        "has_timestamp": True,
        "stats": stats,
    }
    write_tables(
        layout.oracle,
        {
            "impressions": tables["oracle"],
            "ads_hidden": tables["ads_hidden"],
            "user_tastes": tables["user_tastes"],
        },
        config_digest=exp.digest(),
        extra={"note": "ground truth of the simulator; never read by feature jobs"},
    )
    write_tables(
        layout.raw,
        {name: tables[name] for name in schema.RAW_TABLES},
        config_digest=exp.digest(),
        extra=extra,
    )
    log.info("market: %s", ", ".join(f"{k}={v:.4g}" for k, v in stats.items()))
    summary.rows_out = summary.rows_in = tables["impressions"].height
    summary.notes = {"ctr": f"{stats['ctr']:.4f}", "cvr": f"{stats['cvr_after_click']:.4f}"}
    return summary
