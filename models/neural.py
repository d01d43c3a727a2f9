"""Neural multi-task CTR/CVR estimator (stub: the neural issue fills this in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeuralConfig:
    epochs: int = 4
    batch_size: int = 2048
    lr: float = 1e-3
