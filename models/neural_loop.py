"""The neural estimator's training loop parts: its optimisers, one epoch over batches sliced
from column tensors (nanoGPT's `get_batch`, no per-row `Dataset`), and the fixed torch
settings (thread count, deterministic algorithms) that training and prediction run under.
`models.neural.NeuralCTR` composes them."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.profiler import record_function

from models.dcn_esmm import DCNESMM, esmm_loss, set_batch_rows
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
    module: torch.nn.Module,
    groups: int,
    load: Callable[[list[int]], tuple],
    opts: list[torch.optim.Optimizer],
    generator: torch.Generator,
    cfg: NeuralConfig,
    shard: Shard | None = None,
) -> dict[str, float]:
    """One pass over the train rows, held in `groups` groups (slabs of a table too large to
    hold, or one group of every row): the groups in a seeded order, taken `shuffle_slabs` at a
    time, and in each such window a seeded permutation of its rows. `load(groups)` returns the
    window's column tensors `(codes, numeric, vectors, items, click, conversion)`, batches
    are slices of them. With one group, the order draws nothing.

    `shard`: data-parallel training of a DDP `module`, the rows loaded (one group) being this
    rank's shard. Every rank draws the same permutation of the global rows (the same
    `generator` seed), so the batches are the one-process run's, each rank taking its rows of
    each; the losses (and the epoch's means) are weighted so that the averaged gradient is
    that of the whole batch."""
    module.train()
    started = time.perf_counter()
    sums = torch.zeros(3, dtype=torch.float64)
    n = 0
    order = torch.randperm(groups, generator=generator).tolist() if groups > 1 else [0]
    mix = cfg.shuffle_slabs
    for w in range(0, len(order), mix):
        codes, numeric, vectors, items, click, conversion = load(order[w : w + mix])
        for idx, part in _batches(codes.shape[0], cfg.batch_size, generator, shard):
            with record_function("adctr.step"):
                with record_function("adctr.slice"):
                    sliced = [v[idx] for v in vectors], [v[idx] for v in items]
                    batch = (codes[idx], numeric[idx], *sliced)
                    labels = click[idx], conversion[idx]
                scale = None
                if part is not None:  # this rank's rows of a global batch
                    positions, size = part
                    set_batch_rows(module, positions, size)
                    scale = shard.world * len(idx) / size
                losses = _step(module, batch, labels, opts, cfg, scale)
                if len(idx):
                    sums += torch.tensor([t.item() for t in losses]) * len(idx)
        n += codes.shape[0]
    if shard is not None:
        set_batch_rows(module, None)
        sums, n = all_sum(sums), shard.rows
    seconds = time.perf_counter() - started
    means = (sums / max(n, 1)).tolist()
    return {
        "train_loss": means[0],
        "train_ctr_loss": means[1],
        "train_ctcvr_loss": means[2],
        "train_seconds": seconds,
        "samples_per_s": n / seconds,
    }


@dataclass(frozen=True)
class Shard:
    """A process's part of data-parallel training: rank `rank` of `world` holds the global
    rows g of `rows` with g % world == rank, as its local rows g // world."""

    rank: int
    world: int
    rows: int

    @property
    def local_rows(self) -> int:
        return len(range(self.rank, self.rows, self.world))


def _batches(
    rows: int, size: int, generator: torch.Generator, shard: Shard | None
) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, int] | None]]:
    """(row indices, None) of each batch of a window of `rows` rows (`train_epoch`); with a
    `shard`, (this rank's local rows of each global batch, (their positions in it, its size))."""
    if shard is None:
        perm = torch.randperm(rows, generator=generator)
        for start in range(0, rows, size):
            yield perm[start : start + size], None
        return
    perm = torch.randperm(shard.rows, generator=generator)
    for start in range(0, shard.rows, size):
        batch = perm[start : start + size]
        mine = (batch % shard.world == shard.rank).nonzero().squeeze(1)
        yield batch[mine] // shard.world, (mine, len(batch))


def _step(
    module: DCNESMM,
    batch: tuple,
    labels: tuple[torch.Tensor, torch.Tensor],
    opts: list[torch.optim.Optimizer],
    cfg: NeuralConfig,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimiser step on `batch` (the module's inputs) and its (click, conversion) labels;
    the batch's (loss, ctr BCE, ctcvr BCE). `scale` multiplies the loss that is minimised (a
    rank's share of a data-parallel batch; 0 where the rank has no row of it, which still
    takes part in the gradients' all-reduce). Each part runs in a `torch.profiler` scope named
    `adctr.<part>` (`make bench SECTIONS=profile` reads them; without a profiler they cost a
    few microseconds)."""
    with record_function("adctr.forward"), autocast(cfg.precision):
        ctr_logit, cvr_logit, lookups = module(*batch)
    ctr_logit, cvr_logit = ctr_logit.float(), cvr_logit.float()  # the loss in float32
    with record_function("adctr.loss"):
        loss, ctr_bce, ctcvr_bce = esmm_loss(ctr_logit, cvr_logit, *labels, cfg.ctcvr_weight)
        total = loss
        if cfg.embedding_l2 > 0 and lookups:
            total = loss + cfg.embedding_l2 * sum(e.pow(2).sum(1).mean() for e in lookups)
        if scale is not None:  # no row here: a zero with the graph's gradients (all zero)
            total = total * scale if scale > 0 else (ctr_logit.sum() + cvr_logit.sum()) * 0.0
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    with record_function("adctr.backward"):
        total.backward()
    for opt in opts:
        sparse = isinstance(opt, torch.optim.SparseAdam)
        with record_function("adctr.sparse_optimizer" if sparse else "adctr.dense_optimizer"):
            opt.step()
    return loss, ctr_bce, ctcvr_bce


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The arithmetic of a training step's forward (and so of its backward): bf16 autocast
    for "bf16", float32 as it is for "fp32"."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


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


def world() -> tuple[int, int]:
    """(rank, world size) of this process in the initialised `torch.distributed` process group
    (data-parallel training); a ValueError without one."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ValueError("data_parallel needs an initialised torch.distributed process group")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over every rank of the process group (a new tensor; every rank gets it)."""
    out = t.clone()
    torch.distributed.all_reduce(out)
    return out


def data_parallel(module: DCNESMM) -> torch.nn.Module:
    """`module` under DistributedDataParallel: gradients averaged over the ranks at each step,
    sparse id-table gradients included (gloo), so the ranks' weights stay equal. Buffers (the
    numeric statistics, the item table) are equal on every rank by construction: synced once
    at the start, not at every forward."""
    return torch.nn.parallel.DistributedDataParallel(module, forward_sync_buffers=False)
