"""Pure tensor functions (no parameters), batch-first ``[B, T, H, D]``.

Each op has ``mode="recurrent"``, the step-by-step definition used as the oracle, and a faster mode
that returns the same values and gradients: ``"chunk"`` for the linear-attention family, ``"fused"``
for the SRWM.
"""
from .delta_rule import delta_rule
from .linear_attention import linear_attention
from .srwm import srwm

__all__ = ["linear_attention", "delta_rule", "srwm"]
