"""The memoryless baseline core (``mlp``): each position on its own, no sequence mixing.

Per position, the mixer sublayer is a two-layer ReLU MLP (the Block adds norm, residual and its own
feed-forward)::

    y_t = W2 relu(W1 x_t + b1) + b2          W1: [d_hidden, d_model], W2: [d_model, d_hidden]

The state is the empty tuple ``()``: nothing is carried between steps, so resets change nothing and
split calls equal one call trivially.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from ..layers.feedforward import DenseFF
from . import register
from .base import Mixer


@register("mlp")
class MLPMixer(Mixer):
    """x [B, T, D] -> y [B, T, D] position by position. State: ``()``. ``num_heads`` is unused.

    d_hidden: width of the hidden layer (default d_model); dropout: on the hidden layer.
    """

    def __init__(self, d_model: int, num_heads: int = 1, dropout: float = 0.0, d_hidden: Optional[int] = None):
        super().__init__()
        if d_hidden is not None and d_hidden <= 0:
            raise ConfigError(f"mlp: d_hidden must be positive, got {d_hidden}")
        self.net = DenseFF(d_model, d_hidden or d_model, dropout)

    def initial_state(self, batch_size, device=None, dtype=None):
        return ()

    def forward_segment(self, x, state):
        return self.net(x), ()

    def forward(self, x: torch.Tensor, state=None, reset: Optional[torch.Tensor] = None):
        """x: [B, T, D], reset: [B, T] bool or None -> (y [B, T, D], ()). No state: no cutting at resets."""
        if reset is not None and reset.shape != x.shape[:2]:
            raise ValueError(f"reset must have shape [B, T] = {tuple(x.shape[:2])}, got {tuple(reset.shape)}")
        return self.forward_segment(x, ())
