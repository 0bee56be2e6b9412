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

The input checks and the chunk layout are shared with :mod:`.delta_rule` (:mod:`.utils`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .utils import above_diagonal, bmm_view, check_inputs, from_chunks, state_or_zeros, to_chunks


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
    check_inputs("linear_attention", q, k, v, None, initial_state, mode, chunk_size)
    S0 = state_or_zeros(q, v, initial_state)
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
    Q, K, V = (to_chunks(x, C) for x in (q, k, v))  # [N, G=B*H, C, D]
    O, S_final = _LinearAttentionChunk.apply(Q, K, V, S0.reshape(B * H, Dk, Dv))
    return from_chunks(O, B, T), S_final.view(B, H, Dk, Dv)


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
        A = (Q @ K.transpose(-1, -2)).masked_fill_(above_diagonal(C, Q.device, 1), 0)  # [N, G, C, C]
        KV = K.transpose(-1, -2) @ V  # [N, G, Dk, Dv]
        S_start = torch.empty_like(KV)  # the state at the start of each chunk
        S_start[0] = S0
        for n in range(1, N):
            torch.add(S_start[n - 1], KV[n - 1], out=S_start[n])
        S_final = S_start[-1] + KV[-1]
        O = (bmm_view(Q) @ bmm_view(S_start)).baddbmm_(bmm_view(A), bmm_view(V))
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

        dA = (dO @ V.transpose(-1, -2)).masked_fill_(above_diagonal(C, Q.device, 1), 0)
        Qb, Kb, Vb, Ab, dOb, dAb = (bmm_view(x) for x in (Q, K, V, A, dO, dA))
        dQ = (dOb @ bmm_view(S_start).transpose(1, 2)).baddbmm_(dAb, Kb)
        dK = (Vb @ bmm_view(dS_after).transpose(1, 2)).baddbmm_(dAb.transpose(1, 2), Qb)
        dV = (Kb @ bmm_view(dS_after)).baddbmm_(Ab.transpose(1, 2), dOb)
        return dQ.view(Q.shape), dK.view(K.shape), dV.view(V.shape), dS0
