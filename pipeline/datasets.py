"""Feature tables -> model inputs, following the `FeatureSpec` instead of hard-coded columns."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from features.history import table_matrix
from features.interest_store import INTEREST_BLOCK_EVENTS, interest_table
from features.spec import (
    INTEREST,
    INTEREST_EVENTS,
    INTEREST_VECTORS,
    ITEM_TABLE,
    Feature,
    FeatureSpec,
)
from models.matrix import FeatureMatrix, KeyedVectors, MatrixChunks
from pipeline.io import DataError, read_manifest, read_table

if TYPE_CHECKING:  # the MLflow model imports this module: keep its imports light
    from pipeline.stage import Layout


def load_spec(layout: Layout) -> FeatureSpec:
    """The feature tables' spec, after checking their manifest."""
    read_manifest(layout.features)
    return FeatureSpec.load(layout.feature_spec)


def _dense(series: pl.Series) -> np.ndarray:
    """(N, D) float32 from an Array / List column (Parquet fixed-size lists or pandas cells)."""
    if isinstance(series.dtype, pl.List):  # e.g. after a round trip through pandas / MLflow
        width = series.list.len().max()
        series = series.cast(pl.List(pl.Float32)).cast(pl.Array(pl.Float32, int(width or 0)))
    if isinstance(series.dtype, pl.Array):
        return series.to_numpy().astype(np.float32, copy=False)
    if series.dtype.is_integer():
        raise ValueError(
            f"'{series.name}' holds codes, not vectors: read the feature table with "
            "pipeline.datasets (load_split, SplitTable), which expands them"
        )
    return np.asarray(series.to_list(), dtype=np.float32)


def load_tables(layout: Layout, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """The (M + 1, d) lookup tables the spec's inputs index, by name (row = code, 0 the
    padding): the item table of the item features, and each keyed embedding's table."""
    return {name: table_matrix(read_table(layout.features, name).collect()) for name in spec.tables}


def _codes(series: pl.Series, width: int) -> np.ndarray:
    """(N, width) int64 item codes from an Int column (width 1) or an Array / List column."""
    if isinstance(series.dtype, pl.List):  # e.g. after a round trip through pandas / MLflow
        series = series.cast(pl.List(pl.Int64)).cast(pl.Array(pl.Int64, width))
    out = np.asarray(series.to_numpy(), dtype=np.int64).reshape(len(series), -1)
    if out.shape[1] != width:
        raise ValueError(f"item column '{series.name}' has {out.shape[1]} codes, spec: {width}")
    return np.ascontiguousarray(out)


def _keyed(series: pl.Series, feature: Feature, tables: Mapping[str, np.ndarray]) -> KeyedVectors:
    """A keyed embedding's codes (and its table where the caller has it)."""
    codes = series.fill_null(0).to_numpy().astype(np.int64, copy=False)
    table = tables.get(feature.table or "")
    if table is not None and (table.shape[1] != feature.dim or codes.max(initial=0) >= len(table)):
        raise ValueError(
            f"'{feature.name}': codes up to {codes.max(initial=0)} into a table of shape "
            f"{table.shape}, spec width {feature.dim}"
        )
    return KeyedVectors(codes, table, int(feature.dim or 0))


def to_matrix(
    frame: pl.DataFrame,
    spec: FeatureSpec,
    model: str,
    tables: Mapping[str, np.ndarray] | None = None,
) -> FeatureMatrix:
    """Slice the spec's columns of `frame` into a FeatureMatrix for `model` (`tables`:
    `load_tables`, needed to fit a model on item features or keyed embeddings, not to score
    with one: a fitted model holds its own copies)."""
    tables = tables or {}
    cols = spec.by_kind(model)
    cat_names = tuple(f.name for f in cols["categorical"])
    num_names = tuple(f.name for f in cols["numeric"])
    item_names = tuple(f.name for f in cols["item"])
    missing = [c for c in (*cat_names, *num_names, *item_names) if c not in frame.columns]
    if missing:
        raise ValueError(f"feature frame lacks spec columns: {', '.join(missing[:10])}")
    n = frame.height
    cards = tuple(int(f.cardinality or 0) for f in cols["categorical"])
    categorical = (
        frame.select(cat_names).to_numpy().astype(np.int64)
        if cat_names
        else np.zeros((n, 0), dtype=np.int64)
    )
    categorical = (
        np.where(categorical < np.array(cards), categorical, 0) if cat_names else categorical
    )
    numeric = (
        frame.select([pl.col(c).cast(pl.Float32) for c in num_names]).to_numpy()
        if num_names
        else np.zeros((n, 0), dtype=np.float32)
    )
    embeddings = {
        f.name: _dense(frame[f.name]) if f.table is None else _keyed(frame[f.name], f, tables)
        for f in cols["embedding"]
    }
    items = {f.name: _codes(frame[f.name], int(f.dim or 1)) for f in cols["item"]}
    return FeatureMatrix(
        categorical=np.ascontiguousarray(categorical),
        numeric=np.ascontiguousarray(numeric, dtype=np.float32),
        categorical_names=cat_names,
        numeric_names=num_names,
        cardinalities=cards,
        embeddings=embeddings,
        items=items,
        item_vectors=tables.get(ITEM_TABLE) if items else None,
    )


@functools.lru_cache(maxsize=1)
def _interest_states(directory: Path, stamp: tuple[int, int]) -> np.ndarray:
    """The interest store's (E + 1, dim) table of a features folder, rebuilt once per process
    (`stamp`: the events file's mtime and size, so a rewritten folder is read again)."""
    events = read_table(directory, INTEREST_EVENTS).collect()
    vectors = read_table(directory, INTEREST_VECTORS).collect()
    try:
        return interest_table(events, vectors, INTEREST_BLOCK_EVENTS)
    except ValueError as exc:
        raise DataError(
            f"{directory / INTEREST_EVENTS}.parquet: {exc}; rerun `make features`"
        ) from None


def with_interest(frame: pl.DataFrame, directory: Path) -> pl.DataFrame:
    """`frame` (rows of a feature table in `directory`) with its interest codes expanded into
    the vectors (`features.interest_store`); unchanged without a code column."""
    if INTEREST not in frame.columns or not frame.schema[INTEREST].is_integer():
        return frame
    path = directory / f"{INTEREST_EVENTS}.parquet"
    info = path.stat() if path.is_file() else None  # none: read_table says what is missing
    table = _interest_states(directory, (info.st_mtime_ns, info.st_size) if info else (0, 0))
    codes = frame[INTEREST].fill_null(0).to_numpy()
    if len(codes) and (codes.min() < 0 or codes.max() >= len(table)):
        raise DataError(
            f"{directory}: '{INTEREST}' codes outside [0, {len(table)}): the features folder "
            "is inconsistent; rerun `make features`"
        )
    return frame.with_columns(pl.Series(INTEREST, table[codes]))


def load_split(layout: Layout, split: str) -> pl.DataFrame:
    """One split's feature table (train, valid or test), in memory."""
    return with_interest(read_table(layout.features, split).collect(), layout.features)


def load_meta(layout: Layout, spec: FeatureSpec, split: str) -> pl.DataFrame:
    """One split's meta columns (ids, slices, labels, money), every row: what scoring reads."""
    return read_table(layout.features, split).select(spec.meta).collect()


@dataclass(frozen=True)
class SplitTable:
    """One split's feature table on disk, read a few columns or a slab of rows at a time, for
    tables larger than memory."""

    path: Path
    rows: int

    @classmethod
    def of(cls, layout: Layout, split: str) -> SplitTable:
        rows = read_table(layout.features, split).select(pl.len()).collect().item()
        return cls(layout.features / f"{split}.parquet", int(rows))

    def columns(self, names: list[str]) -> pl.DataFrame:
        """Every row of some columns (labels, ids)."""
        frame = pl.scan_parquet(self.path).select(names).collect()
        return with_interest(frame, self.path.parent)

    def slab(self, i: int, names: list[str], slab_rows: int) -> pl.DataFrame:
        """Rows [i * slab_rows, (i + 1) * slab_rows) of some columns."""
        frame = pl.scan_parquet(self.path).slice(i * slab_rows, slab_rows).select(names).collect()
        return with_interest(frame, self.path.parent)

    def slabs(self, slab_rows: int) -> list[int]:
        """The slabs' row counts."""
        full, rest = divmod(self.rows, slab_rows)
        return [slab_rows] * full + ([rest] if rest else [])


def spec_columns(spec: FeatureSpec, model: str) -> list[str]:
    """The columns `to_matrix` reads for `model`."""
    cols = spec.by_kind(model)
    return [f.name for kind in ("categorical", "numeric", "embedding", "item") for f in cols[kind]]


def chunked_matrix(
    table: SplitTable,
    spec: FeatureSpec,
    model: str,
    tables: Mapping[str, np.ndarray] | None,
    slab_rows: int,
) -> MatrixChunks:
    """The split's model input as slabs, each read and converted when asked for."""
    names = spec_columns(spec, model)

    def load(i: int) -> FeatureMatrix:
        return to_matrix(table.slab(i, names, slab_rows), spec, model, tables)

    return MatrixChunks(table.slabs(slab_rows), load)


def sampled_matrix(
    table: SplitTable,
    spec: FeatureSpec,
    model: str,
    keep: np.ndarray | None,
    tables: Mapping[str, np.ndarray] | None,
    slab_rows: int,
) -> FeatureMatrix:
    """The model input of the rows where `keep` (a boolean mask over the split; None: every
    row) is true, read slab by slab, so only the kept rows' input is ever held whole."""
    names = spec_columns(spec, model)
    parts, start = [], 0
    for i, size in enumerate(table.slabs(slab_rows)):
        rows = table.slab(i, names, slab_rows)
        if keep is not None:
            rows = rows.filter(pl.Series(keep[start : start + size]))
        parts.append(to_matrix(rows, spec, model, tables))
        start += size
    if not parts:  # an empty split
        return to_matrix(table.slab(0, names, slab_rows), spec, model, tables)
    return FeatureMatrix.concat(parts)


def labels(frame: pl.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Click (all rows) and conversion (None when the data has no conversions) as float32."""
    click = frame["click"].to_numpy().astype(np.float32)
    if not spec.has_conversion:
        return click, None
    return click, frame["conversion"].fill_null(0).to_numpy().astype(np.float32)
