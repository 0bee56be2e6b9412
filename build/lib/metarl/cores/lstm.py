"""LSTM baseline mixer (one nn.LSTM layer per block)."""
from __future__ import annotations

import torch
from torch import nn

from . import register
from .base import Mixer


@register("lstm")
class LSTMMixer(Mixer):
    """x [B, T, D] -> LSTM hidden states [B, T, D]. State: (h, c), each [B, D]. ``num_heads`` is unused."""

    def __init__(self, d_model: int, num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(d_model, d_model, batch_first=True)

    def initial_state(self, batch_size, device=None, dtype=None):
        zeros = torch.zeros(batch_size, self.lstm.hidden_size, device=device, dtype=dtype)
        return (zeros, zeros.clone())

    def forward_segment(self, x, state):
        h, c = state
        y, (h, c) = self.lstm(x, (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
        return y, (h.squeeze(0), c.squeeze(0))
