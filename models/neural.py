"""Neural multi-task CTR/CVR estimator: trains, predicts and saves a `DCNESMM` network.

`NeuralCTR` follows scikit-learn's contract (settings in `__init__`, `fit -> self`, learned state
with a trailing underscore, `predict_proba`). Training is seeded and deterministic on CPU, batches
are sliced from column tensors with a seeded permutation, large id tables get sparse gradients
and `SparseAdam` (the optimisers and the epoch live in `models.neural_loop`), and the best
epoch on the validation loss (CTR + CTCVR log loss, what bidding needs) is kept. Settings the
config leaves unset are derived from the data's size at fit (`config_`, `derived_`). `save` /
`load` use safetensors plus a JSON config (no pickle). With item features and an item table (and
`config.attention`), the net gets DIN target attention over the user's recent items; the table
is a buffer of the net, saved with it, so scoring needs only the rows' codes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models.cpu import native_precision
from models.dcn_esmm import DCNESMM, embedding_width, esmm_loss, numeric_statistics
from models.matrix import (
    FeatureMatrix,
    KeyedVectors,
    MatrixChunks,
    first_part,
    fitted_table,
    keyed_tables,
    rows_of,
)
from models.neural_config import NeuralConfig
from models.neural_loop import (
    Shard,
    all_sum,
    auc,
    data_parallel,
    fmt,
    optimizers,
    torch_settings,
    train_epoch,
    world,
)
from models.sizing import neural_defaults, resolve

logger = logging.getLogger(__name__)

FORMAT = "adctr-neural/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VECTORS_FILE = "vectors.safetensors"  # the keyed embeddings' tables, when there are any
DEFAULT_CONFIG = NeuralConfig()


class NeuralCTR:
    """DCN-v2 x ESMM estimator: `predict_proba` returns columns [pctr, pcvr, pctcvr].

    `num_threads` (like scikit-learn's `n_jobs`) is torch's thread count for training and
    prediction, saved with the model and restored by `load`; None leaves torch's own.

    `data_parallel`: fit as one rank of the initialised `torch.distributed` process group, on
    this rank's shard of the train rows (global row g on rank g % world, in memory). The
    derived settings, numeric statistics and output bias come from sums over all ranks; each
    batch is the one-process run's, every rank taking its rows of it, and the gradients are
    summed over the ranks (DDP): the same optimiser steps on the same batches as one process,
    up to float rounding and the dropout masks drawn.
    """

    def __init__(
        self,
        config: NeuralConfig = DEFAULT_CONFIG,
        random_state: int = 0,
        num_threads: int | None = None,
        data_parallel: bool = False,
    ) -> None:
        self.config = config
        self.random_state = random_state
        self.num_threads = num_threads
        self.data_parallel = data_parallel

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {
            "config": self.config,
            "random_state": self.random_state,
            "num_threads": self.num_threads,
            "data_parallel": self.data_parallel,
        }

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: FeatureMatrix | MatrixChunks,
        click: np.ndarray,
        conversion: np.ndarray,
        X_valid: FeatureMatrix | MatrixChunks | None = None,
        click_valid: np.ndarray | None = None,
        conversion_valid: np.ndarray | None = None,
    ) -> NeuralCTR:
        """Train on the whole impression space; early-stop on the valid CTR + CTCVR log loss.
        `X` in memory, or as `MatrixChunks` (slabs loaded in turn, shuffled within and across
        slabs: a table larger than memory); the labels are whole arrays either way."""
        n = rows_of(X)
        y_click, y_conv = _labels(click, conversion, n)
        has_valid = X_valid is not None
        if has_valid:
            if click_valid is None or conversion_valid is None:
                raise ValueError("X_valid needs click_valid and conversion_valid")
            yv_click, yv_conv = _labels(click_valid, conversion_valid, rows_of(X_valid))
        rows, clicks, ctr, cvr, shard = self._totals(X, n, y_click, y_conv)
        derived = neural_defaults(rows, clicks) | {"precision": native_precision()}
        self.config_, self.derived_ = resolve(self.config, derived)
        first = first_part(X)
        self._fit_schema(first, [X] if isinstance(X, FeatureMatrix) else X)
        with torch_settings(self.num_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.module_ = self._build_module()
            self.module_.set_output_bias(ctr, cvr)
            if self.item_table_shape_ is not None:
                self.module_.attention.set_table(torch.from_numpy(first.item_vectors))
            loader = self._loader(X, torch.from_numpy(y_click), torch.from_numpy(y_conv))
            self._train(loader, (X_valid, yv_click, yv_conv) if has_valid else None, shard)
        self.module_.eval()
        logger.info("neural: best epoch %d of %d", self.best_epoch_, len(self.history_))
        return self

    def _totals(
        self, X: FeatureMatrix | MatrixChunks, n: int, click: np.ndarray, conv: np.ndarray
    ) -> tuple[int, int, float, float, Shard | None]:
        """(rows, clicks, click rate, conversions per click, None) of the train rows, or with
        `data_parallel` those of every rank's and this rank's `Shard` (held in memory)."""
        if not self.data_parallel:
            cvr = float(conv.sum() / max(click.sum(), 1.0))
            return n, int(click.sum()), float(click.mean()), cvr, None
        if not isinstance(X, FeatureMatrix):
            raise ValueError("data_parallel trains on shards held in memory, not MatrixChunks")
        rank, size = world()
        local = torch.zeros(size + 2, dtype=torch.float64)  # every rank's rows, clicks, convs
        local[rank], local[size], local[size + 1] = n, float(click.sum()), float(conv.sum())
        summed = all_sum(local).tolist()
        held, clicks, convs = [int(r) for r in summed[:size]], summed[size], summed[size + 1]
        shard = Shard(rank, size, sum(held))
        if held != [Shard(r, size, shard.rows).local_rows for r in range(size)]:  # every rank
            raise ValueError(
                f"data_parallel: the ranks hold {held} rows, not every {size}th row of the "
                f"{shard.rows} from their rank on"
            )
        return shard.rows, int(clicks), clicks / max(shard.rows, 1), convs / max(clicks, 1.0), shard

    def _loader(
        self, X: FeatureMatrix | MatrixChunks, click: torch.Tensor, conv: torch.Tensor
    ) -> tuple[int, Callable[[list[int]], tuple]]:
        """The train rows as groups for `train_epoch`: one of every row in memory, or one per
        slab, the slabs of a window loaded (and joined) when its turn comes."""
        if isinstance(X, FeatureMatrix):
            return 1, lambda _: (*self._columns(X), click, conv)

        def load(slabs: list[int]) -> tuple:
            rows = [torch.arange(X.offsets[i], X.offsets[i + 1]) for i in slabs]
            part = FeatureMatrix.concat([X[i] for i in slabs])
            at = torch.cat(rows)
            return (*self._columns(part), click[at], conv[at])

        return len(X), load

    def _train(
        self,
        train: tuple[int, Callable[[list[int]], tuple]],
        valid: tuple | None,
        shard: Shard | None = None,
    ) -> None:
        """Epoch loop; with `valid`, keep the weights of the epoch with the lowest valid loss
        (CTR + `ctcvr_weight` x CTCVR log loss: bids need calibrated probabilities, and a ranking
        metric such as AUC keeps improving while the probabilities grow overconfident)."""
        cfg = self.config_
        opts = optimizers(self.module_, cfg)
        # data-parallel: the ranks' batches are the one-process run's (`train_epoch`)
        net = self.module_ if shard is None else data_parallel(self.module_)
        # a batch in one part per thread, run at once (`train_epoch`); data-parallel: whole
        parts = torch.get_num_threads() if shard is None else 1
        generator = torch.Generator().manual_seed(self.random_state)
        self.history_: list[dict[str, float]] = []
        best, best_state, since_best = -math.inf, None, 0
        for epoch in range(1, cfg.epochs + 1):
            row = {"epoch": epoch, **train_epoch(net, *train, opts, generator, cfg, shard, parts)}
            if valid is not None:
                row |= self._validate(*valid)
                score = -row["valid_loss"]
                if score > best:
                    best, since_best, self.best_epoch_ = score, 0, epoch
                    best_state = {k: v.clone() for k, v in self.module_.state_dict().items()}
                else:
                    since_best += 1
            self.history_.append(row)
            logger.info("epoch %d/%d %s", epoch, cfg.epochs, fmt(row))
            if since_best >= cfg.patience:
                break
        if best_state is None:
            self.best_epoch_ = len(self.history_)
        else:
            self.module_.load_state_dict(best_state)

    def _fit_schema(self, X: FeatureMatrix, parts: Iterable[FeatureMatrix]) -> None:
        """Columns, widths and tables from `X` (the first slab), numeric statistics over every
        row of `parts`."""
        cfg = self.config_
        self.categorical_names_ = tuple(X.categorical_names)
        self.numeric_names_ = tuple(X.numeric_names)
        self.cardinalities_ = tuple(max(int(c), 1) for c in X.cardinalities)
        self.embedding_widths_ = tuple(
            embedding_width(c, cfg.embedding_dim) for c in self.cardinalities_
        )
        self.embedding_names_ = tuple(sorted(X.embeddings))
        self.embedding_dims_ = tuple(int(X.embeddings[k].shape[1]) for k in self.embedding_names_)
        self.vector_tables_ = {
            k: torch.from_numpy(t)
            for k, t in keyed_tables(X.embeddings, self.embedding_names_).items()
        }
        attend = cfg.attention and len(X.items) == 2
        if attend and X.item_vectors is None:
            raise ValueError("item features without the item table: pass item_vectors")
        self.item_names_ = tuple(X.items) if attend else ()
        self.item_table_shape_ = tuple(X.item_vectors.shape) if attend else None
        numeric = (_tensor(p.numeric, np.float32) for p in parts)
        reduce = all_sum if self.data_parallel else None
        mean, std, missing = numeric_statistics(numeric, cfg.log_numeric, reduce=reduce)
        self.numeric_mean_, self.numeric_std_ = mean.numpy(), std.numpy()
        self.numeric_with_indicator_ = missing.numpy()

    def _build_module(self) -> DCNESMM:
        cfg = self.config_
        module = DCNESMM(
            self.cardinalities_,
            self.embedding_widths_,
            len(self.numeric_names_),
            int(self.numeric_with_indicator_.sum()),
            sum(self.embedding_dims_),
            text_tower=cfg.text_tower,
            cross_layers=cfg.cross_layers,
            cross_rank=cfg.cross_rank,
            mlp_sizes=cfg.mlp_sizes,
            head_sizes=cfg.head_sizes,
            dropout=cfg.dropout,
            sparse_min_rows=cfg.sparse_min_rows,
            log_numeric=cfg.log_numeric,
            numeric_clip=cfg.numeric_clip,
            item_table=self.item_table_shape_,
            attention_dim=cfg.attention_dim,
            attention_hidden=cfg.attention_hidden,
        )
        module.numeric.mean.copy_(torch.from_numpy(self.numeric_mean_))
        module.numeric.std.copy_(torch.from_numpy(self.numeric_std_))
        module.numeric.with_indicator.copy_(torch.from_numpy(self.numeric_with_indicator_))
        return module

    def _validate(
        self, X: FeatureMatrix | MatrixChunks, click: np.ndarray, conv: np.ndarray
    ) -> dict[str, float]:
        ctr_logit, cvr_logit = self._logits(X)
        _, ctr_bce, ctcvr_bce = esmm_loss(
            ctr_logit, cvr_logit, torch.from_numpy(click), torch.from_numpy(conv)
        )
        pctr = torch.sigmoid(ctr_logit).numpy()
        pctcvr = pctr * torch.sigmoid(cvr_logit).numpy()
        return {
            "valid_loss": float(ctr_bce + self.config_.ctcvr_weight * ctcvr_bce),
            "valid_ctr_loss": float(ctr_bce),
            "valid_ctcvr_loss": float(ctcvr_bce),
            "valid_ctr_auc": auc(click, pctr),
            "valid_ctcvr_auc": auc(conv, pctcvr),
        }

    # -------------------------------------------------------------- predict
    def predict_proba(self, X: FeatureMatrix | MatrixChunks) -> np.ndarray:
        """(N, 3) float64 columns [pctr, pcvr, pctcvr] with pctcvr = pctr * pcvr."""
        with torch_settings(self.num_threads):
            ctr_logit, cvr_logit = self._logits(X)
        pctr = torch.sigmoid(ctr_logit).numpy().astype(np.float64)
        pcvr = torch.sigmoid(cvr_logit).numpy().astype(np.float64)
        return np.column_stack([pctr, pcvr, pctr * pcvr])

    def _logits(self, X: FeatureMatrix | MatrixChunks) -> tuple[torch.Tensor, torch.Tensor]:
        if not hasattr(self, "module_"):
            raise RuntimeError("NeuralCTR is not fitted: call fit() or load() first")
        if isinstance(X, MatrixChunks):  # slab by slab; the batches start at each slab's top
            parts = [self._logits(part) for part in X]
            if not parts:
                return torch.zeros(0), torch.zeros(0)
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        codes, numeric, vectors, items = self._columns(X)
        self.module_.eval()
        out_ctr, out_cvr = [], []
        step = self.config_.predict_batch_size
        with torch.inference_mode():
            for s in range(0, codes.shape[0], step):
                ctr, cvr, _ = self.module_(
                    codes[s : s + step],
                    numeric[s : s + step],
                    [v[s : s + step] for v in vectors],
                    [v[s : s + step] for v in items],
                )
                out_ctr.append(ctr)
                out_cvr.append(cvr)
        if not out_ctr:
            return torch.zeros(0), torch.zeros(0)
        return torch.cat(out_ctr), torch.cat(out_cvr)

    def _columns(
        self, X: FeatureMatrix
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Zero-copy tensors over X's arrays (the item codes: the ad's (N,), the history's
        (N, k), when the net attends), after checking X has the fitted columns."""
        if tuple(X.categorical_names) != self.categorical_names_:
            raise ValueError(
                f"categorical columns {X.categorical_names} != fitted {self.categorical_names_}"
            )
        if tuple(X.numeric_names) != self.numeric_names_:
            raise ValueError(f"numeric columns {X.numeric_names} != fitted {self.numeric_names_}")
        if tuple(sorted(X.embeddings)) != self.embedding_names_:
            raise ValueError(f"embeddings {sorted(X.embeddings)} != fitted {self.embedding_names_}")
        vectors = [self._vectors(k, X.embeddings[k]) for k in self.embedding_names_]
        for name, v, d in zip(self.embedding_names_, vectors, self.embedding_dims_, strict=True):
            if v.shape[1] != d:
                raise ValueError(f"embedding '{name}' has width {v.shape[1]}, fitted on {d}")
        if self.item_names_ and tuple(X.items) != self.item_names_:
            raise ValueError(f"item columns {tuple(X.items)} != fitted {self.item_names_}")
        n = len(X)
        codes = _tensor(X.categorical, np.int64).reshape(n, len(self.categorical_names_))
        numeric = _tensor(X.numeric, np.float32).reshape(n, len(self.numeric_names_))
        items = [_tensor(X.items[k], np.int64).reshape(n, -1) for k in self.item_names_]
        if items:
            items[0] = items[0][:, 0]
        return codes, numeric, vectors, items

    def _vectors(self, name: str, values: np.ndarray | KeyedVectors) -> Any:
        """An embedding input: a tensor of rows, or for a keyed embedding a `_Gather` from the
        fitted table (the model's own copy), looked up batch by batch."""
        if not isinstance(values, KeyedVectors):
            return _tensor(values, np.float32)
        return _Gather(_tensor(values.codes, np.int64), fitted_table(self.vector_tables_, name))

    # ---------------------------------------------------------- save / load
    def save(self, directory: str | Path) -> Path:
        """Write `model.safetensors` (weights and buffers) and `config.json`; no pickle."""
        if not hasattr(self, "module_"):
            raise RuntimeError("NeuralCTR is not fitted: nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.module_.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
        if self.vector_tables_:
            save_file(self.vector_tables_, str(directory / VECTORS_FILE))
        meta = {
            "format": FORMAT,
            "random_state": self.random_state,
            "num_threads": self.num_threads,
            "config": dataclasses.asdict(self.config_),
            "categorical_names": list(self.categorical_names_),
            "cardinalities": list(self.cardinalities_),
            "embedding_widths": list(self.embedding_widths_),
            "numeric_names": list(self.numeric_names_),
            "numeric_mean": self.numeric_mean_.tolist(),
            "numeric_std": self.numeric_std_.tolist(),
            "numeric_with_indicator": self.numeric_with_indicator_.tolist(),
            "embedding_names": list(self.embedding_names_),
            "embedding_dims": list(self.embedding_dims_),
            "item_names": list(self.item_names_),
            "item_table_shape": None
            if self.item_table_shape_ is None
            else list(self.item_table_shape_),
            "best_epoch": self.best_epoch_,
            "history": self.history_,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, num_threads: int | None = None) -> NeuralCTR:
        """Rebuild a fitted estimator from `save`'s files; predictions are identical.
        `num_threads` overrides the saved thread count."""
        directory = Path(directory)
        meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a {FORMAT} model (format={meta.get('format')!r})")
        settings = dict(meta["config"])
        saved = meta.get("num_threads", settings.pop("num_threads", None))  # older: in config
        config = NeuralConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        )
        threads = saved if num_threads is None else num_threads
        est = cls(config, random_state=meta["random_state"], num_threads=threads)
        est.config_, est.derived_ = config, {}
        est.categorical_names_ = tuple(meta["categorical_names"])
        est.cardinalities_ = tuple(meta["cardinalities"])
        est.embedding_widths_ = tuple(meta["embedding_widths"])
        est.numeric_names_ = tuple(meta["numeric_names"])
        est.numeric_mean_ = np.asarray(meta["numeric_mean"], dtype=np.float32)
        est.numeric_std_ = np.asarray(meta["numeric_std"], dtype=np.float32)
        est.numeric_with_indicator_ = np.asarray(meta["numeric_with_indicator"], dtype=bool)
        est.embedding_names_ = tuple(meta["embedding_names"])
        est.embedding_dims_ = tuple(meta["embedding_dims"])
        est.item_names_ = tuple(meta.get("item_names", ()))  # older models: no attention
        shape = meta.get("item_table_shape")
        est.item_table_shape_ = None if shape is None else tuple(shape)
        est.best_epoch_ = meta["best_epoch"]
        est.history_ = meta["history"]
        est.module_ = est._build_module()
        est.module_.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
        tables = directory / VECTORS_FILE
        est.vector_tables_ = load_file(str(tables)) if tables.is_file() else {}
        est.module_.eval()
        return est


def _labels(click: np.ndarray, conversion: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 float32 label arrays of length n; conversion only where click (ESMM's premise)."""
    c = np.asarray(click).astype(np.float32).reshape(-1)
    v = np.asarray(conversion).astype(np.float32).reshape(-1)
    if c.shape[0] != n or v.shape[0] != n:
        raise ValueError(f"labels have {c.shape[0]} / {v.shape[0]} rows, features have {n}")
    if not (np.isin(c, (0, 1)).all() and np.isin(v, (0, 1)).all()):
        raise ValueError("click and conversion must be 0/1")
    if (v > c).any():
        raise ValueError(f"{int((v > c).sum())} rows have conversion=1 without a click")
    return c, v


class _Gather:
    """The rows `table[codes]` of a keyed embedding, gathered only for the rows a batch slices
    (`g[idx]` -> (B, D) tensor), so a full-width vector is held once per key."""

    def __init__(self, codes: torch.Tensor, table: torch.Tensor) -> None:
        self.codes, self.table = codes, table
        self.shape = (codes.shape[0], table.shape[1])

    def __getitem__(self, idx: torch.Tensor | slice) -> torch.Tensor:
        codes = self.codes[idx] if isinstance(idx, slice) else self.codes.index_select(0, idx)
        return self.table.index_select(0, codes)


def _tensor(a: np.ndarray, dtype: type) -> torch.Tensor:
    """A tensor sharing memory with `a` when its dtype and layout allow (read only here)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-writable arrays: never written
        return torch.from_numpy(a)
