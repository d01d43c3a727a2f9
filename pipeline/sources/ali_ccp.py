"""Ali-CCP (Taobao click and conversion logs, torch-rechub CSV layout) -> canonical raw tables.

Reads comma-separated files with a header: `click`, `purchase`, integer-encoded categorical
fields named by Ali-CCP's field ids (`101`, `205`, `109_14`, ...) and dense fields `D<field>`.
`data.path` is one file or a folder of `*train* / *val* / *test*` CSVs (the PaddleRec ESMM
`field:id` text format is not read).

Mapping (Ali-CCP field ids): 101 user -> user_id; 205 item -> ad_id; 206 category ->
ads.category; 207 shop -> ads.advertiser_id; 216 brand -> ads.brand; 124 gender, 125 age,
129 geography -> users.gender / age_bucket / region; click -> click; purchase -> conversion
(a purchase without a click is quarantined); every other field -> cat_<field>, `D*` ->
num_<field>. No timestamps (ts is synthetic, split from the dataset's files or seeded random)
and no text.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.split import SplitConfig
from pipeline.io import DataError
from pipeline.sources.common import (
    Ingested,
    file_splits,
    ids_table,
    nullable,
    resolve_split_mode,
    split_files,
    synthetic_ts,
)
from pipeline.sources.ingest_config import IngestConfig
from pipeline.sources.reader import (
    Table,
    binary_check,
    checked,
    float_check,
    integer_check,
    pattern_check,
    read_delimited,
    to_float,
    to_int,
)

REQUIRED = ("click", "purchase", "101", "205")
ADS_FIELDS = {"207": "advertiser_id", "206": "category", "216": "brand"}
USER_FIELDS = {"124": "gender", "125": "age_bucket", "129": "region"}
MAPPED = {"click", "purchase", "101", "205", *ADS_FIELDS, *USER_FIELDS}


def read(path: Path, cfg: IngestConfig) -> Table:
    table = read_delimited(path, separator=",", header=True, max_rows=cfg.max_rows)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (have {table.columns[:6]}...)")
    dense = [c for c in table.columns if c.startswith("D")]
    checks = [
        binary_check("click"),
        binary_check("purchase"),
        (
            (pl.col("purchase").str.strip_chars() == "1")
            & (pl.col("click").str.strip_chars() == "0"),
            "column 'purchase' is 1 without a click",
        ),
        pattern_check("101", r"^\s*\d+\s*$", "an integer id"),
        pattern_check("205", r"^\s*\d+\s*$", "an integer id"),
        *(integer_check(c) for c in ("207",) if c in table.columns),
        *(float_check(c) for c in dense),
    ]
    return checked(table, checks, cfg)


def mapped(table: Table) -> pl.DataFrame:
    cols = table.columns
    dense = [c for c in cols if c.startswith("D")]
    other = [c for c in cols if c not in MAPPED and c not in dense]
    return table.frame.select(
        pl.col("click").str.strip_chars().cast(pl.Int8),
        pl.col("purchase").str.strip_chars().cast(pl.Int8).alias("conversion"),
        to_int("101").alias("user_id"),
        to_int("205").alias("ad_id"),
        *(
            (to_int(c) if name == "advertiser_id" else nullable(c)).alias(name)
            for c, name in ADS_FIELDS.items()
            if c in cols
        ),
        *(nullable(c).alias(name) for c, name in USER_FIELDS.items() if c in cols),
        *(nullable(c).alias(f"cat_{c.lower()}") for c in other),
        *(to_float(c).alias(f"num_{c[1:].lower()}") for c in dense),
    )


def load(path: Path, cfg: IngestConfig, split: SplitConfig) -> Ingested:
    files = split_files(path, (".csv",))
    mode = resolve_split_mode(cfg, has_files="all" not in files, has_time=False)
    tables = {name: read(p, cfg) for name, p in files.items()}
    frames = [mapped(t) for t in tables.values()]
    if len({tuple(f.columns) for f in frames}) > 1:
        raise DataError(f"{path}: the files do not have the same columns")
    imps = pl.concat(frames).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("impression_id"), synthetic_ts()
    )
    splits = file_splits([(n, f.height) for n, f in zip(tables, frames, strict=True)], mode, split)
    if splits is not None:
        imps = imps.with_columns(splits)
    ads_cols = [c for c in ADS_FIELDS.values() if c in imps.columns]
    user_cols = [c for c in USER_FIELDS.values() if c in imps.columns]
    return Ingested(
        impressions=imps.drop(ads_cols + user_cols),
        ads=ids_table(imps, "ad_id", ads_cols),
        users=ids_table(imps, "user_id", user_cols),
        sources=list(tables.values()),
        inputs={f"ali_ccp_{name}": p for name, p in files.items()},
        split_mode=mode,
        has_timestamp=False,
        has_conversion=True,
    )
