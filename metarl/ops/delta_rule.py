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
    for t in range(q.shape[1]):
        q_t, k_t, v_t, b_t = q[:, t], k[:, t], v[:, t], beta[:, t, :, None]  # b_t: [B, H, 1]
        v_old = torch.einsum("bhkv,bhk->bhv", S, k_t)  # S_{t-1}ᵀ k_t
        u_t = b_t * (v_t - v_old)
        S = S + k_t.unsqueeze(-1) * u_t.unsqueeze(-2)  # S_t = S_{t-1} + k_t u_tᵀ
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))  # o_t = S_tᵀ q_t
    return torch.stack(outputs, dim=1), S


def _delta_rule_chunk(q, k, v, beta, S, chunk_size):
    T, Dk = q.shape[1], q.shape[-1]
    C = min(chunk_size, T)  # a short sequence is one (unpadded) chunk
    Q, K, V = (_to_chunks(x, C) for x in (q, k, v))  # [B, H, N, C, D]
    b = _to_chunks(beta.unsqueeze(-1), C)  # [B, H, N, C, 1]

    # UT transform for all chunks at once: (I + A) [W | Ũ] = diag(β) [K | V], A strictly lower.
    strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    A = (b * (K @ K.transpose(-1, -2))).masked_fill(~strict, 0)
    I_plus_A = A + torch.eye(C, dtype=q.dtype, device=q.device)
    WU = torch.linalg.solve_triangular(I_plus_A, b * torch.cat([K, V], dim=-1), upper=False)
    W, U_tilde = WU[..., :Dk], WU[..., Dk:]
    scores = (Q @ K.transpose(-1, -2)).masked_fill(~causal, 0)  # [B, H, N, C, C]

    outputs = []
    for n in range(Q.shape[2]):
        U = U_tilde[:, :, n] - W[:, :, n] @ S  # [B, H, C, Dv]
        outputs.append(Q[:, :, n] @ S + scores[:, :, n] @ U)
        S = S + K[:, :, n].transpose(-1, -2) @ U
    return _from_chunks(torch.stack(outputs, dim=2), T), S
