"""Reinforcement learning: V-trace targets and IMPALA losses (batch-first ``[B, T]``)."""
from .losses import baseline_loss, clip_rewards, entropy_loss, policy_gradient_loss
from .vtrace import (
    VTraceFromLogitsReturns,
    VTraceReturns,
    action_log_probs,
    from_importance_weights,
    from_logits,
)

__all__ = [
    # vtrace
    "VTraceReturns",
    "VTraceFromLogitsReturns",
    "from_importance_weights",
    "from_logits",
    "action_log_probs",
    # losses
    "policy_gradient_loss",
    "baseline_loss",
    "entropy_loss",
    "clip_rewards",
]
