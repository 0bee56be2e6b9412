"""Helpers shared by the chunked ops (:mod:`.linear_attention`, :mod:`.delta_rule`).

Input checks, the default zero state, and the chunk layout: ``[B, T, H, ...]`` (batch-first) <->
``[N, G = B*H, C, ...]`` (chunk-major, ``N`` chunks of ``C`` steps, time zero-padded to ``N * C``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

MODES = ("recurrent", "chunk")  # the modes of the chunked ops


def check_inputs(
    op: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: Optional[torch.Tensor],
    initial_state: Optional[torch.Tensor],
    mode: str,
    chunk_size: int,
) -> None:
    """Raise ``ValueError`` naming the offending shapes/arguments."""
    if mode not in MODES:
        raise ValueError(f"{op}: unknown mode {mode!r}; expected one of {', '.join(map(repr, MODES))}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{op}: chunk_size must be a positive int, got {chunk_size!r}")
    if q.dim() != 4:
        raise ValueError(f"{op}: q must be [B, T, H, Dk], got shape {tuple(q.shape)}")
    if k.shape != q.shape:
        raise ValueError(f"{op}: k shape {tuple(k.shape)} != q shape {tuple(q.shape)} (both [B, T, H, Dk])")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"{op}: v must be [B, T, H, Dv] with [B, T, H] = {tuple(q.shape[:3])} from q, "
            f"got v shape {tuple(v.shape)}"
        )
    if beta is not None and beta.shape != q.shape[:3]:
        raise ValueError(
            f"{op}: beta must be [B, T, H] = {tuple(q.shape[:3])}, got beta shape {tuple(beta.shape)}"
        )
    if initial_state is not None:
        B, _, H, Dk = q.shape
        want = (B, H, Dk, v.shape[-1])
        if tuple(initial_state.shape) != want:
            raise ValueError(
                f"{op}: initial_state must be [B, H, Dk, Dv] = {want}, "
                f"got shape {tuple(initial_state.shape)}"
            )


def state_or_zeros(q: torch.Tensor, v: torch.Tensor, initial_state: Optional[torch.Tensor]) -> torch.Tensor:
    """``initial_state`` or zeros ``[B, H, Dk, Dv]`` in q's dtype/device."""
    if initial_state is not None:
        return initial_state
    B, _, H, Dk = q.shape
    return q.new_zeros(B, H, Dk, v.shape[-1])


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[B, T, H, ...]`` -> ``[N, B*H, C, ...]`` (chunk-major, contiguous), zero-padding T up to ``N * C``.

    Chunk-major so that the sequential loops over chunks read and write contiguous slices ``x[n]``
    (strided slices make CPU batched matmuls fall back to one small GEMM per batch entry).
    """
    B, T, H = x.shape[:3]
    pad = (-T) % chunk_size
    if pad:
        # F.pad counts dims from the last one; pad only the time dimension (dim 1).
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
    x = x.reshape(B, -1, chunk_size, H, *x.shape[3:])  # [B, N, C, H, ...]
    x = x.movedim(3, 1).movedim(2, 0)  # [N, B, H, C, ...]
    return x.contiguous().flatten(1, 2)


def from_chunks(x: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """``[N, B*H, C, D]`` -> ``[B, T, H, D]``, dropping the padding."""
    N, G, C, D = x.shape
    x = x.view(N, B, G // B, C, D).movedim(0, 1).movedim(3, 2)  # [B, N, C, H, D]
    return x.reshape(B, N * C, G // B, D)[:, :T]


def bmm_view(x: torch.Tensor) -> torch.Tensor:
    """``[N, G, R, D]`` -> ``[N*G, R, D]`` (a view) for ``torch.bmm``/``baddbmm``."""
    return x.flatten(0, 1)


def above_diagonal(C: int, device, diagonal: int) -> torch.Tensor:
    """``[C, C]`` bool mask of the entries to zero with ``masked_fill_``: ``triu(diagonal)``. With
    ``diagonal=1`` what is left is the causal lower triangle (diagonal included), with 0 the strict one."""
    return torch.ones(C, C, dtype=torch.bool, device=device).triu(diagonal)
