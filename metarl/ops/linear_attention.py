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

The chunk mode's backward pass is written by hand and is first order only: for gradients of
gradients use ``mode="recurrent"``.

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


def _from_chunks(x: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """``[N, B*H, C, D]`` -> ``[B, T, H, D]``, dropping the padding."""
    N, G, C, D = x.shape
    x = x.view(N, B, G // B, C, D).movedim(0, 1).movedim(3, 2)  # [B, N, C, H, D]
    return x.reshape(B, N * C, G // B, D)[:, :T]


def _bmm_view(x: torch.Tensor) -> torch.Tensor:
    """``[N, G, R, D]`` -> ``[N*G, R, D]`` (a view) for ``torch.bmm``/``baddbmm``."""
    return x.flatten(0, 1)


def _above_diagonal(C: int, device, diagonal: int) -> torch.Tensor:
    """``[C, C]`` bool mask of the entries to zero with ``masked_fill_``: ``triu(diagonal)``. With
    ``diagonal=1`` what is left is the causal lower triangle (diagonal included), with 0 the strict one."""
    return torch.ones(C, C, dtype=torch.bool, device=device).triu(diagonal)


# --------------------------------------------------------------------------------------------------
# linear attention
# --------------------------------------------------------------------------------------------------
def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    mode: str = "chunk",
    chunk_size: int = 32,
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
    (B, T, H, Dk), Dv = q.shape, v.shape[-1]
    C = min(chunk_size, T)  # a short sequence is one (unpadded) chunk
    Q, K, V = (_to_chunks(x, C) for x in (q, k, v))  # [N, G=B*H, C, D]
    O, S_final = _LinearAttentionChunk.apply(Q, K, V, S0.reshape(B * H, Dk, Dv))
    return _from_chunks(O, B, T), S_final.view(B, H, Dk, Dv)


class _LinearAttentionChunk(torch.autograd.Function):
    """Chunkwise linear attention with a hand-written backward (shapes ``[N, G, C, D]``, G = B*H).

    Forward, per chunk n, with ``A_n = tril(Q_n K_nᵀ)`` and ``S_n`` the state at the chunk start::

        S_{n+1} = S_n + K_nᵀ V_n            O_n = Q_n S_n + A_n V_n

    Backward, with ``dS'_n`` the gradient of the state after chunk n (a reverse prefix sum)::

        dA_n = tril(dO_n V_nᵀ)             dQ_n = dA_n K_n + dO_n S_nᵀ
        dS'_n = dS_final + Σ_{m>n} Q_mᵀ dO_m
        dK_n = dA_nᵀ Q_n + V_n dS'_nᵀ       dV_n = A_nᵀ dO_n + K_n dS'_n
        dS_0 = dS'_0 + Q_0ᵀ dO_0

    Written by hand, every product is one batched matmul on contiguous tensors; autograd's version
    spent more time in prefix sums, flips and stride fix-ups than in the matmuls.
    """

    @staticmethod
    def forward(ctx, Q, K, V, S0):
        N, G, C, Dk = Q.shape
        A = (Q @ K.transpose(-1, -2)).masked_fill_(_above_diagonal(C, Q.device, 1), 0)  # [N, G, C, C]
        KV = K.transpose(-1, -2) @ V  # [N, G, Dk, Dv]
        S_start = torch.empty_like(KV)  # the state at the start of each chunk
        S_start[0] = S0
        for n in range(1, N):
            torch.add(S_start[n - 1], KV[n - 1], out=S_start[n])
        S_final = S_start[-1] + KV[-1]
        O = (_bmm_view(Q) @ _bmm_view(S_start)).baddbmm_(_bmm_view(A), _bmm_view(V))
        ctx.save_for_backward(Q, K, V, A, S_start)
        return O.view(V.shape), S_final

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dO, dS_final):
        Q, K, V, A, S_start = ctx.saved_tensors
        N, G, C, Dk = Q.shape
        dO = torch.zeros_like(V) if dO is None else dO.contiguous()
        dS_local = Q.transpose(-1, -2) @ dO  # [N, G, Dk, Dv]: the gradient reaching S_n through O_n
        dS_after = torch.empty_like(dS_local)  # dS'_n
        dS_after[-1] = 0 if dS_final is None else dS_final
        for n in range(N - 1, 0, -1):
            torch.add(dS_after[n], dS_local[n], out=dS_after[n - 1])
        dS0 = dS_after[0] + dS_local[0]

        dA = (dO @ V.transpose(-1, -2)).masked_fill_(_above_diagonal(C, Q.device, 1), 0)
        Qb, Kb, Vb, Ab, dOb, dAb = (_bmm_view(x) for x in (Q, K, V, A, dO, dA))
        dQ = (dOb @ _bmm_view(S_start).transpose(1, 2)).baddbmm_(dAb, Kb)
        dK = (Vb @ _bmm_view(dS_after).transpose(1, 2)).baddbmm_(dAb.transpose(1, 2), Qb)
        dV = (Kb @ _bmm_view(dS_after)).baddbmm_(Ab.transpose(1, 2), dOb)
        return dQ.view(Q.shape), dK.view(K.shape), dV.view(V.shape), dS0
