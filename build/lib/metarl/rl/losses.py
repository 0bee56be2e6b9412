"""IMPALA losses on batch-first ``[B, T]`` tensors (torchbeast definitions).

The learner's total loss is::

    policy_gradient_loss(logits, actions, vtrace.pg_advantages)
    + baseline_cost * baseline_loss(vtrace.vs - values)
    + entropy_cost  * entropy_loss(logits)

``baseline_cost`` and ``entropy_cost`` come from the config (``baseline_cost`` defaults to 0.5 there);
the functions here apply no cost themselves, except the 1/2 inside the squared-error definition of
:func:`baseline_loss`.

``reduction="sum"`` (the default, as in torchbeast) sums over all ``B * T`` steps, so the loss scale
grows with the unroll length and batch size; ``reduction="mean"`` averages over the ``B * T`` steps
instead. Use the same reduction for all three terms so that their costs keep their meaning.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("sum", "mean")


def _reduce(name: str, x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return x.sum()
    if reduction == "mean":
        return x.mean()
    raise ValueError(f"{name}: unknown reduction {reduction!r}; expected 'sum' or 'mean'")


def policy_gradient_loss(
    logits: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, reduction: str = "sum"
) -> torch.Tensor:
    """``reduce_{b,t}( -log pi(a_t|x_t) * advantage_t )`` with the advantages treated as constants.

    Args:
        logits: ``[B, T, A]`` target-policy logits (gradients flow into these only).
        actions: ``[B, T]`` integer actions taken.
        advantages: ``[B, T]`` e.g. V-trace ``pg_advantages``; detached here.
        reduction: ``"sum"`` (torchbeast) or ``"mean"`` over the ``B * T`` steps.
    """
    if logits.dim() != 3:
        raise ValueError(f"policy_gradient_loss: logits must be [B, T, A], got shape {tuple(logits.shape)}")
    if actions.shape != logits.shape[:2] or advantages.shape != logits.shape[:2]:
        raise ValueError(
            f"policy_gradient_loss: actions {tuple(actions.shape)} and advantages {tuple(advantages.shape)} "
            f"must be [B, T] = {tuple(logits.shape[:2])} like the logits"
        )
    cross_entropy = F.cross_entropy(logits.flatten(0, 1), actions.flatten().long(), reduction="none")
    return _reduce("policy_gradient_loss", cross_entropy.view_as(advantages) * advantages.detach(), reduction)


def baseline_loss(advantages: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """``0.5 * reduce(advantages ** 2)`` with ``advantages = vs - values`` (``[B, T]``).

    Gradients flow through ``advantages`` (into ``values``; ``vs`` from V-trace is already detached).
    The config's ``baseline_cost`` multiplies this value; it is not applied here.
    """
    return 0.5 * _reduce("baseline_loss", advantages**2, reduction)


def entropy_loss(logits: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Negative entropy ``reduce_{b,t}( sum_a p log p )`` of the softmax policy (``logits [B, T, A]``).

    Adding ``entropy_cost * entropy_loss(logits)`` to a minimised loss maximises the entropy.
    """
    if logits.dim() != 3:
        raise ValueError(f"entropy_loss: logits must be [B, T, A], got shape {tuple(logits.shape)}")
    log_probs = F.log_softmax(logits, dim=-1)
    return _reduce("entropy_loss", (log_probs.exp() * log_probs).sum(-1), reduction)


def clip_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """Rewards clipped to ``[-1, 1]`` (IMPALA's reward clipping)."""
    return rewards.clamp(-1.0, 1.0)
