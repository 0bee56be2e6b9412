"""Procgen games (Cobbe et al. 2020), single- or multi-task, through procgen's gym3 interface.

``ProcgenEnv("coinrun", 64)`` runs 64 coinrun levels; ``ProcgenEnv(["bigfish", "coinrun"], 64)`` runs 32
slots of each (one ``ProcgenGym3Env`` per game, their outputs concatenated along the env axis) for one
agent, with ``task_ids`` saying which game each slot plays. Observations are uint8 RGB ``[64, 64, 3]``;
all games share the same 15 actions.

gym3 semantics: after ``env.act(a)``, ``rew, obs, first = env.observe()`` gives the reward of that step,
the next observation and ``first[i]``, True when ``obs[i]`` is the first of a new episode. procgen resets a
level by itself, so ``first`` after an act is exactly our ``done``, and ``obs`` is already the next
episode's first frame.

Everything that would make procgen's C++ core abort the whole Python process (``fassert``) is checked
here first and raised as a ValueError: ``memory`` mode exists only for six games, ``extreme`` mode only
for four, ``exploration`` mode only for eight (this last one procgen itself checks with an assert).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import gymnasium
import numpy as np

from metarl.errors import ConfigError

from .base import BatchedEnv, EpisodeTracker, RLEnvConfig

__all__ = ["ProcgenEnv", "ProcgenGymnasiumEnv",
           "PROCGEN_GAMES", "DISTRIBUTION_MODES", "MEMORY_MODE_GAMES", "EXTREME_MODE_GAMES",
           "EXPLORATION_MODE_GAMES"]

#: The 16 games of the procgen benchmark (``procgen.env.ENV_NAMES``).
PROCGEN_GAMES = ("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
                 "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot")
#: Games that have ``distribution_mode="memory"`` (procgen src/game.cpp asserts this list).
MEMORY_MODE_GAMES = ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner")
#: Games that have ``distribution_mode="extreme"`` (procgen src/game.cpp asserts this list).
EXTREME_MODE_GAMES = ("chaser", "dodgeball", "leaper", "starpilot")
#: Games that have ``distribution_mode="exploration"`` (``procgen.env.EXPLORATION_LEVEL_SEEDS``); this mode
#: is one fixed hard level per game, so ``num_levels`` and ``start_level`` cannot be set.
EXPLORATION_MODE_GAMES = ("caveflyer", "climber", "coinrun", "heist", "jumper", "leaper", "maze", "ninja")
#: Valid ``distribution_mode`` values and the games each is restricted to (None: all games).
DISTRIBUTION_MODES = {"easy": None, "hard": None, "extreme": EXTREME_MODE_GAMES, "memory": MEMORY_MODE_GAMES,
                      "exploration": EXPLORATION_MODE_GAMES}

_RESERVED_KWARGS = ("num", "env_name", "rand_seed")


def _check_games(games: Union[str, Sequence[str]]) -> list:
    if isinstance(games, str):
        games = [games]
    games = list(games)
    if not games:
        raise ConfigError(f"ProcgenEnv needs at least one game; valid games: {', '.join(PROCGEN_GAMES)}")
    for game in games:
        if not isinstance(game, str) or game not in PROCGEN_GAMES:
            raise ConfigError(f"unknown procgen game {game!r}; valid games are: {', '.join(PROCGEN_GAMES)}")
    duplicates = sorted({g for g in games if games.count(g) > 1})
    if duplicates:
        raise ConfigError(f"procgen games listed more than once: {', '.join(duplicates)} "
                         "(each game is one task; raise num_envs to give it more slots)")
    return games


def _check_mode(games: list, distribution_mode: str) -> None:
    if distribution_mode not in DISTRIBUTION_MODES:
        raise ConfigError(f"unknown procgen distribution_mode {distribution_mode!r}; "
                         f"valid modes are: {', '.join(DISTRIBUTION_MODES)}")
    allowed = DISTRIBUTION_MODES[distribution_mode]
    if allowed is None:
        return
    unsupported = [g for g in games if g not in allowed]
    if unsupported:
        raise ConfigError(f"procgen distribution_mode={distribution_mode!r} does not exist for "
                         f"{', '.join(unsupported)}; only these games support it: {', '.join(allowed)} "
                         "(procgen would abort the whole process)")


def split_evenly(num_envs: int, num_tasks: int) -> np.ndarray:
    """Slots per task, as even as possible, the first ``num_envs % num_tasks`` tasks getting one more."""
    counts = np.full(num_tasks, num_envs // num_tasks, dtype=np.int64)
    counts[: num_envs % num_tasks] += 1
    return counts


class ProcgenEnv(BatchedEnv):
    """``num_envs`` procgen slots over one or several games (see the module docstring).

    Args:
        games: a game name, or a list of distinct game names (multi-task; slots split evenly, in order).
        num_envs: total number of slots (at least one per game).
        distribution_mode: ``easy | hard | extreme | memory | exploration`` (the last three only for some
            games, see ``DISTRIBUTION_MODES``).
        num_levels: number of distinct levels per game (0: unlimited).
        start_level: seed of the first level.
        seed: seeds procgen's level sampling (each game gets its own seed derived from it); None: random.
        **procgen_kwargs: passed on to ``ProcgenGym3Env`` (e.g. ``use_backgrounds=False``,
            ``paint_vel_info=True``, ``num_threads=1``, ``use_sequential_levels=True``).
    """

    def __init__(self, games: Union[str, Sequence[str]], num_envs: int, distribution_mode: str = "easy",
                 num_levels: int = 0, start_level: int = 0, seed: Optional[int] = None, **procgen_kwargs):
        games = _check_games(games)
        _check_mode(games, distribution_mode)
        if int(num_envs) != num_envs or num_envs < len(games):
            raise ConfigError(f"ProcgenEnv needs num_envs >= the number of games ({len(games)}: "
                             f"{', '.join(games)}), got num_envs={num_envs}")
        if num_levels < 0 or start_level < 0:
            raise ConfigError(f"procgen num_levels and start_level must be >= 0, got num_levels={num_levels}, "
                             f"start_level={start_level}")
        if distribution_mode == "exploration" and (num_levels != 0 or start_level != 0):
            raise ConfigError("procgen distribution_mode='exploration' fixes one level per game: "
                             "leave num_levels and start_level at 0")
        reserved = [k for k in _RESERVED_KWARGS if k in procgen_kwargs]
        if reserved:
            raise ConfigError(f"ProcgenEnv sets {', '.join(reserved)} itself (use games=, num_envs=, seed=)")

        self.num_envs = int(num_envs)
        self.task_names = games
        self.counts = split_evenly(self.num_envs, len(games))
        self.task_ids = np.repeat(np.arange(len(games), dtype=np.int64), self.counts)
        self.obs_shape = (64, 64, 3)
        self.obs_dtype = np.dtype(np.uint8)
        self.distribution_mode = distribution_mode
        self._make_kwargs = dict(procgen_kwargs, distribution_mode=distribution_mode)
        if distribution_mode != "exploration":  # procgen refuses these keys in exploration mode
            self._make_kwargs.update(num_levels=int(num_levels), start_level=int(start_level))
        self._tracker = EpisodeTracker(self.task_names, self.task_ids)
        self._envs = []
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._build()
        self.num_actions = int(self._envs[0].ac_space.eltype.n)

    # -- construction -----------------------------------------------------------------------------
    def _build(self) -> None:
        """(Re)create one ProcgenGym3Env per game, each seeded by the next draw of ``self._rng``."""
        with contextlib.redirect_stderr(io.StringIO()):  # `import procgen` imports old gym, which prints a notice
            from procgen import ProcgenGym3Env  # imported here: `import procgen` is slow

        self._close_envs()
        rand_seeds = self._rng.integers(0, 2**31 - 1, size=len(self.task_names))
        for game, count, rand_seed in zip(self.task_names, self.counts, rand_seeds):
            self._envs.append(ProcgenGym3Env(num=int(count), env_name=game, rand_seed=int(rand_seed),
                                             **self._make_kwargs))
        self._stepped = False
        self._tracker.reset()

    def _close_envs(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []

    # -- interface --------------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        """New episodes everywhere. procgen cannot restart a level on demand, so this rebuilds the games,
        unless nothing was stepped since they were built (with this ``seed``, or any when ``seed=None``).
        ``seed=None`` continues the env's own random stream, so runs stay reproducible from the first seed."""
        if seed is not None and (seed != self._seed or self._stepped or not self._envs):
            self._seed = seed
            self._rng = np.random.default_rng(seed)
            self._build()
        elif self._stepped or not self._envs:
            self._seed = None
            self._build()
        obs = [env.observe()[1]["rgb"] for env in self._envs]
        return obs[0] if len(obs) == 1 else np.concatenate(obs)

    def step(self, actions: np.ndarray) -> tuple:
        if not self._envs:
            raise RuntimeError("ProcgenEnv.step after close()")
        actions = self._check_actions(actions).astype(np.int32)
        start = 0
        for env, count in zip(self._envs, self.counts):  # act on all games first: they step in parallel
            env.act(actions[start:start + count])
            start += count
        rews, obs, firsts = zip(*(env.observe() for env in self._envs))
        self._stepped = True
        if len(self._envs) == 1:
            reward, obs, done = rews[0], obs[0]["rgb"], firsts[0]
        else:
            reward, obs, done = np.concatenate(rews), np.concatenate([o["rgb"] for o in obs]), np.concatenate(firsts)
        reward = reward.astype(np.float32, copy=False)
        done = done.astype(bool, copy=False)
        return obs, reward, done, self._tracker.update(reward, done)

    def close(self) -> None:
        self._close_envs()



class ProcgenGymnasiumEnv(gymnasium.Env):
    """One procgen slot as a single gymnasium env, for tools that vectorise envs themselves (RLlib's env
    runners). ``config`` keys: ``game`` (default bigfish) and the other ``ProcgenEnv`` arguments.

    Observations are uint8 ``[64, 64, 3]``, actions ``Discrete(15)``. As in procgen's own gym wrapper, the
    observation returned with ``terminated=True`` is already the first frame of the next level (procgen
    restarts by itself), and the following ``reset()`` returns that frame without rebuilding the game.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: Optional[dict] = None):
        config = dict(config or {})
        self._env = ProcgenEnv(config.pop("game", "bigfish"), 1, **config)
        self.observation_space = gymnasium.spaces.Box(0, 255, self._env.obs_shape, np.uint8)
        self.action_space = gymnasium.spaces.Discrete(self._env.num_actions)
        self._pending = None  # the first frame of the next level, once an episode has ended

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if self._pending is not None and seed is None:
            obs = self._pending
        else:
            obs = self._env.reset(seed=seed)
        self._pending = None
        return obs[0], {}

    def step(self, action):
        obs, reward, done, _ = self._env.step(np.asarray([action]))
        if done[0]:
            self._pending = obs
        return obs[0], float(reward[0]), bool(done[0]), False, {}

    def close(self):
        self._env.close()


@dataclass
class ProcgenEnvConfig(RLEnvConfig):
    """``env=procgen``: procgen games through gym3 (64x64x3 frames, 15 actions); several games = multi-task."""

    name: str = "procgen"  # run name
    type: str = "procgen"  # env factory
    games: List[str] = field(default_factory=lambda: ["coinrun"])  # one or more of the 16 games
    distribution_mode: str = "easy"  # easy | hard | extreme | memory | exploration
    num_levels: int = 200  # training levels (0 = all levels)
    start_level: int = 0  # first training level; unseen levels for evaluation follow the training range


def procgen_options(env_cfg, split: str = "train") -> dict:
    """ProcgenEnv arguments; split="test": the unseen levels after the training range (or from a far
    offset when training used all levels). Games and mode are checked here, before any env starts."""
    games = _check_games(list(env_cfg.games))
    _check_mode(games, env_cfg.distribution_mode)
    options = {"games": games, "distribution_mode": env_cfg.distribution_mode,
               "num_levels": env_cfg.num_levels, "start_level": env_cfg.start_level}
    if split == "test":
        options["start_level"] = env_cfg.start_level + (env_cfg.num_levels or 1_000_000)
        options["num_levels"] = 0
    return options
