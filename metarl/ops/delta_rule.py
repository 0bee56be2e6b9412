"""Delta rule (DeltaNet fast weights).

Shapes (batch-first)::

    q, k: [B, T, H, Dk]    v: [B, T, H, Dv]    beta: [B, T, H]    state S: [B, H, Dk, Dv]    reset: [B, T] bool

Recurrence (``S_r`` the reset state: ``reset_state``, by default the initial state of the call)::

    S_{t-1} <- S_r  where reset[b, t]   (row b starts over before step t)
    u_t = beta_t (v_t - S_{t-1}ᵀ k_t)
    S_t = S_{t-1} + k_t u_tᵀ
    o_t = S_tᵀ q_t                       o: [B, T, H, Dv]

``mode="recurrent"`` is the step-by-step definition (the oracle). ``mode="chunk"`` is the WY / UT
transform form of Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length". With rows indexed by time inside a chunk and ``S`` the state at the chunk start,
the rows ``U`` of the ``u_t`` satisfy ``(I + A) U = diag(β) (V - K S)`` where
``A = strictly_lower(diag(β) K Kᵀ)``. So with ``T_c = (I + A)^{-1} diag(β)``,
``W = T_c K`` and ``Ũ = T_c V`` (one batched triangular solve for all chunks at once)::

    U = Ũ - W S
    O = Q S + (Q Kᵀ ⊙ M) U              M: causal mask, diagonal included
    S <- S + Kᵀ U

which leaves a single sequential loop over chunks. Zero-padding k, v and β is exact (padded steps
leave the state unchanged).

Resets in the chunk mode (no cut of the time axis): the pairs (i, j) with a reset in (j, i] are masked in
both ``A`` and ``Q Kᵀ``, so ``I + A`` is block diagonal over the segments of a chunk and the triangular
system never couples steps across a reset. The steps before a row's first reset in the chunk read the
carried state ``S``, the later ones ``S_r``: with ``f`` the 0/1 mask of the former,
``U = Ũ - diag(1-f) W S_r - diag(f) W S`` (the ``S_r`` part is computed for all chunks at once, outside
the loop) and ``O = diag(f) Q S + diag(1-f) Q S_r + A U``; the state carried out of a chunk in which the
row resets is ``S_r`` plus the updates of its last segment.

The chunk mode's backward pass is written by hand (``_DeltaRuleChunk``, ``_DeltaRuleChunkResets``) and is
first order only: for gradients of gradients use ``mode="recurrent"``.
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


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    mode: str = "chunk",
    chunk_size: int = 32,
    reset: Optional[torch.Tensor] = None,
    reset_state: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Delta rule ``S_t = S_{t-1} + k_t (beta_t (v_t - S_{t-1}ᵀ k_t))ᵀ``, ``o_t = S_tᵀ q_t``.

    Args:
        q, k: ``[B, T, H, Dk]``.
        v: ``[B, T, H, Dv]``.
        beta: ``[B, T, H]`` learning rates (the cores keep them in (0, 1)).
        initial_state: ``[B, H, Dk, Dv]`` or ``None`` (zeros).
        mode: ``"recurrent"`` (step-by-step oracle) or ``"chunk"`` (WY / UT-transform chunkwise form).
        chunk_size: chunk length ``C`` for ``mode="chunk"`` (any ``T`` works; padded internally).
        reset: ``[B, T]`` bool or ``None``: ``reset[b, t]`` sets row b's state to ``reset_state`` before step t.
        reset_state: ``[B, H, Dk, Dv]``, the state a reset returns to; ``None``: the initial state of the
            call (``initial_state``, or zeros). A core that carries its state across calls passes its own
            initial state here.

    Returns:
        ``(o, final_state)`` with ``o: [B, T, H, Dv]`` and ``final_state: [B, H, Dk, Dv]``.
    """
    check_inputs("delta_rule", q, k, v, beta, initial_state, mode, chunk_size)
    S0 = state_or_zeros(q, v, initial_state)
    check_reset_state("delta_rule", reset_state, S0)
    reset = check_reset("delta_rule", reset, q.shape[0], q.shape[1])
    Sr = S0 if reset_state is None else reset_state
    if mode == "recurrent":
        return _delta_rule_recurrent(q, k, v, beta, S0, reset, Sr)
    return _delta_rule_chunk(q, k, v, beta, S0, chunk_size, reset, Sr)


def _delta_rule_recurrent(q, k, v, beta, S, reset=None, S_reset=None):
    outputs = []
    resets = [None] * q.shape[1] if reset is None else reset[:, :, None, None, None].unbind(1)  # [B, 1, 1, 1]
    # unbind, not q[:, t]: indexing makes autograd write a full-size zero gradient per step (O(T²))
    for q_t, k_t, v_t, b_t, r_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), beta.unsqueeze(-1).unbind(1), resets):
        if r_t is not None:
            S = torch.where(r_t, S_reset, S)  # row b starts over before step t
        v_old = torch.einsum("bhkv,bhk->bhv", S, k_t)  # S_{t-1}ᵀ k_t
        u_t = b_t * (v_t - v_old)
        S = S + k_t.unsqueeze(-1) * u_t.unsqueeze(-2)  # S_t = S_{t-1} + k_t u_tᵀ
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))  # o_t = S_tᵀ q_t
    return torch.stack(outputs, dim=1), S


def _delta_rule_chunk(q, k, v, beta, S0, chunk_size, reset=None, S_reset=None):
    (B, T, H, Dk), Dv = q.shape, v.shape[-1]
    C = min(chunk_size, T)  # a short sequence is one (unpadded) chunk
    Q, K, V = (to_chunks(x, C) for x in (q, k, v))  # [N, G=B*H, C, D]
    b = to_chunks(beta.unsqueeze(-1), C)  # [N, G, C, 1]
    S0 = S0.reshape(B * H, Dk, Dv)
    if reset is None:
        O, S_final = _DeltaRuleChunk.apply(Q, K, V, b, S0)
    else:
        resets = ChunkResets(reset, H, C, q.dtype)
        Sr = None if is_zero_constant(S_reset) else S_reset.reshape(B * H, Dk, Dv)  # None: zeros, no gradient
        O, S_final = _DeltaRuleChunkResets.apply(Q, K, V, b, S0, Sr, resets)
    return from_chunks(O, B, T), S_final.view(B, H, Dk, Dv)


class _DeltaRuleChunk(torch.autograd.Function):
    """The WY / UT chunkwise delta rule with a hand-written backward (shapes ``[N, G, C, D]``, G = B*H).

    Forward, per chunk (index n dropped), ``S`` the state at its start, ``R = diag(β) [K | V]``::

        L = I + strictly_lower(diag(β) K Kᵀ)      X = [W | Ũ] = L⁻¹ R
        U = Ũ - W S        O = Q S + A U  (A = tril(Q Kᵀ))        S' = S + Kᵀ U

    Backward, chunks in reverse order, ``dS'`` the gradient of the state after the chunk::

        dU = Aᵀ dO + K dS'                dS = dS' + Qᵀ dO - Wᵀ dU        (the only sequential part)
        dA = tril(dO Uᵀ)    dQ = dA K + dO Sᵀ    dK = dAᵀ Q + U dS'ᵀ
        P = L⁻ᵀ dU          dR = L⁻ᵀ [dW | dŨ] = [-P Sᵀ | P]
        dM = -strictly_lower(dR Xᵀ) = -strictly_lower(P Uᵀ)          (M = diag(β) K Kᵀ, U = Ũ - W S)
        d(βK) = -P Sᵀ + dM K    dK += dMᵀ diag(β) K + diag(β) d(βK)    dV = diag(β) P
        dβ = rowsum(d(βK) ⊙ K) + rowsum(P ⊙ V)

    ``L⁻¹`` is formed once (a triangular solve with C right-hand sides, cheaper than one with Dk + Dv
    when the heads are wide) and reused by the backward pass as a matmul.
    """

    @staticmethod
    def forward(ctx, Q, K, V, b, S0):
        N, G, C, Dk = Q.shape
        R = torch.cat([K, V], dim=-1).mul_(b)  # diag(β) [K | V]
        L = (R[..., :Dk] @ K.transpose(-1, -2)).tril_(-1)
        L.diagonal(dim1=-2, dim2=-1).fill_(1)  # unit lower triangular [N, G, C, C]
        eye = torch.eye(C, dtype=Q.dtype, device=Q.device).expand_as(L)
        L_inv = torch.linalg.solve_triangular(L, eye, upper=False, unitriangular=True)
        X = L_inv @ R  # [W | Ũ]
        W, U_tilde = X[..., :Dk], X[..., Dk:]
        A = (Q @ K.transpose(-1, -2)).tril_()  # [N, G, C, C]

        U = torch.empty_like(V)
        S_start = Q.new_empty(N + 1, G, Dk, V.shape[-1])  # the state at each chunk start, then the final one
        S_start[0] = S0
        for n in range(N):  # the only sequential part: carry the state across chunks
            torch.baddbmm(U_tilde[n], W[n], S_start[n], alpha=-1, out=U[n])  # U = Ũ - W S
            torch.baddbmm(S_start[n], K[n].transpose(1, 2), U[n], out=S_start[n + 1])  # S' = S + Kᵀ U
        S_final, S_start = S_start[N].clone(), S_start[:N]
        O = (bmm_view(Q) @ bmm_view(S_start)).baddbmm_(bmm_view(A), bmm_view(U))
        ctx.save_for_backward(Q, K, V, b, R, L_inv, W, A, U, S_start)
        return O.view(V.shape), S_final

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dO, dS_final):
        Q, K, V, b, R, L_inv, W, A, U, S_start = ctx.saved_tensors
        N, G, C, Dk = Q.shape
        dO = torch.zeros_like(V) if dO is None else dO.contiguous()

        dU = A.transpose(-1, -2) @ dO  # Aᵀ dO, completed with K dS' in the loop
        dS_local = Q.transpose(-1, -2) @ dO  # Qᵀ dO
        dS_after = Q.new_empty(N + 1, *S_start.shape[1:])  # dS'_n at [n + 1]; dS_0 at [0]
        dS_after[N] = 0 if dS_final is None else dS_final
        for n in range(N - 1, -1, -1):
            dU[n].baddbmm_(K[n], dS_after[n + 1])  # dU = Aᵀ dO + K dS'
            torch.baddbmm(  # dS = dS' + Qᵀ dO - Wᵀ dU
                dS_local[n].add_(dS_after[n + 1]), W[n].transpose(1, 2), dU[n], alpha=-1, out=dS_after[n]
            )
        dS0, dS_after = dS_after[0], dS_after[1:]

        dA = (dO @ U.transpose(-1, -2)).tril_()
        Qb, Kb, dOb, dAb, Sb = (bmm_view(x) for x in (Q, K, dO, dA, S_start))
        dQ = (dOb @ Sb.transpose(1, 2)).baddbmm_(dAb, Kb)
        dK = (bmm_view(U) @ bmm_view(dS_after).transpose(1, 2)).baddbmm_(dAb.transpose(1, 2), Qb)

        P = L_inv.transpose(-1, -2) @ dU
        dM = (P @ U.transpose(-1, -2)).tril_(-1).neg_()
        d_bK = (bmm_view(dM) @ Kb).baddbmm_(bmm_view(P), Sb.transpose(1, 2), alpha=-1).view(K.shape)
        dK = dK.view(K.shape).add_(dM.transpose(-1, -2) @ R[..., :Dk]).add_(b * d_bK)
        db = (d_bK * K).sum(-1, keepdim=True) + (P * V).sum(-1, keepdim=True)
        return dQ.view(Q.shape), dK, b * P, db, dS0


class _DeltaRuleChunkResets(torch.autograd.Function):
    """:class:`_DeltaRuleChunk` with a reset mask (:class:`.utils.ChunkResets`: the pairs to mask, the 0/1
    row masks ``f = first`` and ``l = last``, the cut rows ``z``) and the reset state ``S_r``. Per chunk::

        L = I + strictly_lower(diag(β) K Kᵀ) masked             X = [W | Ũ] = L⁻¹ R   (L block diagonal)
        U = Ũ - diag(1-f) W S_r - diag(f) W S        O = diag(f) Q S + diag(1-f) Q S_r + A U  (A masked)
        S' = (S_r if z else S) + Kᵀ diag(l) U

    Backward, chunks in reverse order::

        dU = Aᵀ dO + diag(l) K dS'        dS = (0 if z else dS') + Qᵀ diag(f) dO - Wᵀ diag(f) dU
        dS_r = Σ_chunks (dS' if z else 0) + Qᵀ diag(1-f) dO - Wᵀ diag(1-f) dU
        dA = dO Uᵀ masked      dQ = dA K + diag(f) dO Sᵀ + diag(1-f) dO S_rᵀ      dK = dAᵀ Q + diag(l) U dS'ᵀ
        P = L⁻ᵀ dU       dM = -(P Uᵀ) masked       d(βK) = dM K - diag(f) P Sᵀ - diag(1-f) P S_rᵀ
        dK += dMᵀ diag(β) K + diag(β) d(βK)     dV = diag(β) P     dβ = rowsum(d(βK) ⊙ K) + rowsum(P ⊙ V)

    (``L⁻ᵀ`` is block diagonal over the segments too, so it commutes with ``diag(f)``: the gradient of
    ``W`` through ``L⁻¹`` keeps the form of the reset-free case.) ``Sr=None``: the reset state is zeros and
    needs no gradient (the delta core), so the terms in ``S_r`` and ``dS_r`` are skipped.
    """

    @staticmethod
    def forward(ctx, Q, K, V, b, S0, Sr, resets):
        N, G, C, Dk = Q.shape
        R = torch.cat([K, V], dim=-1).mul_(b)  # diag(β) [K | V]
        L = resets.mask_(R[..., :Dk] @ K.transpose(-1, -2), strict=True)
        L.diagonal(dim1=-2, dim2=-1).fill_(1)  # unit lower triangular, block diagonal over segments
        eye = torch.eye(C, dtype=Q.dtype, device=Q.device).expand_as(L)
        L_inv = torch.linalg.solve_triangular(L, eye, upper=False, unitriangular=True)
        X = L_inv @ R  # [W | Ũ]
        W = X[..., :Dk]
        W_first, W_after = W * resets.first, (None if Sr is None else W * resets.after)
        U_tilde = X[..., Dk:]
        if Sr is not None:
            U_tilde = U_tilde - W_after @ Sr  # the steps after a reset read S_r (all chunks at once)
        K_last = K * resets.last
        A = resets.mask_(Q @ K.transpose(-1, -2))  # [N, G, C, C]

        U = torch.empty_like(V)
        S_start = Q.new_empty(N + 1, G, Dk, V.shape[-1])  # the state at each chunk start, then the final one
        S_start[0] = S0
        cut = resets.uncut if Sr is None else lambda n, S: resets.where_cut(n, Sr, S)
        for n in range(N):  # the only sequential part: carry the state across chunks
            torch.baddbmm(U_tilde[n], W_first[n], S_start[n], alpha=-1, out=U[n])  # U = Ũ - diag(f) W S
            torch.baddbmm(cut(n, S_start[n]), K_last[n].transpose(1, 2), U[n], out=S_start[n + 1])
        S_final, S_start = S_start[N].clone(), S_start[:N]
        O = torch.bmm(bmm_view(Q * resets.first), bmm_view(S_start))
        if Sr is not None:
            O.view(N, G, C, -1).add_((Q * resets.after) @ Sr)  # Sr broadcast over the chunks
        O.baddbmm_(bmm_view(A), bmm_view(U))
        ctx.save_for_backward(Q, K, K_last, V, b, R, L_inv, W_first, W_after, A, U, S_start, Sr)
        ctx.resets = resets
        return O.view(V.shape), S_final

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dO, dS_final):
        Q, K, K_last, V, b, R, L_inv, W_first, W_after, A, U, S_start, Sr = ctx.saved_tensors
        resets = ctx.resets
        N, G, C, Dk = Q.shape
        dO = torch.zeros_like(V) if dO is None else dO.contiguous()

        dU = A.transpose(-1, -2) @ dO  # Aᵀ dO, completed with diag(l) K dS' in the loop
        dS_local = (Q * resets.first).transpose(-1, -2) @ dO  # Qᵀ diag(f) dO
        dS_after = Q.new_empty(N + 1, *S_start.shape[1:])  # dS'_n at [n + 1]; dS_0 at [0]
        dS_after[N] = 0 if dS_final is None else dS_final
        for n in range(N - 1, -1, -1):
            dU[n].baddbmm_(K_last[n], dS_after[n + 1])
            torch.baddbmm(dS_local[n].add_(resets.uncut(n, dS_after[n + 1])), W_first[n].transpose(1, 2), dU[n],
                          alpha=-1, out=dS_after[n])
        dS0, dS_after = dS_after[0], dS_after[1:]
        dSr = Sr_T = None
        if Sr is not None:
            dSr = (resets.cut_sum(dS_after) + ((Q * resets.after).transpose(-1, -2) @ dO).sum(0)
                   - (W_after.transpose(-1, -2) @ dU).sum(0))
            Sr_T = Sr.transpose(-1, -2).contiguous()  # (a transposed broadcast operand is slower)

        dA = resets.mask_(dO @ U.transpose(-1, -2))
        Qb, Kb, dOb, dAb, Sb = (bmm_view(x) for x in (Q, K, dO, dA, S_start))
        dQ = torch.bmm(bmm_view(dO * resets.first), Sb.transpose(1, 2))
        if Sr is not None:
            dQ.view(N, G, C, -1).add_((dO * resets.after) @ Sr_T)
        dQ.baddbmm_(dAb, Kb)
        dK = (bmm_view(U * resets.last) @ bmm_view(dS_after).transpose(1, 2)).baddbmm_(
            dAb.transpose(1, 2), Qb)

        P = L_inv.transpose(-1, -2) @ dU
        dM = resets.mask_(P @ U.transpose(-1, -2), strict=True).neg_()
        d_bK = torch.bmm(bmm_view(P * resets.first), Sb.transpose(1, 2)).neg_()  # d(βK) = dM K - diag(f) P Sᵀ - ...
        if Sr is not None:
            d_bK.view(N, G, C, -1).sub_((P * resets.after) @ Sr_T)
        d_bK = d_bK.baddbmm_(bmm_view(dM), Kb).view(K.shape)
        dK = dK.view(K.shape).add_(dM.transpose(-1, -2) @ R[..., :Dk]).add_(b * d_bK)
        db = (d_bK * K).sum(-1, keepdim=True) + (P * V).sum(-1, keepdim=True)
        return dQ.view(Q.shape), dK, b * P, db, dS0, dSr, None
