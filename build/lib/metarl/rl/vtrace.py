"""V-trace off-policy targets (IMPALA, Espeholt et al. 2018, section 4.1).

Shapes (batch-first, like the rest of metarl)::

    log_rhos, discounts, rewards, values: [B, T]        bootstrap_value: [B]
    behaviour_logits, target_logits:      [B, T, A]     actions: [B, T] (integer)

With ``rho_t = min(rho_bar, exp(log_rho_t))``, ``c_t = min(1, exp(log_rho_t))`` and ``V(x_T)`` the
bootstrap value (the value of the state after the last step)::

    delta_t        = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t))
    v_s - V(x_s)   = delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))          (backwards, v_T = V(x_T))
    pg_advantage_t = rho^pg_t (r_t + gamma_t v_{t+1} - V(x_t))             rho^pg clipped at rho^pg_bar

``gamma_t`` is a per-step discount: pass ``gamma * (1 - done_t)`` so that the trace is cut where an
episode ends. The targets are constants for the learner: :func:`from_importance_weights` runs under
``torch.no_grad()`` and returns detached tensors.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F


class VTraceReturns(NamedTuple):
    """V-trace targets, both ``[B, T]`` and detached."""

    vs: torch.Tensor  #: value targets v_s
    pg_advantages: torch.Tensor  #: policy-gradient advantages rho^pg_t (r_t + gamma_t v_{t+1} - V(x_t))


class VTraceFromLogitsReturns(NamedTuple):
    """:class:`VTraceReturns` plus the log-probabilities it was computed from (all ``[B, T]``).

    ``vs`` and ``pg_advantages`` are detached; ``log_rhos`` and the two action log-probabilities keep
    the autograd graph of the logits they come from.
    """

    vs: torch.Tensor
    pg_advantages: torch.Tensor
    log_rhos: torch.Tensor  #: target_action_log_probs - behaviour_action_log_probs
    behaviour_action_log_probs: torch.Tensor  #: log mu(a_t | x_t)
    target_action_log_probs: torch.Tensor  #: log pi(a_t | x_t)


def _check_threshold(name: str, value: Optional[float]) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"vtrace: {name} must be a positive number or None (no clipping), got {value!r}")


def _check_bt(name: str, x: torch.Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ValueError(
            f"vtrace: {name} must be [B, T] = {tuple(shape)} like log_rhos, got {tuple(x.shape)}"
        )


@torch.no_grad()
def from_importance_weights(
    log_rhos: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: Optional[float] = 1.0,
    clip_pg_rho_threshold: Optional[float] = 1.0,
) -> VTraceReturns:
    """V-trace targets from log importance weights ``log(pi(a_t|x_t) / mu(a_t|x_t))``.

    Args:
        log_rhos: ``[B, T]`` log importance weights of the taken actions.
        discounts: ``[B, T]`` per-step discounts ``gamma_t`` (zero where the episode ended at step t).
        rewards: ``[B, T]`` rewards ``r_t``.
        values: ``[B, T]`` baseline values ``V(x_t)``.
        bootstrap_value: ``[B]`` value ``V(x_T)`` of the state after the last step.
        clip_rho_threshold: ``rho_bar`` for the value targets; ``None`` means no clipping.
        clip_pg_rho_threshold: ``rho^pg_bar`` for the advantages; ``None`` means no clipping.

    Returns:
        :class:`VTraceReturns` ``(vs, pg_advantages)``, both ``[B, T]``, without gradient.
    """
    if log_rhos.dim() != 2:
        raise ValueError(f"vtrace: log_rhos must be [B, T], got shape {tuple(log_rhos.shape)}")
    B, T = log_rhos.shape
    if T == 0:
        raise ValueError("vtrace: need at least one time step (T = 0)")
    for name, x in (("discounts", discounts), ("rewards", rewards), ("values", values)):
        _check_bt(name, x, log_rhos.shape)
    if bootstrap_value.shape != (B,):
        raise ValueError(f"vtrace: bootstrap_value must be [B] = ({B},), got {tuple(bootstrap_value.shape)}")
    _check_threshold("clip_rho_threshold", clip_rho_threshold)
    _check_threshold("clip_pg_rho_threshold", clip_pg_rho_threshold)

    rhos = torch.exp(log_rhos)
    clipped_rhos = rhos if clip_rho_threshold is None else rhos.clamp(max=clip_rho_threshold)
    cs = rhos.clamp(max=1.0)
    values_next = torch.cat([values[:, 1:], bootstrap_value[:, None]], dim=1)  # V(x_{t+1})
    deltas = clipped_rhos * (rewards + discounts * values_next - values)

    # v_s - V(x_s), accumulated from the last step backwards (v_T - V(x_T) = 0).
    acc = torch.zeros_like(bootstrap_value)
    vs_minus_v = []
    for t in reversed(range(T)):
        acc = deltas[:, t] + discounts[:, t] * cs[:, t] * acc
        vs_minus_v.append(acc)
    vs = torch.stack(vs_minus_v[::-1], dim=1) + values

    vs_next = torch.cat([vs[:, 1:], bootstrap_value[:, None]], dim=1)  # v_{t+1}
    pg_rhos = rhos if clip_pg_rho_threshold is None else rhos.clamp(max=clip_pg_rho_threshold)
    pg_advantages = pg_rhos * (rewards + discounts * vs_next - values)
    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)


def action_log_probs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the taken actions: ``logits [B, T, A]``, ``actions [B, T]`` -> ``[B, T]``."""
    if logits.dim() != 3:
        raise ValueError(f"vtrace: logits must be [B, T, A], got shape {tuple(logits.shape)}")
    if actions.shape != logits.shape[:2]:
        raise ValueError(
            f"vtrace: actions must be [B, T] = {tuple(logits.shape[:2])} like the logits, "
            f"got {tuple(actions.shape)}"
        )
    if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise ValueError(f"vtrace: actions must be an integer tensor, got dtype {actions.dtype}")
    log_probs = F.log_softmax(logits, dim=-1)
    return log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def from_logits(
    behaviour_logits: torch.Tensor,
    target_logits: torch.Tensor,
    actions: torch.Tensor,
    discounts: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: Optional[float] = 1.0,
    clip_pg_rho_threshold: Optional[float] = 1.0,
) -> VTraceFromLogitsReturns:
    """V-trace for softmax policies: behaviour ``mu`` and target ``pi`` given as ``[B, T, A]`` logits.

    ``log_rhos = log pi(a_t|x_t) - log mu(a_t|x_t)``; the rest is :func:`from_importance_weights`.
    """
    if behaviour_logits.shape != target_logits.shape:
        raise ValueError(
            f"vtrace: behaviour_logits {tuple(behaviour_logits.shape)} and target_logits "
            f"{tuple(target_logits.shape)} must have the same [B, T, A] shape"
        )
    behaviour_action_log_probs = action_log_probs(behaviour_logits, actions)
    target_action_log_probs = action_log_probs(target_logits, actions)
    log_rhos = target_action_log_probs - behaviour_action_log_probs
    vs, pg_advantages = from_importance_weights(
        log_rhos,
        discounts,
        rewards,
        values,
        bootstrap_value,
        clip_rho_threshold=clip_rho_threshold,
        clip_pg_rho_threshold=clip_pg_rho_threshold,
    )
    return VTraceFromLogitsReturns(
        vs=vs,
        pg_advantages=pg_advantages,
        log_rhos=log_rhos,
        behaviour_action_log_probs=behaviour_action_log_probs,
        target_action_log_probs=target_action_log_probs,
    )
