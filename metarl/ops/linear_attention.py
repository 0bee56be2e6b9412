"""Linear attention (un-normalised fast weights with purely additive updates).

Shapes (batch-first)::

    q, k: [B, T, H, Dk]    v: [B, T, H, Dv]    state S: [B, H, Dk, Dv]

Recurrence::

    S_t = S_{t-1} + k_t v_tᵀ
    o_t = S_tᵀ q_t                       o: [B, T, H, Dv]

No feature map, scaling or normalisation is applied here; the cores do that.

``mode="recurrent"`` is the step-by-step definition (the oracle). ``mode="chunk"`` splits time into
chunks of ``C`` steps; inside a chunk the output is ``(Q Kᵀ ⊙ M) V + Q S_prev`` with ``M`` the causal
mask (diagonal included), and the chunk-start states ``S_prev`` are a prefix sum of ``Kᵀ V`` over chunks.

The small helpers below (input checks, padding and chunking) are shared with :mod:`.delta_rule`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

MODES = ("recurrent", "chunk")


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------
def _check_inputs(
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


def _initial_state(q: torch.Tensor, v: torch.Tensor, initial_state: Optional[torch.Tensor]) -> torch.Tensor:
    """``initial_state`` or zeros ``[B, H, Dk, Dv]`` in q's dtype/device."""
    if initial_state is not None:
        return initial_state
    B, _, H, Dk = q.shape
    return q.new_zeros(B, H, Dk, v.shape[-1])


def _to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[B, T, H, ...]`` -> ``[B, H, N, C, ...]``, zero-padding T up to ``N * C``."""
    T = x.shape[1]
    pad = (-T) % chunk_size
    x = x.movedim(1, 2)  # [B, H, T, ...]
    if pad:
        # F.pad counts dims from the last one; pad only the time dimension (dim 2 here).
        x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
    # contiguous once here, so that the batched matmuls below never copy again (forward or backward)
    return x.reshape(*x.shape[:2], -1, chunk_size, *x.shape[3:]).contiguous()


def _from_chunks(x: torch.Tensor, T: int) -> torch.Tensor:
    """``[B, H, N, C, D]`` -> ``[B, T, H, D]``, dropping the padding."""
    B, H, N, C, D = x.shape
    return x.reshape(B, H, N * C, D)[:, :, :T].transpose(1, 2)


# --------------------------------------------------------------------------------------------------
# linear attention
# --------------------------------------------------------------------------------------------------
def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    mode: str = "chunk",
    chunk_size: int = 64,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Linear attention ``S_t = S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t``.

    Args:
        q, k: ``[B, T, H, Dk]``.
        v: ``[B, T, H, Dv]``.
        initial_state: ``[B, H, Dk, Dv]`` or ``None`` (zeros).
        mode: ``"recurrent"`` (step-by-step oracle) or ``"chunk"`` (chunkwise parallel).
        chunk_size: chunk length ``C`` for ``mode="chunk"`` (any ``T`` works; padded internally).

    Returns:
        ``(o, final_state)`` with ``o: [B, T, H, Dv]`` and ``final_state: [B, H, Dk, Dv]``.
    """
    _check_inputs("linear_attention", q, k, v, None, initial_state, mode, chunk_size)
    S0 = _initial_state(q, v, initial_state)
    if mode == "recurrent":
        return _linear_attention_recurrent(q, k, v, S0)
    return _linear_attention_chunk(q, k, v, S0, chunk_size)


def _linear_attention_recurrent(q, k, v, S):
    outputs = []
    # unbind, not q[:, t]: indexing makes autograd write a full-size zero gradient per step (O(T²))
    for q_t, k_t, v_t in zip(q.unbind(1), k.unbind(1), v.unbind(1)):  # [B, H, Dk], [B, H, Dk], [B, H, Dv]
        S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # S_t = S_{t-1} + k_t v_tᵀ
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))  # o_t = S_tᵀ q_t
    return torch.stack(outputs, dim=1), S


def _linear_attention_chunk(q, k, v, S0, chunk_size):
    T = q.shape[1]
    C = min(chunk_size, T)  # a short sequence is one (unpadded) chunk
    Q, K, V = (_to_chunks(x, C) for x in (q, k, v))  # [B, H, N, C, D]

    # Per-chunk state increments Kᵀ V, and the state at the start of every chunk (exclusive prefix sum).
    dS = K.transpose(-1, -2) @ V  # [B, H, N, Dk, Dv]
    S_end = S0.unsqueeze(2) + dS.cumsum(dim=2)  # state after each chunk
    S_start = torch.cat([S0.unsqueeze(2), S_end[:, :, :-1]], dim=2)

    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = (Q @ K.transpose(-1, -2)).masked_fill(~causal, 0)  # [B, H, N, C, C]
    O = scores @ V + Q @ S_start  # intra-chunk + inter-chunk
    return _from_chunks(O, T), S_end[:, :, -1]
