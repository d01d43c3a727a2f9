"""The model input: column arrays sliced out of a feature table, as the models consume them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class KeyedVectors:
    """An embedding column stored once per key: `codes` (N,) int rows into `table` ((M + 1, D)
    float32, row 0 the zero padding). Behaves as the (N, D) matrix `table[codes]` where a model
    asks for rows, so per-row memory is one int. `table` is None where the caller does not have
    it (scoring with a fitted model, which keeps its own copy: `with_table`)."""

    codes: np.ndarray
    table: np.ndarray | None
    dim: int

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.codes), self.dim)

    def __getitem__(self, idx: np.ndarray | slice) -> KeyedVectors:
        """Rows `idx` (index array, boolean mask or slice): their codes, the same table."""
        return KeyedVectors(self.codes[idx], self.table, self.dim)

    def with_table(self, table: np.ndarray | None) -> KeyedVectors:
        return KeyedVectors(self.codes, table, self.dim)

    def dense(self) -> np.ndarray:
        """The (N, D) float32 rows: a gather from the table."""
        if self.table is None:
            raise ValueError("keyed vectors without their table: nothing to gather")
        return np.take(self.table, self.codes, axis=0)


def keyed_tables(embeddings: dict[str, Any], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The tables of the keyed embeddings among `names`, float32: the copies a model keeps at
    fit, so it scores rows that carry only the codes."""
    tables = {}
    for name in names:
        values = embeddings[name]
        if isinstance(values, KeyedVectors):
            if values.table is None:
                raise ValueError(f"keyed embedding '{name}' without its table: pass tables")
            tables[name] = np.ascontiguousarray(values.table, dtype=np.float32)
    return tables


def fitted_table(tables: dict, name: str):
    """A model's own table (numpy or torch) of keyed embedding `name`; an error when the model
    was fitted on its rows."""
    if name not in tables:
        raise ValueError(f"embedding '{name}' comes as codes, but the model has no table")
    return tables[name]


@dataclass(frozen=True)
class FeatureMatrix:
    """Columnar model input. Row i of every array is the same impression.

    categorical: (N, C) int64 codes, 0 reserved for unseen / missing; `cardinalities[j]` counts
    the codes of column j including 0. numeric: (N, K) float32 (NaN = missing). embeddings:
    name -> (N, D) float32 dense vectors (user interest vectors) or `KeyedVectors` (the ad's
    text embedding, stored once per ad). items:
    name -> (N, w) int64 codes into `item_vectors` ((M + 1, d) float32, row 0 the padding),
    the impressed ad's item (w = 1), then the user's recent items (in that order: the neural
    model reads them so); `item_vectors` is shared by all rows (None where the caller does not
    have it, e.g. scoring with a fitted model that holds its own copy).
    """

    categorical: np.ndarray
    numeric: np.ndarray
    categorical_names: tuple[str, ...]
    numeric_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    embeddings: dict[str, np.ndarray | KeyedVectors] = field(default_factory=dict)
    items: dict[str, np.ndarray] = field(default_factory=dict)
    item_vectors: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.categorical.shape[0]
        per_row = [*self.embeddings.values(), *self.items.values()]
        if self.numeric.shape[0] != n or any(e.shape[0] != n for e in per_row):
            raise ValueError("FeatureMatrix arrays have different row counts")
        if self.categorical.shape[1] != len(self.categorical_names):
            raise ValueError("categorical columns and names differ in count")
        if self.numeric.shape[1] != len(self.numeric_names):
            raise ValueError("numeric columns and names differ in count")

    def __len__(self) -> int:
        return self.categorical.shape[0]

    @classmethod
    def concat(cls, parts: Sequence[FeatureMatrix]) -> FeatureMatrix:
        """The rows of `parts` in order (same columns and tables; at least one part)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]

        def stack(values: list) -> np.ndarray | KeyedVectors:
            if isinstance(values[0], KeyedVectors):
                codes = np.concatenate([v.codes for v in values])
                return KeyedVectors(codes, values[0].table, values[0].dim)
            return np.concatenate(values)

        return cls(
            categorical=np.concatenate([p.categorical for p in parts]),
            numeric=np.concatenate([p.numeric for p in parts]),
            categorical_names=first.categorical_names,
            numeric_names=first.numeric_names,
            cardinalities=first.cardinalities,
            embeddings={k: stack([p.embeddings[k] for p in parts]) for k in first.embeddings},
            items={k: np.concatenate([p.items[k] for p in parts]) for k in first.items},
            item_vectors=first.item_vectors,
        )

    def take(self, idx: np.ndarray) -> FeatureMatrix:
        """Rows `idx` (an index array or boolean mask) of every array."""
        return FeatureMatrix(
            categorical=self.categorical[idx],
            numeric=self.numeric[idx],
            categorical_names=self.categorical_names,
            numeric_names=self.numeric_names,
            cardinalities=self.cardinalities,
            embeddings={k: v[idx] for k, v in self.embeddings.items()},
            items={k: v[idx] for k, v in self.items.items()},
            item_vectors=self.item_vectors,
        )


class MatrixChunks:
    """A FeatureMatrix too large to hold at once, as consecutive slabs of rows: `chunks[i]`
    loads slab i (rows `offsets[i]` to `offsets[i + 1]`), `len(chunks)` is the number of slabs
    and `chunks.rows` the number of rows. Every slab has the same columns and tables."""

    def __init__(self, sizes: Sequence[int], load: Callable[[int], FeatureMatrix]) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        self.offsets = tuple(np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)]).tolist())
        self._load = load

    @property
    def rows(self) -> int:
        return self.offsets[-1]

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> FeatureMatrix:
        part = self._load(i)
        if len(part) != self.sizes[i]:
            raise ValueError(f"slab {i} has {len(part)} rows, expected {self.sizes[i]}")
        return part

    def __iter__(self) -> Iterator[FeatureMatrix]:
        return (self[i] for i in range(len(self)))


def rows_of(x: FeatureMatrix | MatrixChunks) -> int:
    return x.rows if isinstance(x, MatrixChunks) else len(x)


def first_part(x: FeatureMatrix | MatrixChunks) -> FeatureMatrix:
    """The matrix itself, or a chunked matrix's first slab (for its columns and tables)."""
    if isinstance(x, MatrixChunks):
        if not len(x):
            raise ValueError("a chunked matrix without slabs")
        return x[0]
    return x
