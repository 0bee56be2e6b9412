"""The one interface every batched environment of metarl implements, and the episode bookkeeping they share.

A :class:`BatchedEnv` runs ``num_envs`` environment slots in lock-step for an IMPALA actor::

    obs = env.reset(seed=0)                           # [num_envs, *obs_shape]
    obs, reward, done, episodes = env.step(actions)   # actions: [num_envs] int in [0, num_actions)

- ``done[i]`` is True when the episode of slot ``i`` ended with this step. The slot is reset in the same
  step, so ``obs[i]`` is then already the *first* observation of its next episode (the last observation of
  the finished episode is not returned: IMPALA bootstraps through ``done`` with a zero discount).
- ``episodes`` lists one record per episode that finished in this step::

      {"task": str, "task_id": int, "return": float, "length": int}

  ``return`` is the undiscounted sum of the rewards of that episode and ``length`` its number of steps,
  both counted by the env itself (see :class:`EpisodeTracker`).
- Multi-task envs (several procgen games in one batch) name their tasks in ``task_names``;
  ``task_ids[i]`` is the index into ``task_names`` of the task that slot ``i`` runs. Single-task envs have
  ``task_names == [name]`` and ``task_ids`` all zero.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["BatchedEnv", "EpisodeTracker"]


class EpisodeTracker:
    """Per-slot running returns and lengths; turns ``done`` flags into finished-episode records."""

    def __init__(self, task_names: list, task_ids: np.ndarray):
        self.task_names = list(task_names)
        self.task_ids = np.asarray(task_ids, dtype=np.int64)
        n = len(self.task_ids)
        self.returns = np.zeros(n, dtype=np.float64)
        self.lengths = np.zeros(n, dtype=np.int64)

    def reset(self) -> None:
        """Forget the episodes in progress (all slots start a new episode)."""
        self.returns[:] = 0.0
        self.lengths[:] = 0

    def update(self, reward: np.ndarray, done: np.ndarray) -> list:
        """Add one step of ``reward`` [n]; return the records of the slots whose episode ended (``done`` [n])."""
        self.returns += reward
        self.lengths += 1
        records = []
        for i in np.flatnonzero(done):
            task_id = int(self.task_ids[i])
            records.append({"task": self.task_names[task_id], "task_id": task_id, "slot": int(i),
                            "return": float(self.returns[i]), "length": int(self.lengths[i])})
            self.returns[i] = 0.0
            self.lengths[i] = 0
        return records


class BatchedEnv(abc.ABC):
    """``num_envs`` slots of discrete-action environments stepped together, with auto-reset.

    Attributes (set by every subclass):
        num_envs: number of slots.
        obs_shape: the shape of one slot's observation, e.g. ``(64, 64, 3)`` or ``(4,)``.
        obs_dtype: ``np.uint8`` for images, ``np.float32`` for vectors.
        num_actions: size of the discrete action set; actions are ints in ``[0, num_actions)``.
        task_names: one name per task (single-task envs: ``[name]``).
        task_ids: ``[num_envs]`` int64, the task index of each slot.
    """

    num_envs: int
    obs_shape: tuple
    obs_dtype: np.dtype
    num_actions: int
    task_names: list
    task_ids: np.ndarray

    @abc.abstractmethod
    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        """Start a new episode in every slot; returns obs ``[num_envs, *obs_shape]``.

        ``seed`` makes everything that follows deterministic (where the backend allows it); ``None``
        continues from the current random state.
        """

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> tuple:
        """One step of every slot: ``(obs, reward [n] float32, done [n] bool, episodes: list[dict])``."""

    def close(self) -> None:
        """Release the backend's resources (idempotent)."""

    # -- helpers for subclasses -------------------------------------------------------------------
    def _check_actions(self, actions) -> np.ndarray:
        """``actions`` as an int64 array of shape [num_envs]; ValueError when the shape or a value is wrong."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"{type(self).__name__}.step expects actions of shape ({self.num_envs},), "
                             f"got {actions.shape}")
        if not (np.issubdtype(actions.dtype, np.integer) or actions.dtype == np.bool_):
            if not np.all(np.equal(np.mod(actions, 1), 0)):
                raise ValueError(f"{type(self).__name__}.step expects integer actions, got {actions.dtype}")
        actions = actions.astype(np.int64)
        if actions.size and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(f"{type(self).__name__}.step: actions must lie in [0, {self.num_actions}), "
                             f"got values in [{actions.min()}, {actions.max()}]")
        return actions

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        tasks = self.task_names if len(self.task_names) <= 4 else self.task_names[:4] + ["..."]
        return (f"{type(self).__name__}(num_envs={self.num_envs}, obs_shape={self.obs_shape}, "
                f"obs_dtype={np.dtype(self.obs_dtype).name}, num_actions={self.num_actions}, tasks={tasks})")


@dataclass
class RLEnvConfig:
    """Fields of every RL ``env`` config (each env's dataclass extends it and sets its defaults)."""

    name: str = "env"  # run name
    kind: str = "rl"  # which trainer runs it
    type: str = "env"  # env factory (metarl.envs.ENV_KINDS) and options (metarl.envs.ENV_OPTIONS)
