"""One tolerance helper for every kernel/core test (fla-style)."""
from __future__ import annotations

import torch


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """max |ref - out| / max(max |ref|, tiny)."""
    ref, out = ref.detach().double(), out.detach().double()
    scale = ref.abs().max().clamp_min(1e-30)
    return ((ref - out).abs().max() / scale).item()


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, rtol: float = 1e-5) -> None:
    """Fail with the tensor's name and the measured error when the relative error exceeds ``rtol``."""
    if ref.shape != out.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        raise AssertionError(f"{name}: non-finite values")
    err = relative_error(ref, out)
    if err > rtol:
        raise AssertionError(f"{name}: relative error {err:.3e} > {rtol:.1e}")
