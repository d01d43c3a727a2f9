"""The neural estimator's training loop parts: its optimisers, one epoch over batches sliced
from column tensors (nanoGPT's `get_batch`, no per-row `Dataset`), and the fixed torch
settings (thread count, deterministic algorithms) that training and prediction run under.
`models.neural.NeuralCTR` composes them."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from models.dcn_esmm import DCNESMM, esmm_loss
from models.neural_config import NeuralConfig


def optimizers(module: DCNESMM, cfg: NeuralConfig) -> list[torch.optim.Optimizer]:
    """AdamW over the dense weights (no decay on dense id tables) + SparseAdam over the id
    tables with sparse gradients."""
    sparse = [t.weight for t in module.ids.tables if t.sparse]
    dense_ids = [t.weight for t in module.ids.tables if not t.sparse]
    ids = {id(p) for p in module.ids.parameters()}
    rest = [p for p in module.parameters() if id(p) not in ids]
    opts: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(
            [{"params": rest}, {"params": dense_ids, "weight_decay": 0.0}],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
    ]
    if sparse:
        opts.append(torch.optim.SparseAdam(sparse, lr=cfg.lr))
    return opts


def train_epoch(
    module: DCNESMM,
    groups: int,
    load: Callable[[list[int]], tuple],
    opts: list[torch.optim.Optimizer],
    generator: torch.Generator,
    cfg: NeuralConfig,
) -> dict[str, float]:
    """One pass over the train rows, held in `groups` groups (slabs of a table too large to
    hold, or one group of every row): the groups in a seeded order, taken `shuffle_slabs` at a
    time, and in each such window a seeded permutation of its rows. `load(groups)` returns the
    window's column tensors `(codes, numeric, vectors, items, click, conversion)`, batches
    are slices of them. With one group, the order draws nothing."""
    module.train()
    started = time.perf_counter()
    sums = torch.zeros(3, dtype=torch.float64)
    n = 0
    order = torch.randperm(groups, generator=generator).tolist() if groups > 1 else [0]
    mix = cfg.shuffle_slabs
    for w in range(0, len(order), mix):
        codes, numeric, vectors, items, click, conversion = load(order[w : w + mix])
        rows = codes.shape[0]
        perm = torch.randperm(rows, generator=generator)
        for start in range(0, rows, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            batch = [v[idx] for v in vectors], [v[idx] for v in items]
            ctr_logit, cvr_logit, lookups = module(codes[idx], numeric[idx], *batch)
            loss, ctr_bce, ctcvr_bce = esmm_loss(
                ctr_logit, cvr_logit, click[idx], conversion[idx], cfg.ctcvr_weight
            )
            total = loss
            if cfg.embedding_l2 > 0 and lookups:
                total = loss + cfg.embedding_l2 * sum(e.pow(2).sum(1).mean() for e in lookups)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            total.backward()
            for opt in opts:
                opt.step()
            sums += torch.tensor([loss.item(), ctr_bce.item(), ctcvr_bce.item()]) * len(idx)
        n += rows
    seconds = time.perf_counter() - started
    means = (sums / max(n, 1)).tolist()
    return {
        "train_loss": means[0],
        "train_ctr_loss": means[1],
        "train_ctcvr_loss": means[2],
        "train_seconds": seconds,
        "samples_per_s": n / seconds,
    }


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when `y` has one class only."""
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else math.nan


def fmt(row: dict[str, float]) -> str:
    """An epoch's history row as one log line."""
    return " ".join(
        f"{k}={v:,.0f}" if k == "samples_per_s" else f"{k}={v:.4f}"
        for k, v in row.items()
        if k != "epoch"
    )


@contextlib.contextmanager
def torch_settings(num_threads: int | None) -> Iterator[None]:
    """A fixed thread count (None: torch's current one) and deterministic algorithms,
    restored afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
