"""Pure tensor functions (no parameters), batch-first ``[B, T, H, D]``.

Each op has ``mode="recurrent"``, the step-by-step definition used as the oracle, and a faster mode
that returns the same values and gradients: ``"chunk"`` for the linear-attention family, ``"fused"``
for the SRWM (``rec_delta`` is inherently sequential: only ``"recurrent"``).
"""
from .delta_rule import delta_rule
from .linear_attention import linear_attention
from .rec_delta import rec_delta
from .srwm import srwm

__all__ = ["linear_attention", "delta_rule", "rec_delta", "srwm"]
