"""Avazu mobile-ad CTR logs (Kaggle 2014) -> canonical raw tables.

Reads comma-separated rows of 24 columns `id, click, hour, C1, banner_pos, site_*, app_*,
device_*, C14..C21`; a header line is optional per file (the 9k sample has it only in train).
`data.path` is one file or a folder of `train* / dev*|val* / test*` files.

Mapping: impression_id = row number (file order; Avazu's random 64-bit `id` is dropped);
hour (YYMMDDHH) -> ts (exact to the hour; rows within an hour share it); banner_pos ->
position; device_type -> device;
placement = "site:<site_id>" or, for app traffic (site_id 85f751fd), "app:<app_id>";
user_id = device_id, or for the anonymous device_id a99f214a the pair device_ip + device_model
(the usual Avazu user proxy; hex -> Int64, stable); every other field -> cat_<name>. Avazu has
no ad id, conversions or text: ad_id / conversion / text stay null, ads and behaviour are empty.

Split: the dataset's own files when given a folder (split_mode files), else by time.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.schema import TS
from features.split import SplitConfig
from pipeline.sources.common import (
    Ingested,
    file_splits,
    hex_id,
    ids_table,
    nullable,
    resolve_split_mode,
    split_files,
)
from pipeline.sources.ingest_config import IngestConfig
from pipeline.sources.reader import (
    Table,
    binary_check,
    checked,
    integer_check,
    pattern_check,
    read_delimited,
    to_int,
)

COLUMNS = [
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]  # fmt: skip
CATEGORICALS = [
    "C1", "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_model", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
]  # fmt: skip
ANONYMOUS_DEVICE = "a99f214a"
APP_SITE = "85f751fd"  # site_id of app traffic
HEX8 = r"^[0-9a-f]{8}$"


def hour() -> pl.Expr:
    """YYMMDDHH -> Datetime (strptime needs minutes)."""
    return (pl.col("hour").str.strip_chars() + "00").str.strptime(TS, "%y%m%d%H%M", strict=False)


def read(path: Path, cfg: IngestConfig) -> Table:
    table = read_delimited(path, separator=",", columns=COLUMNS, header=None, max_rows=cfg.max_rows)
    checks = [
        binary_check("click"),
        (
            ~pl.col("hour").str.contains(r"^\d{8}$") | hour().is_null(),
            "column 'hour' is not YYMMDDHH",
        ),
        integer_check("banner_pos"),
        pattern_check("device_id", HEX8, "an 8-digit hex id"),
        pattern_check("device_ip", HEX8, "an 8-digit hex id"),
        pattern_check("device_model", HEX8, "an 8-digit hex id"),
    ]
    return checked(table, checks, cfg)


def mapped(table: Table) -> pl.DataFrame:
    anonymous = pl.col("device_id") == ANONYMOUS_DEVICE
    user_hex = (
        pl.when(anonymous)
        .then(pl.col("device_ip") + pl.col("device_model"))
        .otherwise(pl.col("device_id"))
    )
    placement = (
        pl.when(pl.col("site_id") == APP_SITE)
        .then(pl.lit("app:") + pl.col("app_id"))
        .otherwise(pl.lit("site:") + pl.col("site_id"))
    )
    return table.frame.with_columns(user_hex.alias("_user")).select(
        pl.col("id")
        .str.to_integer(dtype=pl.UInt64)
        .reinterpret(signed=True)
        .alias("impression_id"),
        hour().alias("ts"),
        hex_id("_user").alias("user_id"),
        placement.alias("placement"),
        to_int("banner_pos").cast(pl.Int32).alias("position"),
        nullable("device_type").alias("device"),
        pl.col("click").str.strip_chars().cast(pl.Int8).alias("click"),
        *(nullable(c).alias(f"cat_{c.lower()}") for c in CATEGORICALS),
    )


def load(path: Path, cfg: IngestConfig, split: SplitConfig) -> Ingested:
    files = split_files(path, (".csv", ".txt"))
    mode = resolve_split_mode(cfg, has_files="all" not in files, has_time=True)
    tables = {name: read(p, cfg) for name, p in files.items()}
    frames = [mapped(t) for t in tables.values()]
    imps = pl.concat(frames).with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("impression_id")
    )
    splits = file_splits([(n, f.height) for n, f in zip(tables, frames, strict=True)], mode, split)
    if splits is not None:
        imps = imps.with_columns(splits)
    users = ids_table(imps, "user_id", ["device"])
    return Ingested(
        impressions=imps,
        users=users,
        sources=list(tables.values()),
        inputs={f"avazu_{name}": p for name, p in files.items()},
        split_mode=mode,
        has_timestamp=True,
    )
