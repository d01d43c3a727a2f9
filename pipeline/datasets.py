"""Feature tables -> model inputs, following `feature_spec.json` instead of hard-coded columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.matrix import FeatureMatrix
from pipeline.io import read_manifest, read_table

SPEC_FILE = "feature_spec.json"


def load_spec(features_dir: Path) -> dict[str, Any]:
    read_manifest(features_dir)
    return json.loads((Path(features_dir) / SPEC_FILE).read_text())


def spec_columns(spec: dict[str, Any], model: str) -> dict[str, list[dict[str, Any]]]:
    """The spec's feature entries by kind, keeping those meant for `model` (all by default)."""
    out: dict[str, list[dict[str, Any]]] = {"categorical": [], "numeric": [], "embedding": []}
    for entry in spec["features"]:
        if model in entry.get("models", [model]):
            out[entry["kind"]].append(entry)
    return out


def _dense(series: pl.Series) -> np.ndarray:
    """(N, D) float32 from an Array / List column (Parquet fixed-size lists or pandas cells)."""
    if isinstance(series.dtype, pl.List):  # e.g. after a round trip through pandas / MLflow
        width = series.list.len().max()
        series = series.cast(pl.List(pl.Float32)).cast(pl.Array(pl.Float32, int(width or 0)))
    if isinstance(series.dtype, pl.Array):
        return series.to_numpy().astype(np.float32, copy=False)
    return np.asarray(series.to_list(), dtype=np.float32)


def to_matrix(frame: pl.DataFrame, spec: dict[str, Any], model: str) -> FeatureMatrix:
    """Slice the spec's columns of `frame` into a FeatureMatrix for `model`."""
    cols = spec_columns(spec, model)
    cat_names = tuple(e["name"] for e in cols["categorical"])
    num_names = tuple(e["name"] for e in cols["numeric"])
    missing = [c for c in (*cat_names, *num_names) if c not in frame.columns]
    if missing:
        raise ValueError(f"feature frame lacks spec columns: {', '.join(missing[:10])}")
    n = frame.height
    cards = tuple(int(e["cardinality"]) for e in cols["categorical"])
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
    embeddings = {e["name"]: _dense(frame[e["name"]]) for e in cols["embedding"]}
    return FeatureMatrix(
        categorical=np.ascontiguousarray(categorical),
        numeric=np.ascontiguousarray(numeric, dtype=np.float32),
        categorical_names=cat_names,
        numeric_names=num_names,
        cardinalities=cards,
        embeddings=embeddings,
    )


def load_split(features_dir: Path, split: str) -> pl.DataFrame:
    return read_table(features_dir, split).collect()


def labels(frame: pl.DataFrame, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    click = frame["click"].to_numpy().astype(np.float32)
    if not spec.get("has_conversion", True):
        return click, None
    return click, frame["conversion"].fill_null(0).to_numpy().astype(np.float32)
