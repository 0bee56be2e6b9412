"""Any gymnasium environment with a discrete action space, batched with ``gymnasium.vector.SyncVectorEnv``.

The vector env runs with ``autoreset_mode=SAME_STEP``: when a slot's episode ends, gymnasium resets it inside
the same ``step`` call and returns the new episode's first observation (the last observation of the old
episode goes to ``info["final_obs"]``, which this interface does not pass on). ``done`` is
``terminated | truncated``.

Observations: a ``Box`` of uint8 stays uint8 (images); any other ``Box`` is cast to float32; a ``Discrete``
observation (FrozenLake, Taxi, ...) becomes a float32 one-hot vector. Other spaces need a wrapper, e.g.
``GymnasiumEnv(..., wrappers=[gymnasium.wrappers.FlattenObservation])``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from metarl.errors import ConfigError

from .base import BatchedEnv, EpisodeTracker, RLEnvConfig

__all__ = ["GymnasiumEnv"]

_REGISTER_HINT = ("To use your own environment, register it before creating the env: "
                  "gymnasium.register(id='MyEnv-v0', entry_point='my_package.my_module:MyEnv'), "
                  "or pass env_id='my_package.my_module:MyEnv-v0' so that gymnasium imports the module that "
                  "registers it.")


def _unknown_env_message(env_id: str, reason: Exception) -> str:
    import gymnasium

    ids = sorted(gymnasium.registry.keys())
    name = env_id.split(":")[-1]
    stem = name.split("/")[-1].split("-v")[0].lower()
    similar = [i for i in ids if stem and stem in i.lower()]
    similar += [i for i in difflib.get_close_matches(name, ids, n=5, cutoff=0.6) if i not in similar]
    classic = [i for i, spec in gymnasium.registry.items()
               if isinstance(spec.entry_point, str) and "classic_control" in spec.entry_point]
    lines = [f"unknown gymnasium env id {env_id!r} ({reason})."]
    if similar:
        lines.append(f"Similar registered ids: {', '.join(similar[:10])}.")
    lines.append(f"Classic-control ids: {', '.join(classic)} ({len(ids)} ids are registered in all; "
                 "gymnasium.pprint_registry() lists them).")
    lines.append(_REGISTER_HINT)
    return " ".join(lines)


class GymnasiumEnv(BatchedEnv):
    """``num_envs`` copies of the gymnasium env ``env_id`` (see the module docstring).

    Args:
        env_id: a registered id such as ``"CartPole-v1"`` (or ``"module:Id"``, see gymnasium.make).
        num_envs: number of slots.
        seed: seeds the first ``reset()`` when that one gets no seed (slot ``i`` gets ``seed + i``).
        wrappers: callables ``env -> env`` applied, in order, to each env after ``gymnasium.make``.
        **make_kwargs: passed on to ``gymnasium.make`` (e.g. ``max_episode_steps=200``).
    """

    def __init__(self, env_id: str, num_envs: int, seed: Optional[int] = None,
                 wrappers: Sequence[Callable] = (), **make_kwargs):
        import gymnasium
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        if not isinstance(env_id, str):
            raise ConfigError(f"GymnasiumEnv needs an env id string, got {env_id!r}")
        if int(num_envs) != num_envs or num_envs < 1:
            raise ConfigError(f"GymnasiumEnv needs num_envs >= 1, got {num_envs}")
        try:  # look the id up first: a clear message instead of gymnasium's exception zoo
            gymnasium.spec(env_id)
        except (gymnasium.error.Error, ModuleNotFoundError) as exc:
            raise ConfigError(_unknown_env_message(env_id, exc)) from None

        wrappers = list(wrappers)

        def make():
            env = gymnasium.make(env_id, **make_kwargs)
            for wrapper in wrappers:
                env = wrapper(env)
            return env

        self._vec = SyncVectorEnv([make for _ in range(int(num_envs))], autoreset_mode=AutoresetMode.SAME_STEP)
        try:
            self._setup_spaces(env_id)
        except ValueError:
            self._vec.close()
            raise
        self.env_id = env_id
        self.num_envs = int(num_envs)
        self.task_names = [env_id]
        self.task_ids = np.zeros(self.num_envs, dtype=np.int64)
        self._seed = seed
        self._tracker = EpisodeTracker(self.task_names, self.task_ids)
        self._needs_reset = True

    def _setup_spaces(self, env_id: str) -> None:
        from gymnasium import spaces

        action_space = self._vec.single_action_space
        if not isinstance(action_space, spaces.Discrete):
            raise ConfigError(f"GymnasiumEnv supports discrete action spaces only; {env_id!r} has {action_space} "
                             "(discretise it with a gymnasium action wrapper, passed through wrappers=)")
        self.num_actions = int(action_space.n)
        self._action_start = int(action_space.start)
        self._action_dtype = action_space.dtype
        obs_space = self._vec.single_observation_space
        if isinstance(obs_space, spaces.Box):
            self._one_hot = None
            self.obs_shape = tuple(obs_space.shape)
            self.obs_dtype = np.dtype(np.uint8) if obs_space.dtype == np.uint8 else np.dtype(np.float32)
        elif isinstance(obs_space, spaces.Discrete):
            self._one_hot = (int(obs_space.start), int(obs_space.n))
            self.obs_shape = (int(obs_space.n),)
            self.obs_dtype = np.dtype(np.float32)
        else:
            raise ConfigError(f"GymnasiumEnv supports Box and Discrete observations; {env_id!r} has {obs_space}. "
                             "Pass wrappers=[gymnasium.wrappers.FlattenObservation] (or your own wrapper).")

    def _convert_obs(self, obs) -> np.ndarray:
        if self._one_hot is not None:
            start, n = self._one_hot
            out = np.zeros((self.num_envs, n), dtype=np.float32)
            out[np.arange(self.num_envs), np.asarray(obs, dtype=np.int64) - start] = 1.0
            return out
        obs = np.asarray(obs)
        if obs.dtype != self.obs_dtype:
            return obs.astype(self.obs_dtype)
        return obs.copy()  # never hand out gymnasium's internal buffer

    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        if seed is None and self._needs_reset:
            seed = self._seed  # the constructor's seed applies to the first reset
        obs, _ = self._vec.reset(seed=seed)
        self._tracker.reset()
        self._needs_reset = False
        return self._convert_obs(obs)

    def step(self, actions: np.ndarray) -> tuple:
        if self._needs_reset:
            raise RuntimeError("GymnasiumEnv.step before reset(): call reset() first")
        actions = self._check_actions(actions)
        obs, reward, terminated, truncated, _ = self._vec.step(
            (actions + self._action_start).astype(self._action_dtype))
        reward = np.asarray(reward, dtype=np.float32)
        done = np.logical_or(terminated, truncated)
        return self._convert_obs(obs), reward, done, self._tracker.update(reward, done)

    def close(self) -> None:
        self._vec.close()


@dataclass
class GymEnvConfig(RLEnvConfig):
    """``env=gym``: any gymnasium env with discrete actions, vectorised."""

    name: str = "gym"  # run name
    type: str = "gym"  # env factory
    id: str = "CartPole-v1"  # gymnasium env id


def gym_options(env_cfg, split: str = "train") -> dict:
    """GymnasiumEnv arguments (one split: gymnasium envs have no held-out levels)."""
    return {"env_id": env_cfg.id}
