"""Linear Transformer (``lt``) and DeltaNet (``delta``) mixers: fast weight programmers with the
purely additive (Katharopoulos et al. 2020) and the delta-rule (Schlag, Irie & Schmidhuber 2021) update.

Per head, with feature map φ and fast weights S [d_key, d_head] starting at zero:
    lt:    S_t = S_{t-1} + φ(k_t) v_tᵀ                                  o_t = S_tᵀ φ(q_t)
    delta: S_t = S_{t-1} + φ(k_t) (β_t (v_t - S_{t-1}ᵀ φ(k_t)))ᵀ       o_t = S_tᵀ φ(q_t)
with φ = ELU+1 (or DPFP for lt), then sum normalisation (option ``sum_normalise``), and β_t = sigmoid(w_β x_t).
Both are pre-norm sublayers, ``x + out(fwp(LN(x)))``, with bias-free projections, as in the references.

Sum normalisation φ(x) / (Σφ(x) + 1e-5) is on by default: IDSIA/modern-srwm's RL layers apply it to the LT
and DeltaNet (``reinforcement_learning/torchbeast/layer.py``, ``elu_p1_sum_norm_eps``), and IDSIA/fwp-formal-lang
to DeltaNet (``layers.py`` ``FastFFlayer``, there without the 1e-5). The formal-language LT of
fwp-formal-lang (``layers.py`` ``LinearAttentionlayer``) has it commented out: ``sum_normalise=False``, which
the ``env=formal/*`` presets set for ``lt`` (``agent.options_by_core.lt``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, check_choice
from ..layers.feature_maps import dpfp, elu_p1, sum_norm
from ..ops import delta_rule, linear_attention
from ..ops.utils import MODES as CHUNK_MODES
from . import register
from .base import Mixer


FEATURE_MAPS = ("elu", "dpfp")


class _FastWeightMixer(Mixer):
    """Shared parts: input projection to per-head q, k, v (and β), output projection, state S.

    d_head: width of a head (default d_model / num_heads); feature_map: ``elu`` (ELU+1) or ``dpfp``
    (``dpfp_nu`` rolls); sum_normalise: divide φ(q), φ(k) by their sum (see the module docstring);
    mode, chunk_size: the op's fast path.
    """

    uses_beta = False
    resets_in_op = True  # the ops restore S = 0 at a reset inside their chunks

    def __init__(self, d_model, num_heads, dropout=0.0, d_head=None, feature_map="elu", dpfp_nu=1,
                 sum_normalise=True, mode="chunk", chunk_size=32):
        super().__init__()
        if feature_map not in FEATURE_MAPS:
            raise ConfigError(f"unknown feature_map {feature_map!r}; choose one of {FEATURE_MAPS}")
        check_choice("agent.options.mode", mode, CHUNK_MODES)
        self.num_heads = num_heads
        self.d_head = d_head or d_model // num_heads
        self.feature_map, self.dpfp_nu = feature_map, dpfp_nu
        self.sum_normalise = sum_normalise
        self.mode, self.chunk_size = mode, chunk_size
        self.d_key = self.d_head * (2 * dpfp_nu if feature_map == "dpfp" else 1)
        extra = 1 if self.uses_beta else 0
        self.qkvb = nn.Linear(d_model, num_heads * (3 * self.d_head + extra), bias=False)
        self.out = nn.Linear(num_heads * self.d_head, d_model, bias=False)

    def phi(self, x):
        x = elu_p1(x) if self.feature_map == "elu" else dpfp(x, self.dpfp_nu)
        return sum_norm(x) if self.sum_normalise else x

    def initial_state(self, batch_size, device=None, dtype=None):
        return torch.zeros(batch_size, self.num_heads, self.d_key, self.d_head, device=device, dtype=dtype)

    @staticmethod
    def reset_state(state, reset):
        """The state a reset returns to: zeros like ``state`` (None without resets)."""
        return None if reset is None else torch.zeros_like(state)

    def project(self, x):
        """x [B, T, D] -> q, k [B, T, H, d_key] (feature-mapped), v [B, T, H, d_head], β [B, T, H] or None."""
        B, T, _ = x.shape
        h = self.qkvb(x).view(B, T, self.num_heads, -1)
        d = self.d_head
        q, k, v = h[..., :d], h[..., d:2 * d], h[..., 2 * d:3 * d]
        beta = torch.sigmoid(h[..., 3 * d]) if self.uses_beta else None
        return self.phi(q), self.phi(k), v, beta

    def merge(self, o):
        B, T = o.shape[:2]
        return self.out(o.reshape(B, T, self.num_heads * self.d_head))


@register("lt")
class LinearTransformerMixer(_FastWeightMixer):
    """Linear Transformer: purely additive fast weights (feature map ``elu`` or ``dpfp``)."""

    def forward_segment(self, x, state, reset=None):
        q, k, v, _ = self.project(x)
        o, state = linear_attention(q, k, v, initial_state=state, mode=self.mode, chunk_size=self.chunk_size,
                                    reset=reset, reset_state=self.reset_state(state, reset))
        return self.merge(o), state


@register("delta")
class DeltaNetMixer(_FastWeightMixer):
    """DeltaNet: delta-rule fast weights, φ = ELU+1 then sum normalisation, sigmoid β."""

    uses_beta = True

    def forward_segment(self, x, state, reset=None):
        q, k, v, beta = self.project(x)
        o, state = delta_rule(q, k, v, beta, initial_state=state, mode=self.mode, chunk_size=self.chunk_size,
                              reset=reset, reset_state=self.reset_state(state, reset))
        return self.merge(o), state
