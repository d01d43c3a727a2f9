"""Criteo display-ad logs (Kaggle 2014 `dac` format) -> canonical raw tables.

Reads tab-separated rows without a header: `label, I1..I13, C1..C26` (integers may be empty or
negative; categoricals are 32-bit hex hashes, may be empty). `data.path` is one file or a folder
of `train* / dev*|val* / test*` files.

Mapping: label -> click; I1..I13 -> num_i1..num_i13 (Float64, empty = null); C1..C26 ->
cat_c1..cat_c26 (String, empty = null). Criteo has no user, ad, time, conversion or text fields:
those columns stay null, users / ads / behaviour are empty.

Time: Kaggle `train.txt` rows are in time order but carry no clock (7 days in ~45M rows; the
8k-row sample covers a few minutes). We keep row order as ts (SYNTHETIC_EPOCH + 1 s per row, file
order train, valid, test) and split by the dataset's own files (a missing valid file is a
seeded draw from train) or, for a single file, by a seeded random draw (`[split]`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.split import SplitConfig
from pipeline.sources.common import (
    Ingested,
    file_splits,
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
    integer_check,
    read_delimited,
    to_int,
)

INTEGERS = [f"I{i}" for i in range(1, 14)]
CATEGORICALS = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label", *INTEGERS, *CATEGORICALS]


def read(path: Path, cfg: IngestConfig) -> Table:
    """One Criteo file, checked: label 0/1 and integer counts, else quarantined."""
    table = read_delimited(path, separator="\t", columns=COLUMNS, max_rows=cfg.max_rows)
    checks = [binary_check("label"), *(integer_check(c) for c in INTEGERS)]
    return checked(table, checks, cfg)


def mapped(table: Table) -> pl.DataFrame:
    return table.frame.select(
        pl.col("label").str.strip_chars().cast(pl.Int8).alias("click"),
        *(to_int(c).cast(pl.Float64).alias(f"num_{c.lower()}") for c in INTEGERS),
        *(nullable(c).alias(f"cat_{c.lower()}") for c in CATEGORICALS),
    )


def load(path: Path, cfg: IngestConfig, split: SplitConfig) -> Ingested:
    files = split_files(path, (".tsv", ".txt", ".csv"))
    mode = resolve_split_mode(cfg, has_files="all" not in files, has_time=False)
    tables = {name: read(p, cfg) for name, p in files.items()}
    frames = [mapped(t) for t in tables.values()]
    imps = pl.concat(frames)
    splits = file_splits(
        [(name, f.height) for name, f in zip(tables, frames, strict=True)], mode, split
    )
    imps = imps.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("impression_id"), synthetic_ts()
    )
    if splits is not None:
        imps = imps.with_columns(splits)
    return Ingested(
        impressions=imps,
        sources=list(tables.values()),
        inputs={f"criteo_{name}": p for name, p in files.items()},
        split_mode=mode,
        has_timestamp=False,
    )
