"""Any CSV / TSV / Parquet click log -> canonical raw tables, by the column mapping in the
experiment's `[ingest]` section (see pipeline.config.IngestConfig and the README).

`data.path` is one file, or a folder of `*train* / *valid*|*val*|*dev* / *test*` files of the
same layout. Every mapped column must exist (else a ConfigError naming the key). Row checks:
click (and conversion) must be 0/1 and conversion 1 only with a click; the timestamp must parse;
position, cost and numeric columns must be numbers (empty = null); split_column values must be
train / valid / test. Failing rows are quarantined (see pipeline.sources.reader).

Mapping: ids (user, ad, advertiser) stay as they are when every value is an integer, else they
are numbered 1.. in order of first appearance (deterministic for the same files).
impression_id is the row number. ads get advertiser_id, category, title and description (the
first non-empty value per ad); users get the user ids. categorical_columns -> cat_<name>,
numeric_columns -> num_<name>. Split: split_column, else the folder's files, else time when a
timestamp is mapped, else a seeded random draw (or as set by ingest.split_mode).
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from features.schema import TS
from features.split import SplitConfig
from pipeline.config import ConfigError
from pipeline.io import DataError, check_parquet
from pipeline.sources.common import (
    SPLITS,
    Ingested,
    clean_name,
    factorize,
    file_splits,
    ids_table,
    nullable,
    random_split,
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
    float_check,
    from_frame,
    integer_check,
    read_delimited,
    to_float,
    to_int,
)

SUFFIXES = {"csv": (".csv", ".txt", ".csv.gz"), "tsv": (".tsv", ".txt"), "parquet": (".parquet",)}
STRING_FIELDS = ("placement", "device", "query", "category", "title", "description")
ID_FIELDS = ("user_id", "ad_id", "advertiser_id")

log = logging.getLogger(__name__)


def mapping(cfg: IngestConfig) -> dict[str, str]:
    """`config key -> source column` for every mapped column (not the extras)."""
    keys = ("label_click", "label_conversion", "timestamp", "split_column", *ID_FIELDS,
            *STRING_FIELDS, "position", "cost")  # fmt: skip
    return {k: getattr(cfg, k) for k in keys if getattr(cfg, k)}


def parse_ts(cfg: IngestConfig) -> pl.Expr:
    col = pl.col(cfg.timestamp).str.strip_chars()
    if cfg.timestamp_format in ("unix", "unix_ms"):
        scale = 1_000_000 if cfg.timestamp_format == "unix" else 1_000
        micros = (col.cast(pl.Float64, strict=False) * scale).round().cast(pl.Int64, strict=False)
        return pl.from_epoch(micros, time_unit="us")
    if cfg.timestamp_format:
        fmt = cfg.timestamp_format
        if "%H" in fmt and "%M" not in fmt:  # polars wants minutes with hours (e.g. %y%m%d%H)
            col, fmt = col + "00", fmt + "%M"
        return col.str.strptime(TS, fmt, strict=False)
    return col.str.to_datetime(time_unit="us", strict=False)


def _read(path: Path, cfg: IngestConfig) -> Table:
    if cfg.format == "parquet":
        hint = "is it a complete Parquet file? (ingest.format = parquet)"
        check_parquet(path, hint=hint)
        try:
            frame = pl.read_parquet(path)
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(
                f"{path}: unreadable Parquet ({exc.__class__.__name__}); {hint}"
            ) from None
        return from_frame(path, frame, cfg.max_rows)
    separator = cfg.separator or ("\t" if cfg.format == "tsv" else ",")
    return read_delimited(
        path,
        separator=separator,
        columns=cfg.column_names or None,
        header=cfg.has_header,
        quote_char=cfg.quote_char or None,
        max_rows=cfg.max_rows,
    )


def read(path: Path, cfg: IngestConfig) -> Table:
    table = _read(path, cfg)
    wanted = {**mapping(cfg), **{f"categorical_columns[{c}]": c for c in cfg.categorical_columns},
              **{f"numeric_columns[{c}]": c for c in cfg.numeric_columns}}  # fmt: skip
    for key, col in wanted.items():
        if col not in table.columns:
            raise ConfigError(
                f"ingest.{key} = '{col}' is not a column of {path} (columns: {table.columns})"
            )
    checks = [binary_check(cfg.label_click)]
    if cfg.label_conversion:
        conv, click = pl.col(cfg.label_conversion), pl.col(cfg.label_click)
        checks += [
            binary_check(cfg.label_conversion),
            (
                (conv.str.strip_chars() == "1") & (click.str.strip_chars() == "0"),
                f"column '{cfg.label_conversion}' is 1 without a click",
            ),
        ]
    if cfg.timestamp:
        checks.append((parse_ts(cfg).is_null(), f"column '{cfg.timestamp}' is not a timestamp"))
    if cfg.split_column:
        checks.append(
            (~pl.col(cfg.split_column).str.strip_chars().is_in(SPLITS),
             f"column '{cfg.split_column}' is not train/valid/test")
        )  # fmt: skip
    if cfg.position:
        checks.append(integer_check(cfg.position))
    checks += [float_check(c) for c in (cfg.cost, *cfg.numeric_columns) if c]
    if cfg.timestamp:  # a line repeated verbatim, its time included, was logged twice (without
        # a time, identical lines can be distinct impressions)
        checks.append((~pl.struct(table.columns).is_first_distinct(), "repeats an earlier line"))
    return checked(table, checks, cfg)


def mapped(frame: pl.DataFrame, cfg: IngestConfig) -> pl.DataFrame:
    names = [clean_name(c) for c in (*cfg.categorical_columns, *cfg.numeric_columns)]
    if len(set(names)) != len(names):
        raise ConfigError(f"ingest.categorical_columns / numeric_columns clash as {names}")
    out = [pl.col(cfg.label_click).str.strip_chars().cast(pl.Int8).alias("click")]
    if cfg.label_conversion:
        out.append(pl.col(cfg.label_conversion).str.strip_chars().cast(pl.Int8).alias("conversion"))
    out.append(parse_ts(cfg).alias("ts") if cfg.timestamp else synthetic_ts())
    if cfg.split_column:
        out.append(pl.col(cfg.split_column).str.strip_chars().alias("split"))
    out += [nullable(getattr(cfg, f)).alias(f) for f in STRING_FIELDS if getattr(cfg, f)]
    if cfg.position:
        out.append(to_int(cfg.position).cast(pl.Int32).alias("position"))
    if cfg.cost:
        out.append(to_float(cfg.cost).alias("cost"))
    out += [nullable(c).alias(f"cat_{clean_name(c)}") for c in cfg.categorical_columns]
    out += [to_float(c).alias(f"num_{clean_name(c)}") for c in cfg.numeric_columns]
    result = frame.select(out)
    for f in ID_FIELDS:
        if getattr(cfg, f):
            result = result.with_columns(factorize(frame, getattr(cfg, f)).alias(f))
    return result.with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("impression_id"))


def load(path: Path, cfg: IngestConfig, split: SplitConfig) -> Ingested:
    if (cfg.title or cfg.description or cfg.category or cfg.advertiser_id) and not cfg.ad_id:
        raise ConfigError("ingest.title / description / category / advertiser_id need ingest.ad_id")
    files = split_files(path, SUFFIXES[cfg.format])
    has_files = bool(cfg.split_column) or "all" not in files
    mode = resolve_split_mode(cfg, has_files=has_files, has_time=bool(cfg.timestamp))
    tables = {name: read(p, cfg) for name, p in files.items()}
    frame = pl.concat([t.frame for t in tables.values()], how="vertical").drop(LINE)
    imps = mapped(frame, cfg)
    if cfg.timestamp and imps.schema["ts"] != TS:  # a zone-aware clock: keep it in UTC
        imps = imps.with_columns(
            pl.col("ts").dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        )
    if mode == "time" and cfg.split_mode == "auto" and imps["ts"].drop_nulls().n_unique() < 3:
        log.warning("fewer than 3 distinct timestamps: split_mode auto splits at random")
        mode = "random"
    if mode == "files" and not cfg.split_column:
        parts = [(n, t.frame.height) for n, t in tables.items()]
        imps = imps.with_columns(file_splits(parts, mode, split))
    elif mode == "random":
        imps = imps.drop("split", strict=False).with_columns(random_split(imps.height, split))
    elif mode == "time":
        imps = imps.drop("split", strict=False)
    ad_cols = [
        c for c in ("advertiser_id", "category", "title", "description") if c in imps.columns
    ]
    ads = ids_table(imps, "ad_id", ad_cols) if cfg.ad_id else None
    users = ids_table(imps, "user_id", []) if cfg.user_id else None
    has_text = bool(ads is not None and any(
        ads[c].drop_nulls().len() for c in ("title", "description") if c in ads.columns
    ))  # fmt: skip
    return Ingested(
        impressions=imps.drop(ad_cols),
        ads=ads,
        users=users,
        sources=list(tables.values()),
        inputs={f"generic_{name}": p for name, p in files.items()},
        split_mode=mode,
        has_timestamp=bool(cfg.timestamp),
        has_conversion=bool(cfg.label_conversion),
        has_text=has_text,
    )
