"""Delta rule (DeltaNet fast weights).

Shapes (batch-first)::

    q, k: [B, T, H, Dk]    v: [B, T, H, Dv]    beta: [B, T, H]    state S: [B, H, Dk, Dv]

Recurrence::

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
leave the state unchanged). The chunk mode's backward pass is written by hand (``_DeltaRuleChunk``) and is
first order only: for gradients of gradients use ``mode="recurrent"``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .utils import above_diagonal, bmm_view, check_inputs, from_chunks, state_or_zeros, to_chunks


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    mode: str = "chunk",
    chunk_size: int = 32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Delta rule ``S_t = S_{t-1} + k_t (beta_t (v_t - S_{t-1}ᵀ k_t))ᵀ``, ``o_t = S_tᵀ q_t``.

    Args:
        q, k: ``[B, T, H, Dk]``.
        v: ``[B, T, H, Dv]``.
        beta: ``[B, T, H]`` learning rates (the cores keep them in (0, 1)).
        initial_state: ``[B, H, Dk, Dv]`` or ``None`` (zeros).
        mode: ``"recurrent"`` (step-by-step oracle) or ``"chunk"`` (WY / UT-transform chunkwise form).
        chunk_size: chunk length ``C`` for ``mode="chunk"`` (any ``T`` works; padded internally).

    Returns:
        ``(o, final_state)`` with ``o: [B, T, H, Dv]`` and ``final_state: [B, H, Dk, Dv]``.
    """
    check_inputs("delta_rule", q, k, v, beta, initial_state, mode, chunk_size)
    S0 = state_or_zeros(q, v, initial_state)
    if mode == "recurrent":
        return _delta_rule_recurrent(q, k, v, beta, S0)
    return _delta_rule_chunk(q, k, v, beta, S0, chunk_size)


def _delta_rule_recurrent(q, k, v, beta, S):
    outputs = []
    # unbind, not q[:, t]: indexing makes autograd write a full-size zero gradient per step (O(T²))
    for q_t, k_t, v_t, b_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), beta.unsqueeze(-1).unbind(1)):
        v_old = torch.einsum("bhkv,bhk->bhv", S, k_t)  # S_{t-1}ᵀ k_t
        u_t = b_t * (v_t - v_old)
        S = S + k_t.unsqueeze(-1) * u_t.unsqueeze(-2)  # S_t = S_{t-1} + k_t u_tᵀ
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))  # o_t = S_tᵀ q_t
    return torch.stack(outputs, dim=1), S


def _delta_rule_chunk(q, k, v, beta, S0, chunk_size):
    (B, T, H, Dk), Dv = q.shape, v.shape[-1]
    C = min(chunk_size, T)  # a short sequence is one (unpadded) chunk
    Q, K, V = (to_chunks(x, C) for x in (q, k, v))  # [N, G=B*H, C, D]
    b = to_chunks(beta.unsqueeze(-1), C)  # [N, G, C, 1]
    O, S_final = _DeltaRuleChunk.apply(Q, K, V, b, S0.reshape(B * H, Dk, Dv))
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
        L = (R[..., :Dk] @ K.transpose(-1, -2)).masked_fill_(above_diagonal(C, Q.device, 0), 0)
        L.diagonal(dim1=-2, dim2=-1).fill_(1)  # unit lower triangular [N, G, C, C]
        eye = torch.eye(C, dtype=Q.dtype, device=Q.device).expand_as(L)
        L_inv = torch.linalg.solve_triangular(L, eye, upper=False, unitriangular=True)
        X = L_inv @ R  # [W | Ũ]
        W, U_tilde = X[..., :Dk], X[..., Dk:]
        A = (Q @ K.transpose(-1, -2)).masked_fill_(above_diagonal(C, Q.device, 1), 0)  # [N, G, C, C]

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

        dA = (dO @ U.transpose(-1, -2)).masked_fill_(above_diagonal(C, Q.device, 1), 0)
        Qb, Kb, dOb, dAb, Sb = (bmm_view(x) for x in (Q, K, dO, dA, S_start))
        dQ = (dOb @ Sb.transpose(1, 2)).baddbmm_(dAb, Kb)
        dK = (bmm_view(U) @ bmm_view(dS_after).transpose(1, 2)).baddbmm_(dAb.transpose(1, 2), Qb)

        P = L_inv.transpose(-1, -2) @ dU
        dM = (P @ U.transpose(-1, -2)).masked_fill_(above_diagonal(C, Q.device, 0), 0).neg_()
        d_bK = (bmm_view(dM) @ Kb).baddbmm_(bmm_view(P), Sb.transpose(1, 2), alpha=-1).view(K.shape)
        dK = dK.view(K.shape).add_(dM.transpose(-1, -2) @ R[..., :Dk]).add_(b * d_bK)
        db = (d_bK * K).sum(-1, keepdim=True) + (P * V).sum(-1, keepdim=True)
        return dQ.view(Q.shape), dK, b * P, db, dS0
