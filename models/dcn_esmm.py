"""DCN-v2 x ESMM: one multi-task network for pCTR, pCVR and pCTCVR.

Read top to bottom, `DCNESMM.forward` is five steps:

    ids     -> IdEmbeddings   one table per categorical field, concatenated
    numbers -> NumericInput   NaN -> 0 plus a missing indicator, standardised with train stats
    vectors -> TextTower      a small MLP over the concatenated dense embeddings
    items   -> TargetAttention  the user's recent items pooled by their match to the ad (DIN;
                                `models.attention`), only when the model has an item table
    x0 = [ids, numbers, text, attention] -> CrossNetV2 -> MLP     (stacked DCN-v2)
    shared representation     -> ctr head, cvr head  (logits)

Stacked rather than parallel: the cross layers build bounded-degree feature crosses of x0 and
the MLP learns on top of them, so both heads share one compact (last MLP width) representation;
DCN-v2's own Criteo results (the closest task to ours) favour the stacked form, and it is the
cheaper of the two because the heads never see the wide x0. The cross weights are low rank
by default (W = U V^T, rank 64): about 3x fewer FLOPs at x0 ~ 340 wide, with the same valid
CTR logloss as full rank on the default features (0.1155 vs 0.1156 after one epoch).

ESMM (Ma et al., 2018): pCTCVR = pCTR * pCVR is supervised by `conversion` and pCTR by `click`,
both over every impression, so pCVR is learned on the whole impression space rather than on the
clicked (sample-selection-biased) subset. `esmm_loss` computes both terms from logits in log
space (numerically stable for tiny pCTCVR).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from models.attention import TargetAttention


def embedding_width(cardinality: int, max_dim: int) -> int:
    """Embedding width for a vocabulary: min(max_dim, ceil(6 * cardinality ** 0.25)), >= 2."""
    return max(2, min(max_dim, math.ceil(6.0 * max(cardinality, 1) ** 0.25)))


class RowDropout(nn.Dropout):
    """`nn.Dropout` (the same mask from the same random state) whose mask can be rows of a
    larger batch's: with `rows` set (the positions of the input's rows in a batch of `batch`
    rows, `set_batch_rows`), the mask is drawn for the whole batch, as one process would draw
    it, and the input's rows take theirs. So each rank of data-parallel training drops what
    the one-process run drops. With `noise` set (`draw_dropout`: the batch's scaled mask,
    drawn before the batch is split into parts that run in threads), the input is the rows
    `batch_part()` of this thread, and they take theirs of it."""

    rows: torch.Tensor | None = None
    batch: int = 0
    noise: torch.Tensor | None = None

    def __init__(self, p: float, width: int) -> None:
        super().__init__(p)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise is not None and self.training and self.p > 0:
            return x * self.noise[_PART.rows]
        if self.rows is None or not self.training or self.p == 0:
            return super().forward(x)
        keep = 1.0 - self.p
        noise = torch.empty((self.batch, *x.shape[1:]), dtype=x.dtype).bernoulli_(keep)
        return x * noise.div_(keep)[self.rows]


_PART = threading.local()  # the rows of the batch this thread runs (`batch_part`)


def batch_part(rows: slice) -> None:
    """Set the rows of the batch that this thread's forward takes (`RowDropout.noise`)."""
    _PART.rows = rows


def draw_dropout(module: nn.Module, batch: int | None) -> None:
    """Draw every `RowDropout`'s scaled mask for a batch of `batch` rows, in the module's
    order, from the global generator (None: clear them). The threads that run the batch's
    parts then take their rows of the masks, and no thread draws: the random stream does not
    depend on which thread runs first."""
    for layer in module.modules():
        if isinstance(layer, RowDropout):
            keep = 1.0 - layer.p
            noise = None
            if batch is not None and layer.p > 0:
                noise = torch.empty(batch, layer.width).bernoulli_(keep).div_(keep)
            layer.noise = noise


def set_batch_rows(module: nn.Module, rows: torch.Tensor | None, batch: int = 0) -> None:
    """Tell every `RowDropout` of `module` where its next input's rows sit in a batch of
    `batch` rows (None: the input is the whole batch)."""
    for layer in module.modules():
        if isinstance(layer, RowDropout):
            layer.rows, layer.batch = rows, batch


def mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for each consecutive pair of `sizes`."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        if dropout > 0:
            layers.append(RowDropout(dropout, fan_out))
    return nn.Sequential(*layers)


class IdEmbeddings(nn.Module):
    """One embedding table per categorical field; codes outside [0, cardinality) map to 0.

    Tables with at least `sparse_min_rows` rows produce sparse gradients (for `SparseAdam`, which
    touches only the rows in the batch); smaller ones are cheaper to update densely.
    """

    def __init__(self, cardinalities: Sequence[int], widths: Sequence[int], sparse_min_rows: int):
        super().__init__()
        self.tables = nn.ModuleList(
            nn.Embedding(c, w, sparse=c >= sparse_min_rows)
            for c, w in zip(cardinalities, widths, strict=True)
        )
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.01)
        self.register_buffer("cardinalities", torch.tensor(list(cardinalities), dtype=torch.int64))
        self.out_dim = sum(widths)

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Concatenated field embeddings (B, out_dim) and the per-field lookups (for L2)."""
        unseen = (codes < 0) | (codes >= self.cardinalities)
        codes = codes.masked_fill(unseen, 0)
        looked_up = [table(codes[:, j]) for j, table in enumerate(self.tables)]
        if not looked_up:
            return codes.new_zeros((codes.shape[0], 0), dtype=torch.float32), []
        return torch.cat(looked_up, dim=1), looked_up


class NumericInput(nn.Module):
    """Signed log1p (optional), standardise with train mean/std, NaN -> 0 plus indicators.

    Indicators are emitted only for the columns that had missing values in train
    (`with_indicator`), so complete columns cost no extra inputs.
    """

    def __init__(self, n_columns: int, n_indicators: int, log_transform: bool, clip: float):
        super().__init__()
        self.log_transform = log_transform
        self.clip = clip
        self.register_buffer("mean", torch.zeros(n_columns))
        self.register_buffer("std", torch.ones(n_columns))
        self.register_buffer("with_indicator", torch.zeros(n_columns, dtype=torch.bool))
        self.out_dim = n_columns + n_indicators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        missing = torch.isnan(x)
        x = signed_log1p(x) if self.log_transform else x
        z = ((x - self.mean) / self.std).clamp(-self.clip, self.clip)
        z = z.masked_fill(missing, 0.0)
        columns = self.with_indicator.nonzero().squeeze(1)  # index_select: no boolean mask
        indicators = missing.index_select(1, columns).to(z.dtype)
        return torch.cat([z, indicators], dim=1)


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log1p(|x|): tames heavy-tailed counts, keeps sign and order (NaN stays NaN)."""
    return torch.log1p(x.abs()).copysign_(x)


def numeric_statistics(
    x: torch.Tensor | Iterable[torch.Tensor],
    log_transform: bool,
    chunk: int = 65_536,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-column (mean, std, any missing) of `NumericInput`'s input, NaN = missing; `x` one
    tensor or its row slabs in turn (a table read in parts).

    Mean and std are over the present values after the optional signed log1p, computed in
    float32 as the layer computes it. Each chunk of rows is summed in float32 around a shift
    (the first chunk's column means: no cancellation in the squares), and the chunks' sums
    are added in float64; std < 1e-6 (constant or empty columns) becomes 1. `reduce`
    (data-parallel training: a sum over the ranks) maps the stacked per-column float64 sums
    (count, total, squares, rows) of this part of the rows to those of all rows.
    """
    moments = shift = None
    rows = 0
    for part in [x] if isinstance(x, torch.Tensor) else x:
        for start in range(0, part.shape[0], chunk):
            v = part[start : start + chunk].float()
            v = signed_log1p(v) if log_transform else v
            present = ~torch.isnan(v)
            if shift is None:
                shift = torch.nanmean(v, 0).nan_to_num_(0.0)
                moments = torch.zeros(3, v.shape[1], dtype=torch.float64)
            d = (v - shift).masked_fill_(~present, 0.0)
            moments += torch.stack([present.float().sum(0), d.sum(0), (d * d).sum(0)])
        rows += part.shape[0]
    if moments is None:
        raise ValueError("numeric_statistics of no rows")
    count, total, squares = moments
    shift = shift.double()  # the raw sums, so that ranks with other shifts add up
    total, squares = total + shift * count, squares + 2 * shift * total + shift**2 * count
    if reduce is not None:
        rows_col = torch.full_like(count, float(rows))
        count, total, squares, rows_col = reduce(torch.stack([count, total, squares, rows_col]))
        rows = int(rows_col[0])
    n = count.clamp(min=1.0)
    mean = total / n
    std = (squares / n - mean**2).clamp(min=0.0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float(), count < rows


class TextTower(nn.Module):
    """MLP over the concatenated dense vectors (ad text embedding, user interest, ...)."""

    def __init__(self, in_dim: int, sizes: Sequence[int], dropout: float):
        super().__init__()
        self.net = mlp([in_dim, *sizes], dropout) if in_dim > 0 and sizes else nn.Identity()
        self.out_dim = (sizes[-1] if sizes else in_dim) if in_dim > 0 else 0

    def forward(self, vectors: Sequence[torch.Tensor], batch: int) -> torch.Tensor:
        if not vectors:
            return torch.zeros((batch, 0))
        return self.net(torch.cat(list(vectors), dim=1))


class CrossNetV2(nn.Module):
    """x_{l+1} = x0 * (W_l x_l + b_l) + x_l; W_l = U_l V_l^T when `rank` > 0 (low rank)."""

    def __init__(self, dim: int, n_layers: int, rank: int):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            if rank > 0:
                layer = nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
            else:
                layer = nn.Linear(dim, dim)
            self.layers.append(layer)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNESMM(nn.Module):
    """Shared bottom (embeddings, numeric input, text tower, cross net, MLP) and two heads."""

    def __init__(
        self,
        cardinalities: Sequence[int],
        embedding_widths: Sequence[int],
        n_numeric: int,
        n_indicators: int,
        text_dim: int,
        *,
        text_tower: Sequence[int] = (128, 32),
        cross_layers: int = 3,
        cross_rank: int = 64,
        mlp_sizes: Sequence[int] = (256, 128),
        head_sizes: Sequence[int] = (64,),
        dropout: float = 0.1,
        sparse_min_rows: int = 50_000,
        log_numeric: bool = True,
        numeric_clip: float = 8.0,
        item_table: tuple[int, int] | None = None,
        attention_dim: int = 16,
        attention_hidden: Sequence[int] = (32,),
    ):
        super().__init__()
        self.ids = IdEmbeddings(cardinalities, embedding_widths, sparse_min_rows)
        self.numeric = NumericInput(n_numeric, n_indicators, log_numeric, numeric_clip)
        self.text = TextTower(text_dim, text_tower, dropout)
        # item_table (rows, width): target attention over the user's recent items
        self.attention = (
            TargetAttention(*item_table, attention_dim, attention_hidden) if item_table else None
        )
        x0_dim = self.ids.out_dim + self.numeric.out_dim + self.text.out_dim
        x0_dim += self.attention.out_dim if self.attention is not None else 0
        if x0_dim == 0:
            raise ValueError("the model has no inputs (no categorical, numeric or text features)")
        self.cross = CrossNetV2(x0_dim, cross_layers, cross_rank)
        self.deep = mlp([x0_dim, *mlp_sizes], dropout)
        shared = mlp_sizes[-1] if mlp_sizes else x0_dim
        self.ctr_head = _head(shared, head_sizes)
        self.cvr_head = _head(shared, head_sizes)

    def set_output_bias(self, ctr_rate: float, cvr_rate: float) -> None:
        """Start the heads at the base rates (logit of the train CTR and CVR)."""
        with torch.no_grad():
            self.ctr_head[-1].bias.fill_(_logit(ctr_rate))
            self.cvr_head[-1].bias.fill_(_logit(cvr_rate))

    def forward(
        self,
        codes: torch.Tensor,
        numeric: torch.Tensor,
        vectors: Sequence[torch.Tensor],
        items: Sequence[torch.Tensor] = (),
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(ctr_logit (B,), cvr_logit (B,), per-field id lookups). `items`: (the ad's item
        code (B,), the recent items' codes (B, k)) when the model has attention. Each step
        runs in a `torch.profiler` scope `adctr.<step>` (`make bench SECTIONS=profile`)."""
        with record_function("adctr.ids"):
            id_vecs, lookups = self.ids(codes)
        with record_function("adctr.numeric"):
            parts = [id_vecs, self.numeric(numeric)]
        with record_function("adctr.text_tower"):
            parts.append(self.text(vectors, codes.shape[0]))
        if self.attention is not None:
            with record_function("adctr.attention"):
                parts.append(self.attention(*items))
        x0 = torch.cat(parts, dim=1)
        with record_function("adctr.cross"):
            crossed = self.cross(x0)
        with record_function("adctr.mlp"):
            shared = self.deep(crossed)
        with record_function("adctr.heads"):
            return self.ctr_head(shared).squeeze(1), self.cvr_head(shared).squeeze(1), lookups


def _head(in_dim: int, sizes: Sequence[int]) -> nn.Sequential:
    """A small MLP ending in one logit."""
    return nn.Sequential(*mlp([in_dim, *sizes], 0.0), nn.Linear(sizes[-1] if sizes else in_dim, 1))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _log1mexp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_p)) for log_p <= 0, accurate on both sides of -log 2."""
    log_p = log_p.clamp(max=-1e-7)
    return torch.where(
        log_p > -math.log(2.0), torch.log(-torch.expm1(log_p)), torch.log1p(-torch.exp(log_p))
    )


def esmm_loss(
    ctr_logit: torch.Tensor,
    cvr_logit: torch.Tensor,
    click: torch.Tensor,
    conversion: torch.Tensor,
    ctcvr_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ESMM loss over the whole impression space: (total, ctr BCE, ctcvr BCE), batch means.

    ctr BCE = BCE(pCTR, click); ctcvr BCE = BCE(pCTR * pCVR, conversion), both over every row
    (clicked or not); there is no loss on pCVR alone, hence no sample-selection bias.
    """
    ctr_bce = F.binary_cross_entropy_with_logits(ctr_logit, click)
    log_ctcvr = F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)
    ctcvr_bce = -(conversion * log_ctcvr + (1.0 - conversion) * _log1mexp(log_ctcvr)).mean()
    return ctr_bce + ctcvr_weight * ctcvr_bce, ctr_bce, ctcvr_bce
