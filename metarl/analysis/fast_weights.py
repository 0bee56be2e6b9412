"""The dual form of the fast-weight cores: attention over the past steps of a sequence.

A fast weight matrix written by outer products is the same kind of object as a linear layer trained by
gradient descent (:mod:`.dual_form`), with time steps in place of training steps. Per head, from the state
``S_0`` (the call's initial state)::

    linear attention:  S_t = S_{t-1} + k_t v_tᵀ                    o_t = S_tᵀ q_t = S_0ᵀ q_t + Σ_{s<=t} (k_sᵀ q_t) v_s
    delta rule:        S_t = S_{t-1} + k_t v̄_tᵀ,  v̄_t = β_t (v_t - S_{t-1}ᵀ k_t)
                                                                   o_t = S_0ᵀ q_t + Σ_{s<=t} (k_sᵀ q_t) v̄_s

so the output at step t is unnormalised attention with weights ``A[t, s] = k_sᵀ q_t`` over the values that
were written (the effective ``v̄_s`` for the delta rule: what step s actually added, after removing what the
memory already returned for ``k_s``). With resets (``reset[b, t]``: row b starts over from ``S_0`` before step
t) a step attends only to its own segment.

    view = fast_weight_attention(q, k, v, beta)           # the op's inputs (metarl.ops), [B, T, H, D]
    view.attention [B, H, T, T], view.values [B, T, H, Dv], view.base [B, T, H, Dv]; view.output() == op output
    view = core_attention(core, x, layer=0)               # the same for layer 0 of an lt / delta core
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from ..errors import ConfigError


@dataclass
class FastWeightAttention:
    """o_t = base_t + Σ_s attention[:, :, t, s] · values_s (per head).

    attention: [B, H, T, T], zero above the diagonal and across resets; values: [B, T, H, Dv] (v, or the delta
    rule's v̄); base: [B, T, H, Dv], the initial state's part ``S_0ᵀ q_t``; mixer_output: the layer's output
    ``[B, T, d_model]`` after its output projection (from :func:`mixer_attention` / :func:`core_attention`)."""

    attention: torch.Tensor
    values: torch.Tensor
    base: torch.Tensor
    mixer_output: Optional[torch.Tensor] = None

    def output(self) -> torch.Tensor:
        """[B, T, H, Dv] rebuilt from the attention view."""
        return self.base + torch.einsum("bhts,bshv->bthv", self.attention, self.values)

    def contributions(self) -> torch.Tensor:
        """[B, H, T, T]: ``|A[t, s]| · ||values_s||``, how much step s moves the output at step t."""
        return self.attention.abs() * self.values.norm(dim=-1).transpose(1, 2).unsqueeze(2)


def fast_weight_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: Optional[torch.Tensor] = None,
                          initial_state: Optional[torch.Tensor] = None,
                          reset: Optional[torch.Tensor] = None,
                          reset_state: Optional[torch.Tensor] = None) -> FastWeightAttention:
    """The attention view of ``linear_attention(q, k, v)`` (``beta=None``) or ``delta_rule(q, k, v, beta)``.

    q, k: [B, T, H, Dk]; v: [B, T, H, Dv]; beta: [B, T, H] or None; initial_state: [B, H, Dk, Dv] or None
    (zeros); reset: [B, T] bool or None; reset_state: the state a reset returns to (default: the initial
    state, as the ops do). ``base`` holds the part of the state a segment starts from."""
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    S0 = q.new_zeros(B, H, Dk, Dv) if initial_state is None else initial_state
    Sr = S0 if reset_state is None else reset_state
    reset = torch.zeros(B, T, dtype=torch.bool, device=q.device) if reset is None else reset.to(torch.bool)
    if reset.shape != (B, T):
        raise ConfigError(f"reset must have shape [B, T] = {(B, T)}, got {tuple(reset.shape)}")
    segment = reset.long().cumsum(1)  # [B, T]: steps with the same id share a memory
    same = segment[:, :, None] == segment[:, None, :]  # [B, t, s]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    mask = (same & causal)[:, None]  # [B, 1, T, T]
    attention = torch.einsum("bthk,bshk->bhts", q, k) * mask
    first = (segment == 0)[:, :, None, None]  # steps before the row's first reset read S0, the later ones Sr
    base = torch.where(first, torch.einsum("bhkv,bthk->bthv", S0, q), torch.einsum("bhkv,bthk->bthv", Sr, q))
    if beta is None:
        values = v
    else:
        values, S = [], S0
        for t in range(T):
            S = torch.where(reset[:, t, None, None, None], Sr, S)
            k_t = k[:, t]
            v_bar = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhkv,bhk->bhv", S, k_t))
            S = S + k_t.unsqueeze(-1) * v_bar.unsqueeze(-2)
            values.append(v_bar)
        values = torch.stack(values, 1)
    return FastWeightAttention(attention, values, base)


def _check_mixer(mixer: nn.Module) -> None:
    from ..cores.linear import _FastWeightMixer

    if not isinstance(mixer, _FastWeightMixer):
        raise ConfigError(f"the attention view needs a linear-Transformer (lt) or DeltaNet (delta) layer, got "
                          f"{type(mixer).__name__}")


def mixer_attention(mixer: nn.Module, x: torch.Tensor, state: Any = None,
                    reset: Optional[torch.Tensor] = None) -> FastWeightAttention:
    """The attention view of an ``lt`` or ``delta`` mixer on its input ``x [B, T, d_model]`` (after the
    block's norm), from fast-weight state ``state`` (None: its initial state)."""
    _check_mixer(mixer)
    q, k, v, beta = mixer.project(x)
    zeros = mixer.initial_state(x.shape[0], x.device, x.dtype)  # what the mixer's resets return to
    view = fast_weight_attention(q, k, v, beta if mixer.uses_beta else None, state, reset, zeros)
    view.mixer_output = mixer.merge(view.output())
    return view


def core_attention(core: nn.Module, x: torch.Tensor, layer: int = 0, state: Any = None,
                   reset: Optional[torch.Tensor] = None) -> FastWeightAttention:
    """The attention view of block ``layer`` of a core (``lt`` or ``delta``) on the core input ``x``: runs the
    core once (no gradients) with a forward pre-hook on that block's mixer to capture its input and state."""
    blocks = getattr(core, "blocks", None)
    if blocks is None or not 0 <= layer < len(blocks):
        raise ConfigError(f"core_attention: layer={layer} is not a block of the core "
                          f"({0 if blocks is None else len(blocks)} blocks)")
    mixer = blocks[layer].mixer
    _check_mixer(mixer)
    captured = {}

    def hook(module, args, kwargs):
        captured["x"] = args[0] if args else kwargs["x"]
        captured["state"] = args[1] if len(args) > 1 else kwargs.get("state")
        captured["reset"] = args[2] if len(args) > 2 else kwargs.get("reset")

    handle = mixer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            core(x, state, reset=reset)
    finally:
        handle.remove()
    with torch.no_grad():
        return mixer_attention(mixer, captured["x"], captured["state"], captured["reset"])
