"""What this CPU runs natively, for the settings that default to the machine's best: the
encoder's dtype (`features.text`) and the neural model's training precision."""

from __future__ import annotations


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (oneDNN with AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_precision() -> str:
    """ "bf16" where `bf16_native()`, else "fp32": the neural model's default training step."""
    return "bf16" if bf16_native() else "fp32"
