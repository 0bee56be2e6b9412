"""A vectorised cue-recall task that cannot be solved without memory (pure numpy, fast, deterministic).

Each episode lasts ``delay + 2`` steps::

    t = 0              obs = [one-hot(cue) | 0]     the cue, drawn uniformly from num_cues
    t = 1 .. delay     obs = [0 ... 0      | 0]     blank: nothing about the cue
    t = delay + 1      obs = [0 ... 0      | 1]     the query flag: act now
                                                    reward 1 if action == cue else 0; the episode ends

Actions before the query give 0 reward and change nothing. A memoryless policy sees the same query
observation whatever the cue was, so its expected return is ``1 / num_cues``; a policy that remembers the
cue over ``delay`` blank steps gets 1. Observations are float32 ``[num_cues + 1]``; ``num_actions = num_cues``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from metarl.errors import ConfigError

from .base import BatchedEnv, EpisodeTracker, RLEnvConfig

__all__ = ["MemoryEnv"]


class MemoryEnv(BatchedEnv):
    """``num_envs`` independent cue-recall episodes (see the module docstring).

    Args:
        num_envs: number of slots.
        num_cues: number of cues = number of actions (>= 2).
        delay: number of blank steps between the cue and the query (>= 0).
        seed: seeds the cue draws; the whole run is a function of the seed and the actions.
    """

    def __init__(self, num_envs: int, num_cues: int = 4, delay: int = 20, seed: Optional[int] = None):
        if int(num_envs) != num_envs or num_envs < 1:
            raise ConfigError(f"MemoryEnv needs num_envs >= 1, got {num_envs}")
        if int(num_cues) != num_cues or num_cues < 2:
            raise ConfigError(f"MemoryEnv needs num_cues >= 2, got {num_cues}")
        if int(delay) != delay or delay < 0:
            raise ConfigError(f"MemoryEnv needs delay >= 0, got {delay}")
        self.num_envs = int(num_envs)
        self.num_cues = int(num_cues)
        self.delay = int(delay)
        self.episode_length = self.delay + 2
        self.num_actions = self.num_cues
        self.obs_shape = (self.num_cues + 1,)
        self.obs_dtype = np.dtype(np.float32)
        self.task_names = [f"memory-{self.num_cues}cues-delay{self.delay}"]
        self.task_ids = np.zeros(self.num_envs, dtype=np.int64)
        self._rng = np.random.default_rng(seed)
        self._tracker = EpisodeTracker(self.task_names, self.task_ids)
        self._cue = np.zeros(self.num_envs, dtype=np.int64)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._needs_reset = True

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, self.num_cues + 1), dtype=np.float32)
        cue_shown = np.flatnonzero(self._t == 0)
        obs[cue_shown, self._cue[cue_shown]] = 1.0
        obs[self._t == self.delay + 1, self.num_cues] = 1.0
        return obs

    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._cue = self._rng.integers(0, self.num_cues, size=self.num_envs)
        self._t[:] = 0
        self._tracker.reset()
        self._needs_reset = False
        return self._observe()

    def step(self, actions: np.ndarray) -> tuple:
        if self._needs_reset:
            raise RuntimeError("MemoryEnv.step before reset(): call reset() first")
        actions = self._check_actions(actions)
        done = self._t == self.delay + 1
        reward = (done & (actions == self._cue)).astype(np.float32)
        self._t += 1
        ended = np.flatnonzero(done)
        if ended.size:  # auto-reset: a new cue, shown in the obs returned now
            self._cue[ended] = self._rng.integers(0, self.num_cues, size=ended.size)
            self._t[ended] = 0
        return self._observe(), reward, done, self._tracker.update(reward, done)


@dataclass
class MemoryEnvConfig(RLEnvConfig):
    """``env=memory``: a cue at the first step, the rewarded action chosen ``delay`` steps later (needs memory)."""

    name: str = "memory"  # run name
    type: str = "memory"  # env factory
    num_cues: int = 4  # cues = actions; a memoryless policy gets 1/num_cues
    delay: int = 5  # blank steps between the cue and the query


def memory_options(env_cfg, split: str = "train") -> dict:
    return {"num_cues": env_cfg.num_cues, "delay": env_cfg.delay}
