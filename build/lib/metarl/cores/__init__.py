"""Sequence cores: ``metarl.cores.make(name, d_model=..., num_layers=..., num_heads=..., ff=...)``.

Every core follows one contract (see DESIGN.md)::

    state = core.initial_state(batch_size, device)
    y, state = core(x, state, reset=None)     # x, y: [B, T, d_model]; reset: [B, T] bool
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from .base import Block, Mixer, SequenceCore, detach_state, map_state
from .feedforward import FEEDFORWARDS, make_feedforward

MIXERS: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a Mixer available to ``make(name, ...)``."""

    def wrap(cls):
        MIXERS[name] = cls
        return cls

    return wrap


def _load_builtin_mixers() -> None:
    # imported here so that each family module can import ``register`` from this package
    from . import lstm, linear, recdelta, srwm, transformer  # noqa: F401


def names() -> list[str]:
    """The known core names."""
    _load_builtin_mixers()
    return sorted(MIXERS)


def make(
    name: str,
    d_model: int,
    num_layers: int = 2,
    num_heads: int = 4,
    ff: str = "dense",
    d_ff: Optional[int] = None,
    dropout: float = 0.0,
    ff_options: Optional[dict] = None,
    **mixer_options,
) -> SequenceCore:
    """Build a core.

    name: one of ``names()``; d_model: residual width; num_heads: heads of the mixer;
    ff: ``dense | moe | pkm | none``; d_ff: feed-forward width (default 4·d_model);
    ff_options: extra arguments of the feed-forward (e.g. σ-MoE ``num_experts``);
    mixer_options: extra arguments of the mixer (e.g. SRWM ``d_head``, ``beta_init``).
    """
    _load_builtin_mixers()
    if name not in MIXERS:
        raise ValueError(f"unknown core {name!r}; known cores: {', '.join(sorted(MIXERS))}")
    if d_model <= 0 or num_layers <= 0 or num_heads <= 0:
        raise ValueError(f"d_model, num_layers and num_heads must be positive, got {d_model}, {num_layers}, {num_heads}")
    d_ff = d_ff or 4 * d_model
    blocks = []
    for _ in range(num_layers):
        mixer = MIXERS[name](d_model=d_model, num_heads=num_heads, dropout=dropout, **mixer_options)
        ffn = make_feedforward(ff, d_model, d_ff, dropout, **(ff_options or {}))
        blocks.append(Block(d_model, mixer, ffn, dropout))
    return SequenceCore(name, d_model, blocks)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "make", "names", "register", "count_parameters", "SequenceCore", "Mixer", "Block",
    "detach_state", "map_state", "MIXERS", "FEEDFORWARDS", "make_feedforward",
]
