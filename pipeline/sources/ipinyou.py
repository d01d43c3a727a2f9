"""iPinYou RTB logs in the FNN one-hot encoding (make-ipinyou-data) -> canonical raw tables.

Reads `train.fm.txt` / `test.fm.txt` (`label idx:1 idx:1 ...`, space-separated, one active
feature per field) and the dictionary `featindex.fm.txt` (`field:value<TAB>index`), all from
the folder `data.path`. The dictionary is metadata: any malformed line in it is an error. A
data row with the wrong number of features, a token that is not `<index>:1`, an index missing
from the dictionary or a field given twice is quarantined.

Mapping (decoded through the dictionary): creative -> ad_id (the bucket `other` -> null),
advertiser -> ads.advertiser_id, slotid -> placement, useragent -> device, every other field ->
cat_<field> (weekday, hour, ip, region, city, adexchange, domain, slot size / visibility /
format, slotprice bucket). No users, conversions, prices or text in this encoding. The rows
are not in time order and carry only weekday and hour: ts is synthetic and the split comes from
the files (valid drawn from train, seeded) or a seeded random draw.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl

from features.split import SplitConfig
from pipeline.io import DataError
from pipeline.sources.common import (
    Ingested,
    clean_name,
    file_splits,
    ids_table,
    resolve_split_mode,
    split_files,
    synthetic_ts,
)
from pipeline.sources.ingest_config import IngestConfig
from pipeline.sources.reader import (
    LINE,
    Table,
    binary_check,
    checked,
    integer_check,
    pattern_check,
    read_delimited,
)

CANONICAL = {"creative": "ad_id", "advertiser": "advertiser_id", "slotid": "placement",
             "useragent": "device"}  # fmt: skip


def read_dictionary(path: Path, cfg: IngestConfig) -> pl.DataFrame:
    """`index -> (field, value)`; strict: a bad dictionary line is an error."""
    table = read_delimited(path, separator="\t", columns=["feature", "index"])
    checks = [integer_check("index"), pattern_check("feature", r"^[^:]+:", "<field>:<value>")]
    table = checked(table, checks, replace(cfg, on_bad_rows="error"))
    parts = pl.col("feature").str.splitn(":", 2)
    out = table.frame.select(
        pl.col("index").str.strip_chars().cast(pl.Int64),
        parts.struct.field("field_0").alias("field"),
        parts.struct.field("field_1").alias("value"),
    )
    if out["index"].is_duplicated().any():
        raise DataError(f"{path}: duplicate feature indices")
    return out


def read(path: Path, dictionary: pl.DataFrame, cfg: IngestConfig) -> tuple[Table, pl.DataFrame]:
    """A data file, checked, and its rows decoded to one column per field."""
    n_fields = dictionary["field"].n_unique()
    slots = [f"f{i}" for i in range(1, n_fields + 1)]
    table = read_delimited(path, separator=" ", columns=["label", *slots], max_rows=cfg.max_rows)
    long = (
        table.frame.select(LINE, *slots)
        .unpivot(index=LINE, value_name="token")
        .with_columns(pl.col("token").str.extract(r"^(\d+):1$").cast(pl.Int64).alias("index"))
        .join(dictionary, on="index", how="left")
    )
    flags = long.group_by(LINE).agg(
        pl.col("field").is_null().any().alias("_unknown"),
        pl.col("field").drop_nulls().is_duplicated().any().alias("_twice"),
    )
    table = replace(
        table, frame=table.frame.join(flags, on=LINE, how="left", maintain_order="left")
    )
    checks = [
        binary_check("label"),
        *(pattern_check(s, r"^\d+:1$", "<index>:1") for s in slots),
        (pl.col("_unknown"), "feature index not in the dictionary"),
        (pl.col("_twice"), "a field appears twice in the row"),
    ]
    table = checked(table, checks, cfg)
    table = replace(table, frame=table.frame.drop("_unknown", "_twice"))
    wide = (
        long.filter(pl.col(LINE).is_in(table.frame[LINE].implode()))
        .pivot(on="field", index=LINE, values="value")
        .join(table.frame.select(LINE, "label"), on=LINE)
        .sort(LINE)
    )
    return table, wide


def mapped(wide: pl.DataFrame) -> pl.DataFrame:
    fields = [c for c in wide.columns if c not in (LINE, "label")]
    ids = {"ad_id", "advertiser_id"}
    return wide.select(
        pl.col("label").str.strip_chars().cast(pl.Int8).alias("click"),
        *(
            (pl.col(f).str.to_integer(strict=False) if CANONICAL[f] in ids else pl.col(f)).alias(
                CANONICAL[f]
            )
            for f in fields
            if f in CANONICAL
        ),
        *(pl.col(f).alias(f"cat_{clean_name(f)}") for f in fields if f not in CANONICAL),
    )


def load(path: Path, cfg: IngestConfig, split: SplitConfig) -> Ingested:
    folder = path.parent if path.is_file() else path
    dict_path = folder / "featindex.fm.txt"
    dictionary = read_dictionary(dict_path, cfg)
    files = split_files(folder, (".fm.txt",))
    mode = resolve_split_mode(cfg, has_files="all" not in files, has_time=False)
    read_files = {name: read(p, dictionary, cfg) for name, p in files.items()}
    frames = [mapped(wide) for _, wide in read_files.values()]
    imps = pl.concat(frames, how="diagonal").with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("impression_id"), synthetic_ts()
    )
    splits = file_splits([(n, f.height) for n, f in zip(files, frames, strict=True)], mode, split)
    if splits is not None:
        imps = imps.with_columns(splits)
    ads_cols = ["advertiser_id"] if "advertiser_id" in imps.columns else []
    return Ingested(
        impressions=imps.drop(ads_cols),
        ads=ids_table(imps, "ad_id", ads_cols) if "ad_id" in imps.columns else None,
        sources=[t for t, _ in read_files.values()],
        inputs={"ipinyou_featindex": dict_path, **{f"ipinyou_{n}": p for n, p in files.items()}},
        split_mode=mode,
        has_timestamp=False,
    )
