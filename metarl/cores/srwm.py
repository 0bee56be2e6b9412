"""SRWM mixer: the modern self-referential weight matrix layer (Irie et al., ICML 2022).

The equations are in :mod:`metarl.ops.srwm`. This layer splits x [B, T, d_model] into heads
[B, T, H, d_head] (through a linear map when d_model != H·d_head, optionally followed by a softmax),
runs the SRWM per head with Wy, Wq, Wk [d_head, d_head] and wb [d_head, 4] as learned initial weights
(N(0, 1/√d_head), wb with mean ``beta_init``), and projects the H·d_head outputs back to d_model.

State: the shift of the fast weights from the learned initial weights, ``(ΔWy, ΔWq, ΔWk, Δwb)``, zero
at the start of a sequence (as in the reference implementation). The weights in use are always
``initial + shift``, so gradients reach the learned initial weights through every call.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import check_choice
from ..ops import srwm
from ..ops.srwm import MODES as SRWM_MODES
from . import register
from .base import Mixer


@register("srwm")
class SRWMMixer(Mixer):
    def __init__(self, d_model, num_heads, dropout=0.0, d_head=16, beta_init=-1.0, input_softmax=False,
                 skip_norm=True, mode="fused"):
        """skip_norm: layer norm on the skip path, ``LN(x) + srwm(x)`` (few-shot models) instead of
        pre-norm ``x + srwm(LN(x))``. mode: ``"fused"`` (fast, O(T·d) memory) or ``"recurrent"``."""
        super().__init__()
        self.num_heads, self.d_head = num_heads, d_head
        self.input_softmax = input_softmax
        self.norm_position = "skip" if skip_norm else "pre"
        check_choice("agent.options.mode", mode, SRWM_MODES)
        self.mode = mode
        inner = num_heads * d_head
        self.proj_in = nn.Identity() if inner == d_model else nn.Linear(d_model, inner, bias=False)
        std = 1.0 / math.sqrt(d_head)
        self.Wy = nn.Parameter(torch.randn(num_heads, d_head, d_head) * std)
        self.Wq = nn.Parameter(torch.randn(num_heads, d_head, d_head) * std)
        self.Wk = nn.Parameter(torch.randn(num_heads, d_head, d_head) * std)
        self.wb = nn.Parameter(torch.randn(num_heads, d_head, 4) * std + beta_init)
        self.out = nn.Linear(inner, d_model, bias=False)

    def slow_weights(self):
        return (self.Wy, self.Wq, self.Wk, self.wb)

    def initial_state(self, batch_size, device=None, dtype=None):
        return tuple(torch.zeros(batch_size, *w.shape, device=device, dtype=dtype) for w in self.slow_weights())

    def forward_segment(self, x, state):
        B, T, _ = x.shape
        h = self.proj_in(x).view(B, T, self.num_heads, self.d_head)
        if self.input_softmax:
            h = torch.softmax(h, dim=-1)
        weights = [w.unsqueeze(0) + shift for w, shift in zip(self.slow_weights(), state)]
        y, final = srwm(h, *weights, mode=self.mode)
        shift = tuple(f - w.unsqueeze(0) for f, w in zip(final, self.slow_weights()))
        return self.out(y.reshape(B, T, self.num_heads * self.d_head)), shift
