"""Simulate the ad marketplace. Reads the experiment config. Writes `raw/` (ads, users,
behaviour, impressions, and query_annotations: an annotation team's noisy labels of up to
`market.n_annotations` distinct queries of the train period) and `oracle/` (true click /
conversion probabilities, the hidden subtopics, the true labels of every distinct query and the
true intent of each impression, which no feature job reads).

Runs only for `data.source = "simulated"`; any other source is a one-line error that names the
stage to run instead (`raw` picks the source by itself).
"""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np
import polars as pl

from features import schema
from features.split import SplitConfig, assign_split
from pipeline.config import ConfigError, Experiment
from pipeline.io import check_schema, write_tables
from pipeline.sources.simulated import SOURCE
from pipeline.sources.simulated.market import simulate_market
from pipeline.sources.simulated.queries import annotate
from pipeline.stage import Layout, StageSummary

log = logging.getLogger(__name__)
ANNOTATION_STREAM = 1  # the annotations' random stream, apart from the market's
ORACLE_TABLES = ("impressions", "ads_hidden", "user_tastes", "queries", "impression_intents")


def train_queries(tables: dict[str, pl.DataFrame], split: SplitConfig) -> list[str]:
    """The distinct queries (sorted) searched before the valid period starts, in impressions
    or behaviour searches; the valid start is the feature job's (`features.split`)."""
    _, bounds = assign_split(tables["impressions"], split)
    if "valid_start" not in bounds:
        return []
    valid_start = datetime.fromisoformat(bounds["valid_start"])
    searched = [
        tables["impressions"].filter(pl.col("ts") < valid_start)["query"],
        tables["behaviour"].filter((pl.col("event") == "search") & (pl.col("ts") < valid_start))[
            "query"
        ],
    ]
    return sorted(pl.concat(searched).drop_nulls().unique().to_list())


def query_annotations(
    tables: dict[str, pl.DataFrame], split: SplitConfig, n: int, seed: int
) -> pl.DataFrame:
    """An annotation team's labels (with label noise) of up to `n` distinct train-period
    queries, drawn with `seed`, sorted by query."""
    rng = np.random.default_rng([seed, ANNOTATION_STREAM])
    texts = train_queries(tables, split)
    chosen = sorted(texts[i] for i in rng.choice(len(texts), min(n, len(texts)), replace=False))
    truth = tables["queries"].filter(pl.col("query").is_in(chosen))
    return annotate(truth, rng)


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
        "distinct_queries": tables["queries"].height,
        "annotations": tables["query_annotations"].height,
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
    tables["query_annotations"] = query_annotations(
        tables, exp.split, exp.market.n_annotations, exp.data.seed
    )
    check_schema(tables["query_annotations"], schema.QUERY_ANNOTATIONS, "query annotations")
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
        {name: tables["oracle" if name == "impressions" else name] for name in ORACLE_TABLES},
        config_digest=exp.digest(),
        extra={"note": "ground truth of the simulator; never read by feature jobs"},
    )
    write_tables(
        layout.raw,
        {name: tables[name] for name in (*schema.RAW_TABLES, "query_annotations")},
        config_digest=exp.digest(),
        extra=extra,
    )
    log.info("market: %s", ", ".join(f"{k}={v:.4g}" for k, v in stats.items()))
    summary.rows_out = summary.rows_in = tables["impressions"].height
    summary.notes = {"ctr": f"{stats['ctr']:.4f}", "cvr": f"{stats['cvr_after_click']:.4f}"}
    return summary
