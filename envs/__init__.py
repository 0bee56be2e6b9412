"""Batched environments for the IMPALA actor-learner: procgen (single- and multi-task), gymnasium, memory tasks.

All implement :class:`BatchedEnv` (see :mod:`metarl.envs.base`): ``reset(seed) -> obs``,
``step(actions) -> (obs, reward, done, episodes)`` with auto-reset in the same step. Build one by kind::

    env = make_env("procgen", 64, seed=0, games=["bigfish", "coinrun"], distribution_mode="easy")
    env = make_env("gym", 8, seed=0, env_id="CartPole-v1")
    env = make_env("memory", 32, seed=0, num_cues=4, delay=20)
"""
from __future__ import annotations

from typing import Optional

from metarl.errors import ConfigError

from metarl.engine.registry import lookup, store_schema

from .base import BatchedEnv, EpisodeTracker
from .gym import GymEnvConfig, GymnasiumEnv, gym_options
from .memory import MemoryEnv, MemoryEnvConfig, memory_options
from .procgen import (DISTRIBUTION_MODES, EXPLORATION_MODE_GAMES, EXTREME_MODE_GAMES, MEMORY_MODE_GAMES,
                      PROCGEN_GAMES, ProcgenEnv, ProcgenEnvConfig, ProcgenGymnasiumEnv, procgen_options)

__all__ = ["make_env", "make_env_from_config", "env_options", "ENV_KINDS", "ENV_OPTIONS", "BatchedEnv", "EpisodeTracker", "ProcgenEnv", "ProcgenGymnasiumEnv",
           "GymnasiumEnv", "MemoryEnv",
           "PROCGEN_GAMES", "MEMORY_MODE_GAMES", "EXTREME_MODE_GAMES", "EXPLORATION_MODE_GAMES",
           "DISTRIBUTION_MODES"]

#: kind -> class; the options of ``make_env`` are the class's keyword arguments.
ENV_KINDS = {"procgen": ProcgenEnv, "gym": GymnasiumEnv, "memory": MemoryEnv}
#: kind -> options(env_cfg, split) -> make_env keyword arguments, for an ``env`` config of that type
ENV_OPTIONS = {"procgen": procgen_options, "gym": gym_options, "memory": memory_options}
for _name, _schema in (("procgen", ProcgenEnvConfig), ("gym", GymEnvConfig), ("memory", MemoryEnvConfig)):
    store_schema(f"{_name}_schema", _schema)


def make_env(kind: str, num_envs: int, seed: Optional[int] = None, **options) -> BatchedEnv:
    """A batched env of ``kind`` (``procgen | gym | memory``) with ``num_envs`` slots.

    ``options`` go to the class: ``ProcgenEnv(games, distribution_mode, num_levels, start_level, ...)``,
    ``GymnasiumEnv(env_id, wrappers, **make_kwargs)``, ``MemoryEnv(num_cues, delay)``.
    """
    if kind not in ENV_KINDS:
        raise ConfigError(f"unknown env kind {kind!r}; valid kinds are: {', '.join(ENV_KINDS)}")
    return ENV_KINDS[kind](num_envs=num_envs, seed=seed, **options)


def env_options(env_cfg, split: str = "train") -> dict:
    """``make_env`` arguments for an ``env`` config (split="test": held-out levels where the env has them)."""
    return lookup(ENV_OPTIONS, "env.type", env_cfg.type)(env_cfg, split)


def make_env_from_config(env_cfg, num_envs: int, seed: Optional[int] = None, split: str = "train") -> BatchedEnv:
    """The batched env an ``env`` config describes."""
    return make_env(env_cfg.type, num_envs, seed=seed, **env_options(env_cfg, split))
