"""Feature tables -> model inputs, following the `FeatureSpec` instead of hard-coded columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from features.history import table_matrix
from features.spec import ITEM_TABLE, Feature, FeatureSpec
from models.matrix import FeatureMatrix, KeyedVectors
from pipeline.io import read_manifest, read_table

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


def load_split(layout: Layout, split: str) -> pl.DataFrame:
    """One split's feature table (train, valid or test), in memory."""
    return read_table(layout.features, split).collect()


def labels(frame: pl.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Click (all rows) and conversion (None when the data has no conversions) as float32."""
    click = frame["click"].to_numpy().astype(np.float32)
    if not spec.has_conversion:
        return click, None
    return click, frame["conversion"].fill_null(0).to_numpy().astype(np.float32)
