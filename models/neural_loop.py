"""The neural estimator's training loop parts: its optimisers, one epoch over batches sliced
from column tensors (nanoGPT's `get_batch`, no per-row `Dataset`), and the fixed torch
settings (thread count, deterministic algorithms) that training and prediction run under.
`models.neural.NeuralCTR` composes them."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils.deterministic
from sklearn.metrics import roc_auc_score
from torch.profiler import record_function

from models.dcn_esmm import DCNESMM, batch_part, draw_dropout, esmm_loss, set_batch_rows
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
            fused=True,
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
    parts: int = 1,
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
    that of the whole batch.

    `parts` > 1: each batch is split into that many parts, whose forward and backward run in
    as many Python threads at once (this one and `parts - 1` more), each with one intra-op
    thread (`_parts_gradients`)."""
    with step_threads(parts) as pool:
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
                    with record_function("adctr.slice"):  # index_select: 4x `t[idx]`'s speed
                        sliced = [take(v, idx) for v in vectors], [take(v, idx) for v in items]
                        batch = (take(codes, idx), take(numeric, idx), *sliced)
                        labels = take(click, idx), take(conversion, idx)
                    scale = None
                    if part is not None:  # this rank's rows of a global batch
                        positions, size = part
                        set_batch_rows(module, positions, size)
                        scale = shard.world * len(idx) / size
                    losses = _step(module, batch, labels, opts, cfg, scale, pool, parts)
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


@contextlib.contextmanager
def step_threads(parts: int) -> Iterator[ThreadPoolExecutor | None]:
    """The pool that runs a batch's parts after the first (None for one part), with one
    intra-op thread meanwhile; afterwards the memory the parts' threads freed goes back to
    the OS (glibc keeps a heap per thread, whose freed activations would stay resident)."""
    if parts < 2:
        yield None
        return
    try:
        with ThreadPoolExecutor(parts - 1, "adctr-step") as pool, intra_op_threads(1):
            yield pool
    finally:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)


def take(rows: Any, idx: torch.Tensor) -> torch.Tensor:
    """`rows[idx]` for a batch: `index_select` on a tensor (one copy per row, not the general
    advanced-indexing kernel), `rows[idx]` on anything else (a keyed embedding's `_Gather`)."""
    return rows.index_select(0, idx) if isinstance(rows, torch.Tensor) else rows[idx]


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
    pool: ThreadPoolExecutor | None = None,
    parts: int = 1,
) -> tuple[torch.Tensor, ...]:
    """One optimiser step on `batch` (the module's inputs) and its (click, conversion) labels;
    the batch's (loss, ctr BCE, ctcvr BCE). `scale` multiplies the loss that is minimised (a
    rank's share of a data-parallel batch; 0 where the rank has no row of it, which still
    takes part in the gradients' all-reduce). With a `pool`, the batch's gradient comes from
    `parts` parts run at once (`_parts_gradients`). Each part of the step runs in a
    `torch.profiler` scope named `adctr.<part>` (`make bench SECTIONS=profile` reads them;
    without a profiler they cost a few microseconds)."""
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    if pool is not None:
        losses = _parts_gradients(module, batch, labels, cfg, pool, parts)
    else:
        losses, total, (ctr_logit, cvr_logit) = _forward(module, batch, labels, cfg)
        if scale is not None:  # no row here: a zero with the graph's gradients (all zero)
            total = total * scale if scale > 0 else (ctr_logit.sum() + cvr_logit.sum()) * 0.0
        with record_function("adctr.backward"):
            total.backward()
    for opt in opts:
        sparse = isinstance(opt, torch.optim.SparseAdam)
        with record_function("adctr.sparse_optimizer" if sparse else "adctr.dense_optimizer"):
            opt.step()
    return losses


def _forward(
    module: DCNESMM, batch: tuple, labels: tuple[torch.Tensor, torch.Tensor], cfg: NeuralConfig
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The forward and loss of a step: ((loss, ctr BCE, ctcvr BCE), the loss minimised (with
    the embeddings' L2), the float32 logits)."""
    with record_function("adctr.forward"), autocast(cfg.precision):
        ctr_logit, cvr_logit, lookups = module(*batch)
    ctr_logit, cvr_logit = ctr_logit.float(), cvr_logit.float()  # the loss in float32
    with record_function("adctr.loss"):
        loss, ctr_bce, ctcvr_bce = esmm_loss(ctr_logit, cvr_logit, *labels, cfg.ctcvr_weight)
        total = loss
        if cfg.embedding_l2 > 0 and lookups:
            total = loss + cfg.embedding_l2 * sum(e.pow(2).sum(1).mean() for e in lookups)
    return (loss, ctr_bce, ctcvr_bce), total, (ctr_logit, cvr_logit)


def _parts_gradients(
    module: DCNESMM,
    batch: tuple,
    labels: tuple[torch.Tensor, torch.Tensor],
    cfg: NeuralConfig,
    pool: ThreadPoolExecutor,
    parts: int,
) -> tuple[torch.Tensor, ...]:
    """The batch's losses, and its gradient set on the parameters, from `parts` row ranges
    whose forward and backward run at once: the first in this thread, the others in `pool`'s
    (one extra thread, not `parts`: measured, the train stage's peak RSS then stays as it was,
    about 0.1 GB below a pool of `parts` threads), one intra-op thread each.

    It is the batch's gradient: each part's loss is weighted by its share of the rows and the
    parts' gradients are summed in part order, so a seed repeats bit for bit. No op wakes a
    second OpenMP thread (under OMP_WAIT_POLICY=PASSIVE a wake-up costs about 50 us, more than
    most of a step's few hundred small ops' work). The dropout masks are drawn for the whole
    batch before the parts start."""
    rows = labels[0].shape[0]
    bounds = [rows * i // parts for i in range(parts + 1)]
    spans = [slice(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    params = [p for p in module.parameters() if p.requires_grad]
    codes, numeric, vectors, items = batch

    def run(span: slice) -> tuple[list[torch.Tensor], tuple]:
        batch_part(span)
        share = (span.stop - span.start) / rows
        part = (codes[span], numeric[span], [v[span] for v in vectors], [v[span] for v in items])
        losses, total, _ = _forward(module, part, (labels[0][span], labels[1][span]), cfg)
        with record_function("adctr.backward"):
            grads = torch.autograd.grad(total * share, params, allow_unused=True)
        return [t.detach() * share for t in losses], grads

    draw_dropout(module, rows)
    try:
        with record_function("adctr.parts"):  # the first part here, the others in `pool`
            others = [pool.submit(run, span) for span in spans[1:]]
            done = [run(spans[0]), *(f.result() for f in others)]
    finally:
        draw_dropout(module, None)
    for j, param in enumerate(params):
        grads = [g[j] for _, g in done if g[j] is not None]
        if grads:
            param.grad = functools.reduce(torch.add, grads)
    return tuple(functools.reduce(torch.add, t) for t in zip(*(d[0] for d in done), strict=True))


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n`, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
    restored afterwards.

    Set through `torch._C`: the public `torch.use_deterministic_algorithms` also imports
    `torch._inductor` (1.4 s here, when it is the first to import it) to set a flag that only
    `torch.compile` reads, and nothing here compiles. Uninitialised memory is not filled
    (`torch.utils.deterministic.fill_uninitialized_memory`, on by default in deterministic
    mode): every op here writes what it allocates, and the filling was hundreds of `fill_`
    calls a training step (5% of a step under the profiler)."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch._C._set_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch._C._set_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


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
