"""Recurrent DeltaNet (``recdelta``, Irie, Schlag, Csordás & Schmidhuber, NeurIPS 2021).

The delta-rule fast weight programmer whose slow net also sees its own previous output: per head,
with y_{t-1} the previous output of the fast net and R_* recurrent slow weights,

    q_t = softmax(W_q x_t + R_q tanh(y_{t-1}))      k_t = softmax(W_k x_t + R_k tanh(y_{t-1}))
    v_t = W_v x_t + R_v tanh(y_{t-1})              β_t = sigmoid(w_β x_t + r_β tanh(y_{t-1}))
    S_t = S_{t-1} + k_t (β_t (v_t - S_{t-1}ᵀ k_t))ᵀ       y_t = S_tᵀ q_t

Inherently sequential (y_{t-1} feeds step t): the step loop is the op :func:`metarl.ops.rec_delta`.
State: (S [B, H, d, d], y [B, H, d]).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops import rec_delta
from . import register
from .base import Mixer


@register("recdelta")
class RecurrentDeltaMixer(Mixer):
    resets_in_op = True  # the op restores (S, y) = 0 at a reset

    def __init__(self, d_model, num_heads, dropout=0.0, d_head=None):
        super().__init__()
        self.num_heads = num_heads
        self.d_head = d = d_head or d_model // num_heads
        self.qkvb = nn.Linear(d_model, num_heads * (3 * d + 1), bias=False)
        # R: per head, tanh(y_{t-1}) [d] -> recurrent contributions to q, k, v, β [3d + 1]
        self.R = nn.Parameter(torch.randn(num_heads, d, 3 * d + 1) / math.sqrt(d))
        self.out = nn.Linear(num_heads * d, d_model, bias=False)

    def initial_state(self, batch_size, device=None, dtype=None):
        H, d = self.num_heads, self.d_head
        return (torch.zeros(batch_size, H, d, d, device=device, dtype=dtype),
                torch.zeros(batch_size, H, d, device=device, dtype=dtype))

    def forward_segment(self, x, state, reset=None):
        """x: [B, T, d_model], state (S [B, H, d, d], y [B, H, d]), reset [B, T] or None
        -> (y [B, T, d_model], state)."""
        B, T, _ = x.shape
        H, d = self.num_heads, self.d_head
        from_input = self.qkvb(x).view(B, T, H, 3 * d + 1)  # all steps at once
        zeros = None if reset is None else tuple(torch.zeros_like(s) for s in state)
        o, state = rec_delta(from_input, self.R, initial_state=state, reset=reset, reset_state=zeros)  # o: [B, T, H, d]
        return self.out(o.reshape(B, T, H * d)), state
