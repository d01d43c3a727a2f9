"""What every ingest adapter shares: the result type, input file discovery, splits, synthetic
timestamps, id mapping and conforming frames to the canonical raw schema."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from features.schema import ADS, BEHAVIOUR, IMPRESSIONS, TS, USERS
from features.split import SplitConfig
from pipeline.config import ConfigError
from pipeline.io import DataError
from pipeline.sources.ingest_config import IngestConfig
from pipeline.sources.reader import QUARANTINE, Table

SPLITS = ("train", "valid", "test")
# Rows without a clock get ts = SYNTHETIC_EPOCH + row number seconds (file order: train, valid,
# test); the split then comes from the dataset's files or a seeded random draw, never from ts.
SYNTHETIC_EPOCH = datetime(2000, 1, 1)
EXTRA_COLUMNS = {"split": pl.String, "request_id": pl.Int64}
_SPLIT_TOKENS = {
    "train": {"train", "training"},
    "valid": {"dev", "val", "valid", "validation"},
    "test": {"test", "testing"},
}


@dataclass
class Ingested:
    """An adapter's result: raw tables (any subset of columns; conformed later), the accepted
    and rejected source records, and what the dataset has."""

    impressions: pl.DataFrame
    sources: list[Table]
    inputs: dict[str, Path]
    split_mode: str
    has_timestamp: bool
    has_conversion: bool = False
    has_text: bool = False
    ads: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    behaviour: pl.DataFrame | None = None
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def rows_in(self) -> int:
        return sum(t.rows_in for t in self.sources)

    @property
    def rows_out(self) -> int:
        return sum(t.frame.height for t in self.sources)

    @property
    def quarantined(self) -> pl.DataFrame:
        return pl.concat([pl.DataFrame(schema=QUARANTINE), *(t.bad for t in self.sources)])


def split_files(path: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """`{split: file}` from a folder (file names containing train / dev|val / test), or
    `{"all": path}` for a single file."""
    if path.is_file():
        return {"all": path}
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder (set data.path)")
    found: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for p in sorted(path.iterdir()):
        if not p.is_file() or not p.name.endswith(suffixes):
            continue
        tokens = set(re.split(r"[._\-]", p.name.lower()))
        for split, names in _SPLIT_TOKENS.items():
            if tokens & names:
                found[split].append(p)
    for split, files in found.items():
        if len(files) > 1:
            raise DataError(
                f"{path}: several {split} files {[f.name for f in files]}; point "
                "data.path at one file"
            )
    if not found["train"]:
        raise DataError(f"{path}: no train file (*train*{suffixes[0]}) in the folder")
    return {s: files[0] for s, files in found.items() if files}


def resolve_split_mode(cfg: IngestConfig, *, has_files: bool, has_time: bool) -> str:
    """The split mode actually used: the configured one, checked, or the best available."""
    mode = cfg.split_mode
    if mode == "auto":
        return "files" if has_files else "time" if has_time else "random"
    if mode == "files" and not has_files:
        raise ConfigError(
            "ingest.split_mode = 'files' but the dataset has no train/valid/test "
            "files (point data.path at its folder)"
        )
    if mode == "time" and not has_time:
        raise ConfigError("ingest.split_mode = 'time' but the dataset has no timestamps")
    return mode


def random_split(n: int, cfg: SplitConfig, *, test: bool = True) -> pl.Series:
    """Seeded train/valid/test labels; `test=False` draws only train/valid (a test file exists)."""
    u = np.random.default_rng(cfg.random_seed).random(n)
    test_cut = cfg.test_fraction if test else 0.0
    labels = np.where(
        u < test_cut, "test", np.where(u < test_cut + cfg.valid_fraction, "valid", "train")
    )
    return pl.Series("split", labels, dtype=pl.String)


def file_splits(parts: list[tuple[str, int]], mode: str, cfg: SplitConfig) -> pl.Series | None:
    """The `split` column for rows concatenated from files in `parts` order [(split, rows)].

    files: each file's own split; a missing valid file is drawn (seeded) from train rows.
    random: one seeded draw over all rows. time: None (the features stage uses ts).
    """
    n = sum(rows for _, rows in parts)
    if mode == "time":
        return None
    if mode == "random":
        return random_split(n, cfg)
    names = {s for s, _ in parts}
    chunks = []
    for split, rows in parts:
        if split == "train" and "valid" not in names:
            chunks.append(random_split(rows, cfg, test=False))
        else:
            chunks.append(pl.Series("split", [split] * rows, dtype=pl.String))
    return pl.concat(chunks)


def synthetic_ts() -> pl.Expr:
    """An increasing clock for datasets without one: one second per row, in row order."""
    return (pl.lit(SYNTHETIC_EPOCH).cast(TS) + pl.duration(seconds=pl.int_range(pl.len()))).alias(
        "ts"
    )


def hex_id(col: str) -> pl.Expr:
    """A hex hash (<= 16 digits) as Int64: stable across runs and files, no lookup table."""
    return (
        pl.col(col).str.to_integer(base=16, dtype=pl.UInt64, strict=False).reinterpret(signed=True)
    )


def factorize(frame: pl.DataFrame, col: str) -> pl.Series:
    """Int64 ids for a column: integers as they are, anything else numbered 1.. in order of
    first appearance (deterministic for the same input)."""
    values = frame[col].cast(pl.String).str.strip_chars().replace("", None)
    as_int = values.str.to_integer(strict=False)
    if as_int.null_count() == values.null_count():
        return as_int.cast(pl.Int64)
    uniq = values.drop_nulls().unique(maintain_order=True)
    codes = pl.Series(range(1, uniq.len() + 1), dtype=pl.Int64)
    return values.replace_strict(uniq, codes, default=None, return_dtype=pl.Int64)


def nullable(col: str) -> pl.Expr:
    """A String field with empty values as null."""
    return pl.col(col).str.strip_chars().replace("", None)


def conform(frame: pl.DataFrame | None, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Exactly the canonical columns (missing ones null) with their dtypes, then the extras:
    `cat_*` String, `num_*` Float64, `split`, `request_id`."""
    frame = pl.DataFrame() if frame is None else frame
    canonical = [
        (pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t)).alias(c)
        for c, t in schema.items()
    ]
    extras = []
    for c in frame.columns:
        if c in schema:
            continue
        if c.startswith("cat_"):
            extras.append(pl.col(c).cast(pl.String))
        elif c.startswith("num_"):
            extras.append(pl.col(c).cast(pl.Float64))
        elif c in EXTRA_COLUMNS and schema is IMPRESSIONS:
            extras.append(pl.col(c).cast(EXTRA_COLUMNS[c]))
        else:
            raise ValueError(f"column '{c}' is neither canonical nor a cat_/num_ extra")
    if frame.width == 0:
        return pl.DataFrame(schema=schema)
    return frame.select(*canonical, *extras)


def raw_tables(result: Ingested) -> dict[str, pl.DataFrame]:
    """The four canonical tables, conformed; users and ads cover every id in impressions."""
    imps = conform(result.impressions, IMPRESSIONS)
    return {
        "ads": conform(result.ads, ADS),
        "users": conform(result.users, USERS),
        "behaviour": conform(result.behaviour, BEHAVIOUR),
        "impressions": imps,
    }


def ids_table(impressions: pl.DataFrame, key: str, columns: list[str]) -> pl.DataFrame:
    """One row per non-null id with the first seen value of each attribute column."""
    return (
        impressions.filter(pl.col(key).is_not_null())
        .group_by(key, maintain_order=True)
        .agg(pl.col(c).drop_nulls().first() for c in columns)
    )


def clean_name(name: str) -> str:
    """`C14` -> `c14`, `site-id` -> `site_id`: a column name fit for `cat_<name>`."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_") or "col"
