"""Target attention over the user's recent items (DIN, Zhou et al. 2018), for `DCNESMM`.

The item vectors live in a fixed table (a buffer: side information, not learned; saved with the
weights). A shared linear projection maps the impressed ad's vector `v` and each history vector
`h_i` to `width`; DIN's activation unit (an MLP over `[h_i, v, h_i - v, h_i * v]`) scores each
history item against the ad; padded slots (code 0) get weight 0; the pooled vector is
`sum_i w_i h_i / k`. The unit's first layer is evaluated in its decomposed form
`W [h, v, h - v, h * v] = (W_h + W_d) h + (W_v - W_d) v + W_p (h * v)` (the same function): the
ad's term is computed once per row rather than once per history item, and the (B, k, 4 width)
concatenation is never built, which halves the block's cost.

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

    def unit(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """DIN's activation unit: (B, k) scores of the items h (B, k, w) against the ads v (B, w),
        the MLP over [h, v, h - v, h * v] with its first layer decomposed (module docstring)."""
        w = self.width
        weight = self.first.weight
        w_h = weight[:, :w] + weight[:, 2 * w : 3 * w]
        w_v = weight[:, w : 2 * w] - weight[:, 2 * w : 3 * w]
        w_p = weight[:, 3 * w :]
        per_ad = v @ w_v.T + self.first.bias  # (B, hidden)
        z = h @ w_h.T + (h * v.unsqueeze(1)) @ w_p.T + per_ad.unsqueeze(1)
        return self.rest(z).squeeze(-1)

    def set_table(self, table: torch.Tensor) -> None:
        """Copy in the (n_items, item_dim) item vectors (row 0: the padding)."""
        if tuple(table.shape) != tuple(self.table.shape):
            raise ValueError(f"item table {tuple(table.shape)} != {tuple(self.table.shape)}")
        with torch.no_grad():
            self.table.copy_(table)

    def weights(self, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B, k) attention weights, 0 on padded slots; codes outside the table count as 0."""
        return self._attend(target, history)[1]

    def _attend(
        self, target: torch.Tensor, history: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.table.shape[0]
        target = target.reshape(-1)
        target = target.masked_fill((target < 0) | (target >= n), 0)
        history = history.masked_fill((history < 0) | (history >= n), 0)
        mask = history > 0
        v = self.project(self.table[target])  # (B, w)
        h = self.project(self.table[history])  # (B, k, w)
        return h, self.unit(h, v).masked_fill(~mask, 0.0), mask

    def forward(self, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        h, w, mask = self._attend(target, history)
        k = max(history.shape[1], 1)
        pooled = (w.unsqueeze(-1) * h).sum(dim=1) / k
        filled = mask.sum(dim=1, keepdim=True).to(pooled.dtype) / k
        return torch.cat([pooled, filled], dim=1)
