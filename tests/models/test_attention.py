"""DIN target attention: padded slots get no weight, shapes, and the pooled vector follows the
history items' match to the ad."""

from __future__ import annotations

import torch

from models.attention import TargetAttention


def _block(seed: int = 0) -> TargetAttention:
    torch.manual_seed(seed)
    block = TargetAttention(n_items=6, item_dim=3, width=4, hidden=(5,))
    block.set_table(torch.cat([torch.zeros(1, 3), torch.randn(5, 3)]))
    return block


def test_output_shape_and_padding_gets_no_weight() -> None:
    block = _block()
    target = torch.tensor([1, 2, 3])
    history = torch.tensor([[2, 3, 0, 0], [0, 0, 0, 0], [5, 4, 3, 2]])
    out = block(target, history)
    assert out.shape == (3, block.out_dim) == (3, 5)
    w = block.weights(target, history)
    assert w.shape == (3, 4)
    assert (w[0, 2:] == 0).all() and (w[1] == 0).all()
    assert (w[0, :2] != 0).all() and (w[2] != 0).all()
    # no history: the pooled part is zero, the filled share is 0; else the share of k
    assert torch.equal(out[1], torch.zeros(5))
    assert torch.allclose(out[:, -1], torch.tensor([0.5, 0.0, 1.0]))


def test_padding_does_not_change_the_pooled_vector() -> None:
    block = _block()
    short = block(torch.tensor([1]), torch.tensor([[2, 3]]))
    padded = block(torch.tensor([1]), torch.tensor([[2, 3, 0, 0]]))
    # same items: the pooled sum is the same up to the 1 / k scale
    assert torch.allclose(short[0, :-1] * 2, padded[0, :-1] * 4, atol=1e-6)
    # codes outside the table count as padding
    assert torch.equal(block(torch.tensor([1]), torch.tensor([[2, 3, 9, -1]])), padded)


def test_gradients_reach_the_unit_not_the_table() -> None:
    block = _block()
    block(torch.tensor([1, 2]), torch.tensor([[2, 3], [4, 0]])).sum().backward()
    assert block.first.weight.grad is not None and block.first.weight.grad.abs().sum() > 0
    assert not block.table.requires_grad


def test_the_unit_is_the_mlp_over_h_v_difference_and_product() -> None:
    block = _block()
    h, v = torch.randn(3, 4, 4), torch.randn(3, 4)
    ve = v.unsqueeze(1).expand_as(h)
    x = torch.cat([h, ve, h - ve, h * ve], dim=-1)
    expected = block.rest(block.first(x)).squeeze(-1)
    rows = torch.arange(3).repeat_interleave(4)  # each item against its row's ad
    assert torch.allclose(block.unit(h.reshape(12, 4), v, rows), expected.reshape(12), atol=1e-5)


def test_scoring_filled_slots_only_is_the_dense_block() -> None:
    """Output and weights equal DIN over every slot, padding masked after scoring (the
    block's definition), for a table smaller and larger than a batch's items."""
    for items in (6, 40):
        torch.manual_seed(1)
        block = TargetAttention(n_items=items, item_dim=3, width=4, hidden=(5, 3))
        block.set_table(torch.cat([torch.zeros(1, 3), torch.randn(items - 1, 3)]))
        target = torch.randint(1, items, (7,))
        history = torch.randint(0, items, (7, 3))
        history[2] = 0
        p = block.project(block.table)
        v, h = p[target], p[history]
        ve = v.unsqueeze(1).expand_as(h)
        x = torch.cat([h, ve, h - ve, h * ve], dim=-1)
        w = block.rest(block.first(x)).squeeze(-1).masked_fill(history == 0, 0.0)
        pooled = (w.unsqueeze(-1) * h).sum(1) / 3
        filled = (history > 0).sum(1, keepdim=True) / 3
        expected = torch.cat([pooled, filled], dim=1)
        assert torch.allclose(block(target, history), expected, atol=1e-6)
        assert torch.allclose(block.weights(target, history), w, atol=1e-6)
