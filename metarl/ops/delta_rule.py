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
leave the state unchanged).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .linear_attention import _check_inputs, _from_chunks, _initial_state, _to_chunks


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    mode: str = "chunk",
    chunk_size: int = 64,
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
    _check_inputs("delta_rule", q, k, v, beta, initial_state, mode, chunk_size)
    S0 = _initial_state(q, v, initial_state)
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


def _delta_rule_chunk(q, k, v, beta, S, chunk_size):
    (B, T, H, Dk), Dv = q.shape, v.shape[-1]
    C = min(chunk_size, T)  # a short sequence is one (unpadded) chunk
    Q, K, V = (_to_chunks(x, C) for x in (q, k, v))  # [B, H, N, C, D]
    b = _to_chunks(beta.unsqueeze(-1), C)  # [B, H, N, C, 1]
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    upper = torch.ones(C, C, dtype=torch.bool, device=q.device).triu()  # (masks beat tril on CPU)

    # UT transform for all chunks at once: T_c = (I + A)^{-1} diag(β), A = strictly_lower(diag(β) K Kᵀ).
    bK = b * K
    I_plus_A = torch.where(upper, eye, bK @ K.transpose(-1, -2))  # [B, H, N, C, C], unit lower
    if Dk + Dv <= C:  # solve for [W | Ũ] = T_c [K | V] directly: fewer right-hand sides
        WU = torch.linalg.solve_triangular(I_plus_A, torch.cat([bK, b * V], dim=-1), upper=False)
        W, U_tilde = WU[..., :Dk], WU[..., Dk:]
    else:  # solve for T_c itself (C right-hand sides), then two matmuls
        T_c = torch.linalg.solve_triangular(I_plus_A, b * eye, upper=False)
        W, U_tilde = T_c @ K, T_c @ V

    # The only sequential part: carry the state across chunks. Batch and heads are flattened so that
    # each step is two fused baddbmm calls; unbind (not indexing) keeps the backward pass cheap.
    U_chunks, S_starts = [], []
    S = S.reshape(B * H, Dk, Dv)
    for W_n, U_tilde_n, K_n in zip(*(x.flatten(0, 1).unbind(1) for x in (W, U_tilde, K))):
        U_n = torch.baddbmm(U_tilde_n, W_n, S, alpha=-1)  # U = Ũ - W S      [B*H, C, Dv]
        S_starts.append(S)
        U_chunks.append(U_n)
        S = torch.baddbmm(S, K_n.transpose(1, 2), U_n)  # S <- S + Kᵀ U
    U = torch.stack(U_chunks, dim=1).view(B, H, -1, C, Dv)
    S_start = torch.stack(S_starts, dim=1).view(B, H, -1, Dk, Dv)

    scores = (Q @ K.transpose(-1, -2)).masked_fill(upper.triu(1), 0)  # causal incl. diagonal [B, H, N, C, C]
    O = Q @ S_start + scores @ U  # [B, H, N, C, Dv]
    return _from_chunks(O, T), S.view(B, H, Dk, Dv)
