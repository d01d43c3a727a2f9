"""Size-aware defaults: the model settings an experiment leaves unset (None), derived from the
number of training rows and positives (clicks) when a model is fitted. Explicit settings win.

Logs range from a pilot campaign of a few thousand impressions to billions, and no one setting
fits both ends. Measured on this project's logs (valid split, 3 seeds; the README has the
tables):
- neural batch size: at ~7-8k train rows (criteo_8k, avazu_9k) a batch of 2,048 gives 4 steps an
  epoch and loses 0.02-0.04 AUC; 256 (~30 steps an epoch) beat 128 and 512 on valid. On
  `default` (321k rows) 2,048 is right. The rule: about rows / 32, a power of two in
  [64, 2048];
- neural epochs: the valid loss is lowest after 1 epoch on `default` (it rises from the
  second: the one-epoch overfitting of id embeddings) and after ~2 epochs of ~30 steps on the
  small logs. Early stopping decides; the cap is enough epochs for ~2,000 steps, in [2, 30];
- learning rate: 1e-3 for Adam at every batch size the rule picks (5e-4 and 2e-3 were worse on
  valid at batch 256; 1e-3 is the measured choice at 2,048);
- regularisation: below 5,000 train positives dropout 0.2 and weight decay 1e-4 gave a lower
  valid log loss than 0.1 / 1e-5 on both small logs; above, 0.1 / 1e-5;
- id embedding width: 16 (8 was worse on the small logs); 32 from 10M train rows, where wider
  tables have the data to fill them (not measured here);
- LightGBM: `num_leaves` about positives / 100 (a power of two minus one in [7, 255]: 15 on the
  small logs, where 15 beat 63 on valid) and `min_data_in_leaf` about 20 expected positives a
  leaf (20 / click rate, in [20, 2000], and at most a tenth of the rows);
- negative downsampling (models fitted in memory: LightGBM, logreg): none up to the train
  stage's `max_in_memory_rows`; above, the rate that keeps about that many rows (every
  positive plus a share of the negatives), at least `MIN_NEGATIVE_RATE`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

SMALL_POSITIVES = 5_000  # fewer train positives: stronger regularisation of the neural model
WIDE_ROWS = 10_000_000  # this many train rows or more: wider id embeddings
TARGET_STEPS = 2_000  # the epoch cap allows about this many optimiser steps
MIN_NEGATIVE_RATE = 0.01

C = TypeVar("C")


def _pow2(x: float) -> int:
    """The power of two nearest to x in log scale (x <= 1 gives 1)."""
    return 2 ** round(math.log2(max(x, 1.0)))


def _clamp(x: int, low: int, high: int) -> int:
    return max(low, min(high, x))


def neural_defaults(rows: int, positives: int) -> dict[str, Any]:
    """Neural settings for `rows` training impressions with `positives` clicks."""
    batch = _clamp(_pow2(rows / 32), 64, 2048)
    steps = max(1, math.ceil(rows / batch))
    small = positives < SMALL_POSITIVES
    return {
        "batch_size": batch,
        "epochs": _clamp(math.ceil(TARGET_STEPS / steps), 2, 30),
        "lr": 1e-3,
        "dropout": 0.2 if small else 0.1,
        "weight_decay": 1e-4 if small else 1e-5,
        "embedding_dim": 32 if rows >= WIDE_ROWS else 16,
    }


def lightgbm_defaults(rows: int, positives: int) -> dict[str, Any]:
    """LightGBM CTR booster settings for `rows` training impressions with `positives` clicks."""
    leaves = _clamp(_pow2(positives / 100) - 1, 7, 255)
    rate = positives / rows if rows else 0.0
    per_leaf = _clamp(round(20 / rate), 20, 2000) if rate > 0 else 20
    return {"num_leaves": leaves, "min_data_in_leaf": max(1, min(per_leaf, rows // 10))}


def negative_rate(rows: int, positives: int, max_rows: int) -> float:
    """The share of negatives to keep so that about `max_rows` of `rows` remain (all positives
    kept); 1.0 when the rows fit."""
    negatives = rows - positives
    if rows <= max_rows or negatives <= 0:
        return 1.0
    return min(1.0, max((max_rows - positives) / negatives, MIN_NEGATIVE_RATE))


def resolve(config: C, derived: dict[str, Any]) -> tuple[C, dict[str, Any]]:
    """`config` with its unset (None) fields filled from `derived`, and the values it took
    from there; fields the config sets are kept."""
    used = {
        k: v
        for k, v in derived.items()
        if getattr(config, k) is None  # type: ignore[misc]
    }
    return dataclasses.replace(config, **used), used  # type: ignore[type-var]
