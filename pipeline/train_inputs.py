"""The train stage's inputs: each split in memory (a frame) or on disk (`SplitTable`), turned
into a model's input whole, as a negative sample, or slab by slab, and scored slab by slab.

A split of more than `train.max_in_memory_rows` rows is never held whole: the neural model
streams it (`MatrixChunks`), and the models fitted in memory (LightGBM, logreg) take every
click and a seeded share of the non-clicks (`fit_negative_rate`), recalibrating their
predictions (`models.sampling`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from features.spec import FeatureSpec
from models.matrix import FeatureMatrix, MatrixChunks
from models.sampling import negative_sample
from models.sizing import negative_rate
from pipeline.config import Experiment
from pipeline.datasets import SplitTable, chunked_matrix, labels, sampled_matrix, to_matrix

Source = pl.DataFrame | SplitTable  # a split in memory, or on disk read in slabs
SLAB_MODELS = ("neural",)  # models that train from slabs when a split is too large to hold


def labels_of(source: Source, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray | None]:
    frame = source if isinstance(source, pl.DataFrame) else source.columns(spec.labels)
    return labels(frame, spec)


def neural_labels(source: Source, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """(click, conversion) as the neural model takes them: conversions all zero where the data
    has none (a click-only log)."""
    click, conv = labels_of(source, spec)
    return click, conv if conv is not None else np.zeros_like(click)


def fit_negative_rate(kind: str, exp: Experiment, click: np.ndarray) -> float:
    """The share of train negatives `kind` is fitted on: the model's config, or (None there)
    derived from the data's size; 1.0 for the models that stream instead."""
    if kind in SLAB_MODELS:
        return 1.0
    configured = getattr(exp, kind).negative_rate
    if configured is not None:
        return float(configured)
    rows, positives = len(click), int(np.sum(click > 0))
    return negative_rate(rows, positives, exp.train.max_in_memory_rows)


def fitted_rows(click: np.ndarray, rate: float, seed: int, split: str) -> np.ndarray:
    """Mask of the rows of `split` ("train" or "valid") a model fitted in memory takes: every
    click and a seeded share `rate` of the non-clicks; valid is drawn apart from train. The
    same rows on every engine."""
    return negative_sample(click, rate, seed + {"train": 0, "valid": 1}[split])


def model_input(
    source: Source,
    spec: FeatureSpec,
    kind: str,
    tables: Mapping[str, np.ndarray] | None,
    keep: np.ndarray | None,
    exp: Experiment,
) -> FeatureMatrix | MatrixChunks:
    """The rows of `source` where `keep` (None: all) as `kind`'s input: in memory, or slab by
    slab for a model that streams a split of more than `train.max_in_memory_rows` rows."""
    max_rows, slab_rows = exp.train.max_in_memory_rows, exp.train.slab_rows
    if isinstance(source, pl.DataFrame):
        frame = source if keep is None else source.filter(pl.Series(keep))
        return to_matrix(frame, spec, kind, tables)
    if kind in SLAB_MODELS and keep is None and source.rows > max_rows:
        return chunked_matrix(source, spec, kind, tables, slab_rows)
    return sampled_matrix(source, spec, kind, keep, tables, slab_rows)


def predict(model: Any, source: Source, spec: FeatureSpec, kind: str, slab_rows: int) -> np.ndarray:
    """(N, 3) predictions of every row of `source`, slab by slab from disk."""
    if isinstance(source, pl.DataFrame):
        return model.predict_proba(to_matrix(source, spec, kind))
    parts = [model.predict_proba(x) for x in chunked_matrix(source, spec, kind, None, slab_rows)]
    return np.vstack(parts) if parts else np.zeros((0, 3))


def meta_of(source: Source, spec: FeatureSpec) -> pl.DataFrame:
    """The meta columns (ids, slices, labels) the metrics and the predictions table read,
    every row."""
    if isinstance(source, pl.DataFrame):
        return source
    return source.columns(list(spec.meta))


def head_of(source: Source, spec: FeatureSpec, kind: str, rows: int = 5) -> pd.DataFrame:
    """The first rows of `kind`'s input columns (the logged model's signature example)."""
    names = spec.names(kind)
    if isinstance(source, pl.DataFrame):
        return source.head(rows).select(names).to_pandas()
    return source.slab(0, names, rows).to_pandas()
