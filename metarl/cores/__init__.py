"""Sequence cores: ``metarl.cores.from_config(cfg.agent)`` (the builder every user calls) or
``metarl.cores.make(name, d_model=..., num_layers=..., num_heads=..., ff=...)``.

Every core follows one contract (see DESIGN.md)::

    state = core.initial_state(batch_size, device)
    y, state = core(x, state, reset=None)     # x, y: [B, T, d_model]; reset: [B, T] bool
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

from torch import nn

from ..errors import ConfigError
from ..layers.feedforward import FEEDFORWARDS, make_feedforward
from .base import Block, Mixer, SequenceCore, detach_state, map_state

MIXERS: dict[str, type] = {}


def register(name: str):
    """Class decorator: make a Mixer available to ``make(name, ...)``."""

    def wrap(cls):
        MIXERS[name] = cls
        return cls

    return wrap


def _load_builtin_mixers() -> None:
    # imported here so that each family module can import ``register`` from this package
    from . import linear, lstm, mlp, recdelta, srwm, transformer  # noqa: F401


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
        raise ConfigError(f"unknown core {name!r}; known cores: {', '.join(sorted(MIXERS))}")
    if d_model <= 0 or num_layers <= 0 or num_heads <= 0:
        raise ConfigError(f"d_model, num_layers and num_heads must be positive, got {d_model}, {num_layers}, {num_heads}")
    d_ff = d_ff or 4 * d_model
    blocks = []
    for _ in range(num_layers):
        mixer = _build(MIXERS[name], f"core {name!r}", "agent.options", d_model=d_model, num_heads=num_heads,
                       dropout=dropout, **mixer_options)
        ffn = _build(make_feedforward, f"feed-forward {ff!r}", "agent.ff_options", ff, d_model, d_ff, dropout,
                     num_layers=num_layers, **(ff_options or {}))  # num_layers: weight_std_scale="preln"
        blocks.append(Block(d_model, mixer, ffn, dropout))
    return SequenceCore(name, d_model, blocks)


def _build(factory, what: str, field: str, *args, **kwargs):
    """``factory(*args, **kwargs)``, with an unknown option named as a ConfigError instead of a TypeError."""
    import inspect

    target = factory.__init__ if inspect.isclass(factory) else factory
    parameters = inspect.signature(target).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            known = [n for n, p in parameters.items() if n not in ("self", "d_model", "num_heads", "dropout")
                     and p.kind is not p.VAR_POSITIONAL]
            raise ConfigError(f"{field}: {what} has no option {', '.join(unknown)}; its options: {', '.join(known)}")
    try:
        return factory(*args, **kwargs)
    except TypeError as err:  # an option the factory passes on (feed-forward classes)
        if "unexpected keyword argument" not in str(err):
            raise
        raise ConfigError(f"{field}: {what}: {err}") from None


# the keys of ``metarl.config.AgentConfig`` that describe the core, and those that belong to the RL agent
SIZE_KEYS = ("num_layers", "num_heads", "ff", "d_ff", "dropout")  # passed to ``make`` as they are
CONFIG_KEYS = ("name", "d_model", *SIZE_KEYS, "ff_options", "options", "options_by_core")
AGENT_ONLY_KEYS = ("encoder_hidden", "truncate_grad_each_step")


def _plain(value: Any) -> Any:
    """An OmegaConf container as plain dicts/lists (resolved); anything else unchanged."""
    from omegaconf import OmegaConf  # only configs need it

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def from_config(agent_cfg: Any) -> SequenceCore:
    """Build the core an agent config describes: ``core = from_config(cfg.agent)``.

    agent_cfg: an OmegaConf ``DictConfig``, a dict or a dataclass with the keys of
    ``metarl.config.AgentConfig``: ``name`` and ``d_model`` (required), ``num_layers``, ``num_heads``,
    ``ff``, ``d_ff``, ``dropout``, ``ff_options``, ``options``, ``options_by_core`` (absent ones take
    ``make``'s defaults). The RL agent's keys (``AGENT_ONLY_KEYS``) are ignored; any other key raises
    ``ValueError``.

    ``options_by_core`` maps core names to the mixer options an env preset recommends for that core (e.g.
    ``env=procgen`` sets ``agent.options_by_core.srwm`` to the reference RL layer): the entry of ``name`` is
    merged under ``options`` (a key in both takes the value of ``options``); the other entries are ignored, so
    one preset serves ``agent=srwm`` and ``agent=lstm`` alike. Its keys must be core names.
    """
    if dataclasses.is_dataclass(agent_cfg) and not isinstance(agent_cfg, type):
        agent_cfg = {f.name: getattr(agent_cfg, f.name) for f in dataclasses.fields(agent_cfg)}
    cfg = _plain(agent_cfg)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"from_config: expected a DictConfig, dict or dataclass, got {type(agent_cfg).__name__}")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS) - set(AGENT_ONLY_KEYS))
    if unknown:
        raise ConfigError(f"from_config: unknown agent key(s) {', '.join(map(repr, unknown))}; "
                         f"valid keys: {', '.join(CONFIG_KEYS + AGENT_ONLY_KEYS)}")
    missing = [key for key in ("name", "d_model") if cfg.get(key) is None]
    if missing:
        raise ConfigError(f"from_config: the agent config needs {' and '.join(map(repr, missing))}")
    kwargs = {key: cfg[key] for key in SIZE_KEYS if key in cfg}
    by_core = _plain(cfg.get("options_by_core")) or {}
    if not isinstance(by_core, Mapping) or not all(isinstance(v, Mapping) for v in by_core.values()):
        raise ConfigError("agent.options_by_core must map core names to dicts of mixer options, "
                          f"got {by_core!r}")
    unknown_cores = sorted(set(by_core) - set(names()))
    if unknown_cores:
        raise ConfigError(f"agent.options_by_core: unknown core(s) {', '.join(map(repr, unknown_cores))}; "
                          f"known cores: {', '.join(names())}")
    options = {**by_core.get(cfg["name"], {}), **(_plain(cfg.get("options")) or {})}
    ff_options = dict(_plain(cfg.get("ff_options")) or {})
    return make(cfg["name"], d_model=cfg["d_model"], ff_options=ff_options, **kwargs, **options)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "from_config", "make", "names", "register", "count_parameters", "SequenceCore", "Mixer", "Block",
    "detach_state", "map_state", "MIXERS", "FEEDFORWARDS", "make_feedforward",
]
