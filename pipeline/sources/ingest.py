"""Map an external dataset into the canonical raw schema. Reads the files at `data.path` in the
format of `data.source`. Writes `raw/` (ads, users, behaviour, impressions + manifest) and, when
rows were rejected, `quarantine/ingest_<source>.parquet` (file, line, reason, text).

Adapters (one module each in `pipeline.sources`): criteo, avazu, ali_ccp, mind, ipinyou,
generic. Each returns an `Ingested`; this module checks it against the schema, accounts for
every source record (rows_in = rows_out + rows_quarantined) and publishes atomically. Manifest
extras: `source`, `split_mode` (time | files | random), `has_text`, `has_conversion`,
`has_timestamp`, `ingest` (record counts and per-table notes). Impressions may carry `cat_*`
(String) and `num_*` (Float64) context columns, and `split` (train | valid | test) when
split_mode is not time.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import polars as pl

from features.schema import RAW_TABLES
from features.split import SplitConfig
from pipeline.atomic import atomic_file
from pipeline.config import ConfigError, Experiment
from pipeline.io import DataError, check_schema, write_tables
from pipeline.sources import ali_ccp, avazu, criteo, generic, ipinyou, mind
from pipeline.sources.common import Ingested, raw_tables
from pipeline.sources.ingest_config import IngestConfig
from pipeline.sources.simulated import SOURCE as SIMULATED
from pipeline.stage import Layout, StageSummary

log = logging.getLogger(__name__)

Adapter = Callable[[Path, IngestConfig, SplitConfig], Ingested]
ADAPTERS: dict[str, Adapter] = {
    "criteo": criteo.load,
    "avazu": avazu.load,
    "ali_ccp": ali_ccp.load,
    "mind": mind.load,
    "ipinyou": ipinyou.load,
    "generic": generic.load,
}


def check_config(exp: Experiment) -> Path:
    """The input path; a ConfigError naming the key for anything the user must fix."""
    if exp.data.source not in ADAPTERS:
        hint = (
            " (simulated data comes from `raw` or `generate`)"
            if exp.data.source == SIMULATED
            else ""
        )
        raise ConfigError(
            f"data.source = '{exp.data.source}' has no ingest adapter{hint} "
            f"(known: {', '.join(ADAPTERS)})"
        )
    if not exp.data.path:
        raise ConfigError("data.path is empty: set it to the dataset's file or folder")
    # the [ingest] values themselves are checked when the config is built (IngestConfig)
    path = Path(exp.data.path)
    if not path.exists():
        raise ConfigError(
            f"data.path = '{exp.data.path}' does not exist (override with --set data.path=...)"
        )
    return path


def validate(tables: dict[str, pl.DataFrame], where: str) -> None:
    """The contract every adapter must meet, whatever the dataset."""
    for name, schema in RAW_TABLES.items():
        check_schema(tables[name], schema, f"{where}/{name}")
    imps = tables["impressions"]
    if imps.height == 0:
        raise DataError(f"{where}: no impressions left after ingest")
    if imps["impression_id"].is_duplicated().any():
        raise DataError(f"{where}: impression_id is not unique")
    bad_conv = imps.filter(
        pl.col("conversion").is_not_null() & (pl.col("conversion") > pl.col("click"))
    )
    if bad_conv.height:
        raise DataError(f"{where}: {bad_conv.height:,} impressions convert without a click")
    for key, table in (("ad_id", "ads"), ("user_id", "users")):
        known = tables[table][key]
        if known.len() and not imps[key].drop_nulls().is_in(known.implode()).all():
            raise DataError(f"{where}: impressions.{key} values missing from {table}")


def _write_quarantine(target: Path, bad: pl.DataFrame) -> None:
    if bad.height == 0:
        target.unlink(missing_ok=True)  # a stale file from an earlier run would mislead
        return
    buf = io.BytesIO()
    bad.write_parquet(buf)
    atomic_file(target, buf.getvalue())


def run(exp: Experiment) -> StageSummary:
    """Ingest `data.path` as `data.source` into `raw/`; returns the stage summary."""
    summary = StageSummary("ingest")
    path = check_config(exp)
    source = exp.data.source
    result = ADAPTERS[source](path, exp.ingest, exp.split)
    tables = raw_tables(result)
    layout = Layout.of(exp)
    validate(tables, str(layout.raw))
    bad = result.quarantined
    if result.rows_in != result.rows_out + bad.height:  # an adapter bug, never the data's fault
        raise AssertionError(
            f"ingest accounting: {result.rows_in} != {result.rows_out} + {bad.height}"
        )
    imps = tables["impressions"]
    counts = {
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
        "rows_quarantined": bad.height,
        "tables": {name: t.height for name, t in tables.items()},
        "click_rate": round(float(imps["click"].mean()), 6),
        **result.notes,
    }
    if result.has_conversion:
        counts["conversion_rate"] = round(float(imps["conversion"].mean()), 6)
    write_tables(
        layout.raw,
        tables,
        config_digest=exp.digest(),
        inputs=result.inputs,
        extra={
            "source": source,
            "split_mode": result.split_mode,
            "has_text": result.has_text,
            "has_conversion": result.has_conversion,
            "has_timestamp": result.has_timestamp,
            "ingest": counts,
        },
    )
    _write_quarantine(layout.ingest_quarantine(source), bad)
    if bad.height:
        log.warning("%s rows quarantined -> %s", f"{bad.height:,}", layout.quarantine)
    summary.rows_in, summary.rows_out, summary.rows_quarantined = (
        result.rows_in,
        result.rows_out,
        bad.height,
    )
    summary.output = str(layout.raw)
    summary.notes = {
        "source": source,
        "split": result.split_mode,
        "impressions": imps.height,
        "ctr": f"{counts['click_rate']:.4f}",
    }
    if result.has_conversion:
        summary.notes["cvr"] = f"{counts['conversion_rate']:.4f}"
    return summary
