"""The model input: column arrays sliced out of a feature table, as the models consume them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FeatureMatrix:
    """Columnar model input. Row i of every array is the same impression.

    categorical: (N, C) int64 codes, 0 reserved for unseen / missing; `cardinalities[j]` counts
    the codes of column j including 0. numeric: (N, K) float32 (NaN = missing). embeddings:
    name -> (N, D) float32 dense vectors (text embeddings, user interest vectors). items:
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
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
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
