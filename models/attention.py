"""Target attention over the user's recent items (DIN, Zhou et al. 2018), for `DCNESMM`.

The item vectors live in a fixed table (a buffer: side information, not learned; saved with the
weights). A shared linear projection maps the impressed ad's vector `v` and each history vector
`h_i` to `width`; DIN's activation unit (an MLP over `[h_i, v, h_i - v, h_i * v]`) scores each
history item against the ad; padded slots (code 0) get weight 0; the pooled vector is
`sum_i w_i h_i / k`. The unit's first layer is evaluated in its decomposed form
`W [h, v, h - v, h * v] = (W_h + W_d) h + (W_v - W_d) v + W_p (h * v)` (the same function): the
ad's term is computed once per row rather than once per history item, and the (B, k, 4 width)
concatenation is never built, which halves the block's cost. Only the filled slots are
projected, scored and pooled (padding would score, and add, exactly zero): on `default` half of
the slots are padding.

The weights are DIN's raw scores, not a softmax: how much history matches the ad is itself a
signal (the constant 1 / k only keeps the sum's scale that of one item). The block's output is
the pooled vector and the filled share of the k slots.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


class TargetAttention(nn.Module):
    """(target codes (B,), history codes (B, k)) -> (B, width + 1); see the module docstring."""

    def __init__(self, n_items: int, item_dim: int, width: int, hidden: Sequence[int]):
        super().__init__()
        if n_items < 1 or item_dim < 1 or width < 1:
            raise ValueError(f"attention: bad sizes items={n_items} dim={item_dim} width={width}")
        self.register_buffer("table", torch.zeros(n_items, item_dim))
        self.project = nn.Linear(item_dim, width)
        self.width = width
        self.first = nn.Linear(4 * width, hidden[0] if hidden else 1)  # over [h, v, h-v, h*v]
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(hidden):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.rest = (
            nn.Sequential(nn.ReLU(), *layers, nn.Linear(hidden[-1], 1)) if hidden else nn.Identity()
        )
        self.out_dim = width + 1

    def unit(self, h: torch.Tensor, v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """DIN's activation unit: (M,) scores of the items h (M, w) against the ads v (B, w), item
        i against the ad of row `rows[i]`: the MLP over [h, v, h - v, h * v] with its first
        layer decomposed (module docstring)."""
        w = self.width
        weight = self.first.weight
        w_h = weight[:, :w] + weight[:, 2 * w : 3 * w]
        w_v = weight[:, w : 2 * w] - weight[:, 2 * w : 3 * w]
        w_p = weight[:, 3 * w :]
        per_ad = v @ w_v.T + self.first.bias  # (B, hidden)
        z = h @ w_h.T + (h * v.index_select(0, rows)) @ w_p.T + per_ad.index_select(0, rows)
        return self.rest(z).squeeze(-1)

    def set_table(self, table: torch.Tensor) -> None:
        """Copy in the (n_items, item_dim) item vectors (row 0: the padding)."""
        if tuple(table.shape) != tuple(self.table.shape):
            raise ValueError(f"item table {tuple(table.shape)} != {tuple(self.table.shape)}")
        with torch.no_grad():
            self.table.copy_(table)

    def weights(self, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B, k) attention weights, 0 on padded slots; codes outside the table count as 0."""
        slots, _, _, scores = self._attend(target, history)
        w = scores.new_zeros(history.numel())
        return w.index_copy_(0, slots, scores).view(history.shape)

    def _attend(
        self, target: torch.Tensor, history: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(slots, rows, h, scores) of the filled history slots only (padding has weight 0, so
        it is never scored: about half the slots on `default`): their positions in the
        flattened (B, k) history and their rows, their projected items (M, w), their scores."""
        n, k = self.table.shape[0], max(history.shape[1], 1)
        target = target.reshape(-1)
        target = target.masked_fill((target < 0) | (target >= n), 0)
        flat = history.reshape(-1)
        slots = ((flat > 0) & (flat < n)).nonzero().squeeze(1)
        rows = torch.div(slots, k, rounding_mode="floor")
        v, h = self._projected(target, flat.index_select(0, slots))
        return slots, rows, h, self.unit(h, v, rows)

    def _projected(self, *codes: torch.Tensor) -> list[torch.Tensor]:
        """The projected vectors of each code tensor's items: the table projected once and its
        rows gathered where the table has fewer rows than the codes (a batch's ads and history
        items against a few thousand items), else the gathered rows projected."""
        if self.table.shape[0] <= sum(c.numel() for c in codes):
            projected = self.project(self.table)
            return [projected.index_select(0, c) for c in codes]
        return [self.project(self.table.index_select(0, c)) for c in codes]

    @torch.autocast("cpu", enabled=False)
    def forward(self, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B, width + 1): the pooled vector and the filled share. In float32 under a bf16
        autocast too: its matmuls are 16 wide, too small for bf16 to gain what its casts cost."""
        _, rows, h, w = self._attend(target, history)
        k = max(history.shape[1], 1)
        # sum_i w_i h_i over the filled slots of each row, summed in float32
        pooled = torch.zeros(history.shape[0], self.width, device=h.device)
        pooled = pooled.index_add(0, rows, (w.unsqueeze(-1) * h).float()) / k
        filled = torch.bincount(rows, minlength=history.shape[0]).to(pooled.dtype) / k
        return torch.cat([pooled, filled.unsqueeze(1)], dim=1)
