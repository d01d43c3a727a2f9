"""The neural model's default training precision: what this CPU runs natively."""

from __future__ import annotations


def native_precision() -> str:
    """ "bf16" where this CPU runs bfloat16 matmuls natively (oneDNN with AVX512-BF16 or AMX:
    the check the encoder's `dtype = "auto"` makes, `features.text.bf16_native`), else
    "fp32". `features/` and `models/` import nothing of each other, so each asks torch."""
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"
