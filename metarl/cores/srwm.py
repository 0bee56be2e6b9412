"""SRWM mixer: the modern self-referential weight matrix layer (Irie et al., ICML 2022).

The equations are in :mod:`metarl.ops.srwm`. This layer splits x [B, T, d_model] into heads
[B, T, H, d_head] (through a linear map when d_model != H·d_head, optionally followed by a softmax over
each head), runs the SRWM per head with Wy, Wq, Wk [d_head, d_head] and wb [d_head, 4] as learned initial
weights, and projects the H·d_head outputs back to d_model with a bias-free linear map (PyTorch's default
init). Initial weights: N(0, 1/√d_head) for Wy and Wk; N(0, wq_init_scale/√d_head) for Wq;
N(beta_init, 1/√d_head) for wb.

The reference layers and the options that give them (``metarl.cores.make("srwm", ...)`` keyword arguments,
``agent.options`` in configs):

- IDSIA/modern-srwm RL (procgen), ``reinforcement_learning/torchbeast/layer.py`` ``SRlayer``:
  ``input_softmax=True, norm="none", beta_init=0.0`` (Wy, Wq, Wk, wb all N(·, 1/√d_head)); the preset of
  ``env=procgen`` (``agent.options_by_core.srwm``).
- IDSIA/modern-srwm few-shot, ``supervised_learning/layer.py`` ``SRWMlayer`` with ``use_ln=True``:
  ``norm="skip"``; input softmax and beta_init are flags there (defaults off and 0.0).
- IDSIA/fwp-formal-lang (EMNLP 2023), ``layers.py`` ``SRWMlayer``: ``norm="skip", input_softmax=False,
  beta_init=-1.0, wq_init_scale=0.01`` (its "new q init" ``std_q = 0.01/√d_head``); the preset of
  ``env=formal/*``.

``norm`` is where the Block puts the layer norm of this sublayer (``metarl.cores.base``): ``"skip"``
``LN(x) + srwm(x)`` (the reference's ``use_ln=True``), ``"none"`` ``x + srwm(x)`` (``SRlayer``, whose
LayerNorm is built but never used), ``"pre"`` ``x + srwm(LN(x))`` (not in the references). In all three
references the input goes to the heads without a projection (``hidden_size == num_head·dim_head``); here
``proj_in`` is the identity in that case too. Their feed-forward sublayer is the Block's: ``h + W2 relu(W1
LN(h) + b1) + b2`` (``TransformerFFlayers``). Where a metarl core still differs from the reference models,
outside this layer: ``SequenceCore`` ends with a LayerNorm (the reference models feed the last block
straight to their heads), and the RL reference runs the core one step per call with the state detached
between steps (``agent.truncate_grad_each_step=true`` does that; it is off by default).

State: the shift of the fast weights from the learned initial weights, ``(ΔWy, ΔWq, ΔWk, Δwb)``, zero
at the start of a sequence (as in the reference implementation). The weights in use are always
``initial + shift``, so gradients reach the learned initial weights through every call.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..errors import ConfigError, check_choice
from ..ops import srwm
from ..ops.srwm import MODES as SRWM_MODES
from . import register
from .base import NORM_POSITIONS, Mixer


@register("srwm")
class SRWMMixer(Mixer):
    resets_in_op = True  # the op returns a row to the learned initial weights at its reset

    def __init__(self, d_model, num_heads, dropout=0.0, d_head=16, beta_init=-1.0, input_softmax=False,
                 norm="skip", wq_init_scale=1.0, mode="fused", skip_norm: Optional[bool] = None):
        """d_head: width of a head; beta_init: mean of the initial wb (the learning rates are sigmoid(x wb));
        input_softmax: softmax over each head's input before the SRWM; norm: layer-norm position of the
        sublayer, ``"skip"`` (default), ``"none"`` or ``"pre"`` (see the module docstring); wq_init_scale:
        initial Wq std in units of 1/√d_head; mode: ``"fused"`` (fast, O(T·d) memory) or ``"recurrent"``.
        skip_norm: deprecated spelling of ``norm`` (True: "skip", False: "pre"); configs use ``norm``."""
        super().__init__()
        if skip_norm is not None:
            implied = "skip" if skip_norm else "pre"
            if norm not in ("skip", implied):  # "skip" is the default, so only a different explicit norm conflicts
                raise ConfigError(f"agent.options: skip_norm={skip_norm} and norm={norm!r} disagree; "
                                  f"drop skip_norm (deprecated) and set norm")
            norm = implied
        check_choice("agent.options.norm", norm, NORM_POSITIONS)
        check_choice("agent.options.mode", mode, SRWM_MODES)
        if not wq_init_scale >= 0:
            raise ConfigError(f"agent.options.wq_init_scale={wq_init_scale!r} must be >= 0")
        self.num_heads, self.d_head = num_heads, d_head
        self.input_softmax = input_softmax
        self.norm_position = norm
        self.mode = mode
        inner = num_heads * d_head
        self.proj_in = nn.Identity() if inner == d_model else nn.Linear(d_model, inner, bias=False)
        std = 1.0 / math.sqrt(d_head)
        self.Wy = nn.Parameter(torch.randn(num_heads, d_head, d_head) * std)
        self.Wq = nn.Parameter(torch.randn(num_heads, d_head, d_head) * (std * wq_init_scale))
        self.Wk = nn.Parameter(torch.randn(num_heads, d_head, d_head) * std)
        self.wb = nn.Parameter(torch.randn(num_heads, d_head, 4) * std + beta_init)
        self.out = nn.Linear(inner, d_model, bias=False)

    def slow_weights(self):
        return (self.Wy, self.Wq, self.Wk, self.wb)

    def initial_state(self, batch_size, device=None, dtype=None):
        return tuple(torch.zeros(batch_size, *w.shape, device=device, dtype=dtype) for w in self.slow_weights())

    def forward_segment(self, x, state, reset=None):
        """x: [B, T, d_model], state: the four shifts, reset: [B, T] bool or None -> (y [B, T, d_model], state).
        A reset returns a row to the learned initial weights (shift 0)."""
        B, T, _ = x.shape
        h = self.proj_in(x).view(B, T, self.num_heads, self.d_head)
        if self.input_softmax:
            h = torch.softmax(h, dim=-1)
        weights = [w.unsqueeze(0) + shift for w, shift in zip(self.slow_weights(), state)]
        learned = None if reset is None else tuple(w.unsqueeze(0).expand_as(m) for w, m in zip(self.slow_weights(), weights))
        y, final = srwm(h, *weights, mode=self.mode, reset=reset, reset_state=learned)
        shift = tuple(f - w.unsqueeze(0) for f, w in zip(final, self.slow_weights()))
        return self.out(y.reshape(B, T, self.num_heads * self.d_head)), shift
