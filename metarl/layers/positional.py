"""Positional encodings of the softmax-attention core: sinusoidal table, rotary embedding, ALiBi slopes and
biases, and the random distances of randomized relative encodings.

Pure functions of position indices (no parameters); the learned tables (absolute positions, the scalar
relative bias) and the Transformer-XL projection live in the mixer (``metarl.cores.transformer``), which also
chooses between them with ``positional``.

References read: google-deepmind/randomized_positional_encodings ``models/positional_encodings.py`` (Ruoss et
al. 2023; the same encodings as google-deepmind/neural_networks_chomsky_hierarchy
``models/positional_encodings.py``, Delétang et al. 2023). Where each function follows it and where it
differs is in its docstring.

Angles are computed in float32 (float64 for float64 inputs) whatever the model dtype, then cast back.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

# the values of the transformer mixer's ``positional`` option
POSITIONAL = ("sinusoidal", "learned", "rope", "relative", "relative_bias", "alibi", "none")
# absolute encodings: a vector per position, added to an input (every layer's, or once to the core input)
ABSOLUTE = ("sinusoidal", "learned")
# encodings whose randomized version (Ruoss et al.) draws random relative *distances* instead of positions
RANDOM_DISTANCES = ("relative", "alibi")


def _angle_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which angles are computed for a model of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sinusoidal_encoding(positions: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """positions [...] (long, may be negative) -> [..., dim]: sin(p / 10000^(2i/dim)) at feature 2i, cos at 2i+1.

    The reference (``sinusoid_position_encoding``, max_timescale 10000) has the same frequencies but puts all
    sines first, then all cosines; the two layouts differ by a fixed permutation of the features, which every
    use here (added to a learned embedding, or projected by a learned matrix) absorbs, so the models are the
    same. The reference also needs an even ``dim``; an odd one drops the last cosine here.
    """
    half = (dim + 1) // 2
    adt = _angle_dtype(dtype)
    freq = torch.exp(torch.arange(half, device=positions.device, dtype=adt) * (-2.0 * math.log(10000.0) / dim))
    angle = positions.to(adt)[..., None] * freq
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)[..., :dim].to(dtype)


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding. x: [B, T, H, dh] (dh even), positions: [B, T] -> [B, T, H, dh].

    Feature pairs (i, i + dh/2) are rotated by the angle ``p * base^(-2i/dh)``. The reference
    (``apply_rotary_encoding``) rotates neighbouring pairs (2i, 2i+1) by the same angles: a fixed permutation
    of the head features, absorbed by the learned q/k projections (the same model).
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
    largest power of two below n, then every other slope of the next power of two (the reference's
    ``_get_alibi_slopes``, which follows Press et al.'s official code)."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if num_heads & (num_heads - 1) == 0:
        return power_of_two(num_heads)
    lower = 2 ** int(math.floor(math.log2(num_heads)))
    return power_of_two(lower) + power_of_two(2 * lower)[0::2][: num_heads - lower]


# the reference's constant that breaks the left/right symmetry of the bidirectional ALiBi bias
ALIBI_LEFT_OFFSET = 0.5


def alibi_bias(distance: torch.Tensor, slopes: torch.Tensor, causal: bool,
               left_offset: float = ALIBI_LEFT_OFFSET) -> torch.Tensor:
    """The ALiBi attention bias. distance: [B, T, S], key minus query position (``j - i``, float; the random
    distances of the randomized version); slopes: [H] -> [B, H, T, S].

    causal (Press et al. 2022):  ``slope_h * (j - i)``  (only ``j <= i`` is attended).
    bidirectional (Ruoss et al. 2023, ``compute_alibi_encodings_biases``, lines 575-586 of the reference's
    ``positional_encodings.py``):  ``slope_h * (-|j - i| + left_offset * [j < i])``. The bias falls with the
    distance on both sides, so it carries relative position in a non-causal softmax (``slope * (j - i)``
    there is, per query row, a constant plus ``slope * j``: a pull toward the last key whatever the query).
    ``left_offset`` is the reference's 0.5 on the lower triangle, "to (arbitrarily) break the symmetry
    (otherwise, the model cannot distinguish left and right)"; with ``left_offset=0`` the bias is the
    symmetric ``-slope * |j - i|`` and an encoder with only this encoding is equivariant under reversing the
    sequence. For ``j <= i`` the causal and bidirectional formulas differ only by the offset, which is not
    used in the causal case (the reference applies its matrix, offset included, to causal encoders too).
    """
    slopes = slopes.to(distance.dtype).view(1, -1, 1, 1)
    distance = distance[:, None]
    if causal:
        return slopes * distance
    return slopes * (left_offset * (distance < 0).to(distance.dtype) - distance.abs())


def random_distances(batch: int, largest: int, max_len: int, generator: Optional[torch.Generator] = None,
                     device=None) -> torch.Tensor:
    """The random distances of a randomized relative encoding: [batch, largest + 1] long, row b holding
    ``0 = r[b, 0] < r[b, 1] < ... < r[b, largest] < max_len``, with ``r[b, 1:]`` a sorted uniform random
    ``largest``-subset of ``[1, max_len)`` (drawn independently per row). A distance ``d`` between two steps
    becomes ``sign(d) * r[|d|]`` (:func:`map_distances`).

    This is how the reference draws them (``compute_attention_with_noisy_relative_encodings`` and
    ``compute_noisy_alibi_encodings_biases``, ``randomize_both_sides=False``, its default: ``right_indexes``
    = sorted ``jrandom.choice(arange(1, noise_max_length), (T - 1,), replace=False)``, mirrored for the left
    side); the reference draws one set per batch and per layer, metarl one per sequence, shared by all
    layers (the paper's "random ordered positional encoding vector ... to each training example", and the
    same convention as metarl's random positions).
    """
    if largest > max_len - 1:
        raise ValueError(f"random_distances: {largest} distinct distances do not fit in [1, {max_len})")
    zero = torch.zeros(batch, 1, dtype=torch.long, device=device)
    if largest == 0:
        return zero
    keys = torch.rand(batch, max_len - 1, device=device, generator=generator)
    # the first n of a uniformly random order of [1, max_len) are a uniform random n-subset
    chosen = keys.topk(largest, dim=1, largest=False, sorted=False).indices + 1
    return torch.cat((zero, chosen.sort(dim=1).values), dim=1)


def map_distances(distance: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """distance [B, ...] (long) -> ``sign(distance) * table[b, |distance|]`` (long, same shape), with ``table``
    [B, n + 1] from :func:`random_distances`; distances beyond n are clamped to n (callers mask them)."""
    flat = distance.reshape(distance.shape[0], -1)
    magnitude = flat.abs().clamp_max(table.shape[1] - 1)
    return (flat.sign() * table.gather(1, magnitude)).view_as(distance)
