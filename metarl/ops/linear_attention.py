"""Linear attention (un-normalised fast weights with purely additive updates).

Shapes (batch-first)::

    q, k: [B, T, H, Dk]    v: [B, T, H, Dv]    state S: [B, H, Dk, Dv]    reset: [B, T] bool

Recurrence (``S_r`` the reset state: ``reset_state``, by default the initial state of the call)::

    S_{t-1} <- S_r  where reset[b, t]   (row b starts over before step t)
    S_t = S_{t-1} + k_t v_tᵀ
    o_t = S_tᵀ q_t                       o: [B, T, H, Dv]

No feature map, scaling or normalisation is applied here; the cores do that.

``mode="recurrent"`` is the step-by-step definition (the oracle). ``mode="chunk"`` splits time into
chunks of ``C`` steps; inside a chunk the output is ``(Q Kᵀ ⊙ M) V + Q S_prev`` with ``M`` the causal
mask (diagonal included), and the chunk-start states ``S_prev`` are a prefix sum of ``Kᵀ V`` over chunks.

Resets in the chunk mode (no cut of the time axis; a batch with resets costs about what it costs
without): inside a chunk ``M`` also masks the pairs (i, j) with a reset in (j, i] (a step attends only to
its own segment); the steps before a row's first reset in the chunk read the carried state, the later
ones read ``S_r``; the state carried out of a chunk in which a row resets is ``S_r`` plus the updates of
the row's last segment.

The chunk mode's backward pass is written by hand and is first order only: for gradients of
gradients use ``mode="recurrent"``.

The input checks and the chunk layout are shared with :mod:`.delta_rule` (:mod:`.utils`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .utils import (
    ChunkResets,
    bmm_view,
    check_inputs,
    check_reset,
    check_reset_state,
    from_chunks,
    is_zero_constant,
    state_or_zeros,
    to_chunks,
)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    mode: str = "chunk",
    chunk_size: int = 32,
    reset: Optional[torch.Tensor] = None,
    reset_state: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Linear attention ``S_t = S_{t-1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t``.

    Args:
        q, k: ``[B, T, H, Dk]``.
        v: ``[B, T, H, Dv]``.
        initial_state: ``[B, H, Dk, Dv]`` or ``None`` (zeros).
        mode: ``"recurrent"`` (step-by-step oracle) or ``"chunk"`` (chunkwise parallel).
        chunk_size: chunk length ``C`` for ``mode="chunk"`` (any ``T`` works; padded internally).
        reset: ``[B, T]`` bool or ``None``: ``reset[b, t]`` sets row b's state to ``reset_state`` before step t.
        reset_state: ``[B, H, Dk, Dv]``, the state a reset returns to; ``None``: the initial state of the
            call (``initial_state``, or zeros). A core that carries its state across calls passes its own
            initial state here.

    Returns:
        ``(o, final_state)`` with ``o: [B, T, H, Dv]`` and ``final_state: [B, H, Dk, Dv]``.
    """
    check_inputs("linear_attention", q, k, v, None, initial_state, mode, chunk_size)
    S0 = state_or_zeros(q, v, initial_state)
    check_reset_state("linear_attention", reset_state, S0)
    reset = check_reset("linear_attention", reset, q.shape[0], q.shape[1])
    Sr = S0 if reset_state is None else reset_state
    if mode == "recurrent":
        return _linear_attention_recurrent(q, k, v, S0, reset, Sr)
    return _linear_attention_chunk(q, k, v, S0, chunk_size, reset, Sr)


def _linear_attention_recurrent(q, k, v, S, reset=None, S_reset=None):
    outputs = []
    resets = [None] * q.shape[1] if reset is None else reset[:, :, None, None, None].unbind(1)  # [B, 1, 1, 1]
    # unbind, not q[:, t]: indexing makes autograd write a full-size zero gradient per step (O(T²))
    for q_t, k_t, v_t, r_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), resets):  # [B, H, Dk], [B, H, Dk], [B, H, Dv]
        if r_t is not None:
            S = torch.where(r_t, S_reset, S)  # row b starts over before step t
        S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # S_t = S_{t-1} + k_t v_tᵀ
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))  # o_t = S_tᵀ q_t
    return torch.stack(outputs, dim=1), S


def _linear_attention_chunk(q, k, v, S0, chunk_size, reset=None, S_reset=None):
    (B, T, H, Dk), Dv = q.shape, v.shape[-1]
    C = min(chunk_size, T)  # a short sequence is one (unpadded) chunk
    Q, K, V = (to_chunks(x, C) for x in (q, k, v))  # [N, G=B*H, C, D]
    S0 = S0.reshape(B * H, Dk, Dv)
    if reset is None:
        O, S_final = _LinearAttentionChunk.apply(Q, K, V, S0)
    else:
        resets = ChunkResets(reset, H, C, q.dtype)
        Sr = None if is_zero_constant(S_reset) else S_reset.reshape(B * H, Dk, Dv)  # None: zeros, no gradient
        O, S_final = _LinearAttentionChunkResets.apply(Q, K, V, S0, Sr, resets)
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
        A = (Q @ K.transpose(-1, -2)).tril_()  # [N, G, C, C]
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

        dA = (dO @ V.transpose(-1, -2)).tril_()
        Qb, Kb, Vb, Ab, dOb, dAb = (bmm_view(x) for x in (Q, K, V, A, dO, dA))
        dQ = (dOb @ bmm_view(S_start).transpose(1, 2)).baddbmm_(dAb, Kb)
        dK = (Vb @ bmm_view(dS_after).transpose(1, 2)).baddbmm_(dAb.transpose(1, 2), Qb)
        dV = (Kb @ bmm_view(dS_after)).baddbmm_(Ab.transpose(1, 2), dOb)
        return dQ.view(Q.shape), dK.view(K.shape), dV.view(V.shape), dS0


class _LinearAttentionChunkResets(torch.autograd.Function):
    """:class:`_LinearAttentionChunk` with a reset mask (:class:`.utils.ChunkResets`: the pairs to mask, the
    0/1 row masks ``f = first`` and ``l = last``, the cut rows ``z``) and the reset state ``S_r``. Per chunk::

        A = Q Kᵀ masked                    O = diag(f) Q S + diag(1-f) Q S_r + A V
        S' = (S_r if z else S) + Kᵀ diag(l) V

    Backward, ``dS'`` the gradient of the state after the chunk::

        dS = (0 if z else dS') + Qᵀ diag(f) dO                    (the only sequential part)
        dS_r = Σ_chunks (dS' if z else 0) + Qᵀ diag(1-f) dO
        dA = dO Vᵀ masked                   dQ = dA K + diag(f) dO Sᵀ + diag(1-f) dO S_rᵀ
        dK = dAᵀ Q + diag(l) V dS'ᵀ         dV = Aᵀ dO + diag(l) K dS'

    ``Sr=None``: the reset state is zeros and needs no gradient (the lt and delta cores), so the terms in
    ``S_r`` and ``dS_r`` are skipped.
    """

    @staticmethod
    def forward(ctx, Q, K, V, S0, Sr, resets):
        N, G, C, Dk = Q.shape
        A = resets.mask_(Q @ K.transpose(-1, -2))  # [N, G, C, C]
        K_last = K * resets.last
        KV = K_last.transpose(-1, -2) @ V  # [N, G, Dk, Dv]: the updates of each chunk's last segment
        S_start = torch.empty_like(KV)
        S_start[0] = S0
        cut = resets.uncut if Sr is None else lambda n, S: resets.where_cut(n, Sr, S)
        for n in range(1, N):
            torch.add(cut(n - 1, S_start[n - 1]), KV[n - 1], out=S_start[n])
        S_final = cut(N - 1, S_start[-1]) + KV[-1]
        O = torch.bmm(bmm_view(Q * resets.first), bmm_view(S_start))
        if Sr is not None:
            O.view(N, G, C, -1).add_((Q * resets.after) @ Sr)  # Sr broadcast over the chunks
        O.baddbmm_(bmm_view(A), bmm_view(V))
        ctx.save_for_backward(Q, K, K_last, V, A, S_start, Sr)
        ctx.resets = resets
        return O.view(V.shape), S_final

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dO, dS_final):
        Q, K, K_last, V, A, S_start, Sr = ctx.saved_tensors
        resets = ctx.resets
        N, G, C, Dk = Q.shape
        dO = torch.zeros_like(V) if dO is None else dO.contiguous()
        dS_local = (Q * resets.first).transpose(-1, -2) @ dO  # [N, G, Dk, Dv]: reaching S_n through O_n
        dS_after = torch.empty_like(dS_local)  # dS'_n
        dS_after[-1] = 0 if dS_final is None else dS_final
        for n in range(N - 1, 0, -1):
            torch.add(resets.uncut(n, dS_after[n]), dS_local[n], out=dS_after[n - 1])
        dS0 = resets.uncut(0, dS_after[0]) + dS_local[0]
        dSr = None
        if Sr is not None:
            dSr = resets.cut_sum(dS_after) + ((Q * resets.after).transpose(-1, -2) @ dO).sum(0)

        dA = resets.mask_(dO @ V.transpose(-1, -2))
        Qb, Kb, Ab, dOb, dAb, dSb = (bmm_view(x) for x in (Q, K, A, dO, dA, dS_after))
        dQ = torch.bmm(bmm_view(dO * resets.first), bmm_view(S_start).transpose(1, 2))
        if Sr is not None:  # (a transposed broadcast operand is slower: contiguous)
            dQ.view(N, G, C, -1).add_((dO * resets.after) @ Sr.transpose(-1, -2).contiguous())
        dQ.baddbmm_(dAb, Kb)
        dK = (bmm_view(V * resets.last) @ dSb.transpose(1, 2)).baddbmm_(dAb.transpose(1, 2), Qb)
        dV = (bmm_view(K_last) @ dSb).baddbmm_(Ab.transpose(1, 2), dOb)
        return dQ.view(Q.shape), dK.view(K.shape), dV.view(V.shape), dS0, dSr, None
