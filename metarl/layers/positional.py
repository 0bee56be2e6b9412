"""Positional encodings of the softmax-attention core: sinusoidal table, rotary embedding, ALiBi slopes.

Pure functions of position indices (no parameters); the learned table and the learned relative bias live
in the mixer (``metarl.cores.transformer``), which also chooses between them with ``positional``.

Angles are computed in float32 (float64 for float64 inputs) whatever the model dtype, then cast back.
"""
from __future__ import annotations

import math

import torch

# the values of the transformer mixer's ``positional`` option
POSITIONAL = ("sinusoidal", "learned", "rope", "relative", "alibi", "none")


def _angle_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which angles are computed for a model of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sinusoidal_encoding(positions: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """positions [...] (long) -> [..., dim]: sin(p / 10000^(2i/dim)) at feature 2i, cos at 2i+1."""
    half = (dim + 1) // 2
    adt = _angle_dtype(dtype)
    freq = torch.exp(torch.arange(half, device=positions.device, dtype=adt) * (-2.0 * math.log(10000.0) / dim))
    angle = positions.to(adt)[..., None] * freq
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)[..., :dim].to(dtype)


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding. x: [B, T, H, dh] (dh even), positions: [B, T] -> [B, T, H, dh].

    Feature pairs (i, i + dh/2) are rotated by the angle ``p * base^(-2i/dh)``.
    """
    half = x.shape[-1] // 2
    adt = _angle_dtype(x.dtype)
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=adt) / half)
    angle = positions.to(adt)[..., None] * inv_freq  # [B, T, half]
    cos = angle.cos().to(x.dtype)[:, :, None, :]
    sin = angle.sin().to(x.dtype)[:, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def alibi_slopes(num_heads: int) -> list[float]:
    """The ALiBi head slopes: 2^(-8/n), 2^(-16/n), ... for n a power of two; otherwise the slopes of the
    largest power of two below n, then every other slope of the next power of two."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if num_heads & (num_heads - 1) == 0:
        return power_of_two(num_heads)
    lower = 2 ** int(math.floor(math.log2(num_heads)))
    return power_of_two(lower) + power_of_two(2 * lower)[0::2][: num_heads - lower]
