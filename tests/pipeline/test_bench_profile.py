"""The `profile` bench section's core on a tiny synthetic matrix: every part of a training step
is measured, the warm-up steps are left out, and the named parts account for the step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.neural import NeuralConfig
from pipeline.bench.neural import synthetic_matrix
from pipeline.bench.profile import (
    FORWARD_PARTS,
    FORWARD_REST,
    IN_PARTS,
    SLICE,
    STEP_PARTS,
    STEP_REST,
    profile_steps,
)


@pytest.mark.parametrize("threads", [1, 2])
def test_profile_measures_every_part_of_a_step(threads: int) -> None:
    """threads=2: each batch runs as two parts at once (`_parts_gradients`), and the parts'
    scopes, in the worker threads, are measured too."""
    X, click, conv = synthetic_matrix(3_000)
    rng = np.random.default_rng(0)
    items = {
        "s_ad_item": rng.integers(0, 50, (3_000, 1)),
        "s_history": rng.integers(0, 50, (3_000, 4)),
    }
    X = replace(X, items=items, item_vectors=rng.standard_normal((50, 8), dtype=np.float32))
    config = NeuralConfig(batch_size=256, sparse_min_rows=1_000)  # sparse and dense id tables

    result = profile_steps(X, click, conv, config, steps=3, warmup=1, threads=threads)

    assert (result.steps, result.batch_size) == (3, 256)  # 4 steps run, the first dropped
    assert result.in_threads == (threads > 1)
    named = [*SLICE.values(), *FORWARD_PARTS.values(), *IN_PARTS.values(), *STEP_PARTS.values()]
    assert set(result.parts_ms) == {*named, FORWARD_REST, STEP_REST}
    assert all(v >= 0 for v in result.parts_ms.values()), result.parts_ms
    shares = result.shares()
    assert sum(shares.values()) == pytest.approx(100.0)
    # the scopes nest as the table assumes (none counted twice) and leave little unnamed; with
    # parts, the rest also holds the hand-off to the threads, the batch's dropout masks and the
    # parts' gradients summed: more of a tiny batch's step
    floor = 85.0 if threads == 1 else 70.0
    assert floor < sum(shares[k] for k in named) <= 100.0 + 1e-9, shares
    assert result.ops and all(name.startswith("aten::") for name, _, _ in result.ops)
    assert result.samples_per_s == pytest.approx(256 / (result.step_ms / 1e3))
