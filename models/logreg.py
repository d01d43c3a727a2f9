"""Reference logistic regression (scikit-learn): one for clicks on all impressions, one for
conversions on clicked impressions; pCTCVR = pCTR * pCVR. The yardstick the big models must beat.

Inputs: numerics standardised with the fit rows' mean / std (NaN -> 0 after standardising, plus
a missing indicator for each column with gaps in the fit rows), the categorical codes one-hot in
a hashed space of 2**hash_bits columns (field and code mixed by splitmix64: deterministic), and
the dense embeddings as they are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from models.matrix import FeatureMatrix, KeyedVectors, fitted_table, keyed_tables
from models.sampling import check_rate, corrected

log = logging.getLogger(__name__)
WEIGHTS_FILE = "weights.npz"
META_FILE = "logreg.json"
TABLE_PREFIX = "table__"  # the keyed embeddings' tables in the npz, by embedding name
DESIGN_CHUNK = 32_768  # rows per design block (one large block is many times slower to build)


@dataclass(frozen=True)
class LogRegConfig:
    C: float = 1.0  # inverse L2 strength, as scikit-learn's
    max_iter: int = 200  # lbfgs iterations
    tol: float = 1e-4
    hash_bits: int = 18  # the hashed one-hot ids span 2**hash_bits columns
    text: bool = True  # take the embedding columns the spec gives this model
    max_train_rows: int = 100_000  # seeded subsample of the CTR fit rows above this; 0 = all
    # share of the train negatives loaded to fit on (predictions recalibrated,
    # models.sampling); None: derived from train.max_in_memory_rows (models.sizing)
    negative_rate: float | None = None

    def __post_init__(self) -> None:
        if self.C <= 0 or self.tol <= 0:
            raise ValueError(f"C and tol must be > 0, got {self.C} and {self.tol}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if not 1 <= self.hash_bits <= 26:
            raise ValueError(f"hash_bits must lie in [1, 26], got {self.hash_bits}")
        if self.max_train_rows < 0:
            raise ValueError(f"max_train_rows must be >= 0, got {self.max_train_rows}")
        if self.negative_rate is not None:
            check_rate(self.negative_rate)


def hash_codes(categorical: np.ndarray, bits: int) -> np.ndarray:
    """(N, C) codes -> (N, C) column indices in [0, 2**bits): splitmix64 of (field, code)."""
    fields = np.arange(categorical.shape[1], dtype=np.uint64)
    z = (fields << np.uint64(40)) ^ categorical.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(64 - bits)).astype(np.int64)


def _row_blocks(n: int) -> Iterator[np.ndarray]:
    """Row indices 0..n-1 in blocks of `DESIGN_CHUNK`."""
    for start in range(0, n, DESIGN_CHUNK):
        yield np.arange(start, min(start + DESIGN_CHUNK, n))


def _with_dense(dense: np.ndarray, onehot: sparse.csr_matrix) -> sparse.csr_matrix:
    """[dense | onehot] as CSR, each row's dense values first (zeros kept as explicit
    entries: they add exact zeros to every product, so X @ w and X.T @ r are unchanged)."""
    n, d = dense.shape
    shape = (n, d + onehot.shape[1])
    shape_fits_int32 = shape[1] < 2**31
    counts = np.diff(onehot.indptr)
    indptr = (np.arange(n + 1, dtype=np.int64) * d + onehot.indptr).astype(np.int64)
    total = int(indptr[-1])
    hashed_at = np.arange(onehot.nnz, dtype=np.int64) + (np.repeat(np.arange(n), counts) + 1) * d
    is_dense = np.ones(total, dtype=bool)
    is_dense[hashed_at] = False
    data = np.empty(total, dtype=np.float64)
    indices = np.empty(total, dtype=np.int32 if shape_fits_int32 else np.int64)
    data[is_dense], indices[is_dense] = dense.ravel(), np.tile(np.arange(d), n)
    data[hashed_at], indices[hashed_at] = onehot.data, onehot.indices + d
    return sparse.csr_matrix((data, indices, indptr), shape=shape)


class LogRegCTR:
    """scikit-learn style: settings in `__init__`, `fit(...) -> self`, `predict_proba`.

    `num_threads` is kept for the common model interface (lbfgs on a binary task runs in one
    process); it is saved with the model and `load` may override it.
    """

    def __init__(
        self,
        config: LogRegConfig | None = None,
        random_state: int = 0,
        num_threads: int | None = None,
    ) -> None:
        self.config = config
        self.random_state = random_state
        self.num_threads = num_threads

    def _cfg(self) -> LogRegConfig:
        return self.config or LogRegConfig()

    def _design(self, x: FeatureMatrix) -> sparse.csr_matrix:
        """The model's input matrix: [standardised numerics | missing flags | embeddings |
        hashed one-hot ids], float64 CSR, stacked from blocks of `DESIGN_CHUNK` rows."""
        if len(x) <= DESIGN_CHUNK:
            return self._design_block(x)
        blocks = [self._design_block(x.take(idx)) for idx in _row_blocks(len(x))]
        return sparse.vstack(blocks, format="csr")

    def _design_block(self, x: FeatureMatrix) -> sparse.csr_matrix:
        """`_design` of a few rows, built straight from its arrays (no COO pass)."""
        num = x.numeric.astype(np.float64)
        flags = np.isnan(num[:, self.missing_index_]).astype(np.float64)
        z = np.nan_to_num((num - self.mean_) / self.scale_, nan=0.0)
        blocks = [
            z,
            flags,
            *(self._embedding(k, x).astype(np.float64) for k in self.embedding_names_),
        ]
        n, width = len(x), 1 << self._cfg().hash_bits
        cols = hash_codes(x.categorical, self._cfg().hash_bits).ravel()
        rows = np.repeat(np.arange(n), x.categorical.shape[1])
        onehot = sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(n, width))
        onehot.sum_duplicates()  # two fields hashed to one column add up
        return _with_dense(np.hstack(blocks) if blocks else np.zeros((n, 0)), onehot)

    def _fit_scaling(self, x: FeatureMatrix) -> None:
        num = x.numeric.astype(np.float64)
        seen = ~np.isnan(num)
        self.missing_index_ = [int(j) for j in np.flatnonzero((~seen).any(axis=0))]
        count = np.maximum(seen.sum(axis=0), 1)
        self.mean_ = np.where(seen, num, 0.0).sum(axis=0) / count
        var = np.where(seen, (num - self.mean_) ** 2, 0.0).sum(axis=0) / count
        self.scale_ = np.where(var > 0, np.sqrt(var), 1.0)
        cfg = self._cfg()
        self.embedding_names_ = sorted(x.embeddings) if cfg.text else []
        self.embedding_dims_ = [int(x.embeddings[k].shape[1]) for k in self.embedding_names_]
        self.vector_tables_ = keyed_tables(x.embeddings, self.embedding_names_)

    def _embedding(self, name: str, x: FeatureMatrix) -> np.ndarray:
        """Embedding `name`'s (N, D) rows; a keyed one gathered from the fitted table."""
        values = x.embeddings[name]
        if not isinstance(values, KeyedVectors):
            return values
        return values.with_table(fitted_table(self.vector_tables_, name)).dense()

    def _logreg(self, design: sparse.csr_matrix, y: np.ndarray, name: str) -> dict:
        from sklearn.linear_model import LogisticRegression  # lazy: configs import this module

        cfg = self._cfg()
        est = LogisticRegression(
            C=cfg.C,
            solver="lbfgs",
            max_iter=cfg.max_iter,
            tol=cfg.tol,
            random_state=self.random_state,
        ).fit(design, y.astype(np.int64))
        log.info(
            "%s logistic regression: %d rows, %d lbfgs iterations", name, len(y), est.n_iter_[0]
        )
        return {"coef": est.coef_[0].copy(), "intercept": float(est.intercept_[0])}

    def _rows(self, n: int) -> np.ndarray:
        """The CTR fit rows: all, or a seeded subsample of `max_train_rows` (sorted)."""
        cap = self._cfg().max_train_rows
        if not cap or n <= cap:
            return np.arange(n)
        log.info("logreg: fitting CTR on a seeded subsample of %d of %d train rows", cap, n)
        rng = np.random.default_rng(self.random_state)
        return np.sort(rng.choice(n, size=cap, replace=False))

    def fit(
        self,
        x: FeatureMatrix,
        click: np.ndarray,
        conversion: np.ndarray | None,
        x_valid: FeatureMatrix,
        click_valid: np.ndarray,
        conversion_valid: np.ndarray | None,
        negative_rate: float = 1.0,
    ) -> LogRegCTR:
        """`x_valid` is not used (lbfgs runs to convergence); it keeps the common interface.
        `x` holds every click and the non-clicks sampled at `negative_rate`
        (`models.sampling.negative_sample`; 1.0: every row); `predict_proba` undoes it."""
        self.negative_rate_ = check_rate(negative_rate)
        rows = self._rows(len(x))
        sub = x.take(rows)
        self._fit_scaling(sub)
        self.ctr_ = self._logreg(self._design(sub), click[rows], "ctr")
        self.cvr_ = None
        if conversion is not None:
            clicked = click == 1
            if 0 < conversion[clicked].sum() < clicked.sum():
                design = self._design(x.take(clicked))
                self.cvr_ = self._logreg(design, conversion[clicked], "cvr")
        return self

    @staticmethod
    def _prob(weights: dict, design: sparse.csr_matrix) -> np.ndarray:
        logit = design @ weights["coef"] + weights["intercept"]
        return 1.0 / (1.0 + np.exp(-logit))

    def predict_proba(self, x: FeatureMatrix) -> np.ndarray:
        """(N, 3): pCTR, pCVR (NaN without a CVR model), pCTCVR; in chunks of rows, so the
        design matrix stays small."""
        out = np.full((len(x), 3), np.nan)
        for idx in _row_blocks(len(x)):
            design = self._design_block(x.take(idx))
            out[idx, 0] = corrected(self._prob(self.ctr_, design), self.negative_rate_)
            if self.cvr_ is not None:
                out[idx, 1] = self._prob(self.cvr_, design)
        out[:, 2] = out[:, 0] * out[:, 1]
        return out

    def save(self, directory: Path) -> None:
        """JSON settings + numpy arrays in an npz (no pickle)."""
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"mean": self.mean_, "scale": self.scale_, "ctr_coef": self.ctr_["coef"]}
        if self.cvr_ is not None:
            arrays["cvr_coef"] = self.cvr_["coef"]
        arrays |= {TABLE_PREFIX + k: v for k, v in self.vector_tables_.items()}
        np.savez(directory / WEIGHTS_FILE, **arrays)
        meta = {
            "config": asdict(self._cfg()),
            "random_state": self.random_state,
            "num_threads": self.num_threads,
            "negative_rate": self.negative_rate_,
            "missing_index": self.missing_index_,
            "embedding_names": self.embedding_names_,
            "embedding_dims": self.embedding_dims_,
            "ctr_intercept": self.ctr_["intercept"],
            "cvr_intercept": None if self.cvr_ is None else self.cvr_["intercept"],
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path, num_threads: int | None = None) -> LogRegCTR:
        """The saved model; `num_threads` overrides the saved thread count."""
        meta = json.loads((directory / META_FILE).read_text())
        threads = meta.get("num_threads") if num_threads is None else num_threads
        model = cls(LogRegConfig(**meta["config"]), meta["random_state"], threads)
        with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as w:
            model.mean_, model.scale_ = w["mean"], w["scale"]
            model.ctr_ = {"coef": w["ctr_coef"], "intercept": meta["ctr_intercept"]}
            model.cvr_ = None
            if meta["cvr_intercept"] is not None:
                model.cvr_ = {"coef": w["cvr_coef"], "intercept": meta["cvr_intercept"]}
            model.vector_tables_ = {
                k.removeprefix(TABLE_PREFIX): w[k] for k in w.files if k.startswith(TABLE_PREFIX)
            }
        model.negative_rate_ = float(meta.get("negative_rate", 1.0))
        model.missing_index_ = meta["missing_index"]
        model.embedding_names_ = meta["embedding_names"]
        model.embedding_dims_ = meta["embedding_dims"]
        return model
