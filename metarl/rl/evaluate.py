"""Evaluation of a policy (or of uniformly random actions) on a batched env, per task, without bias
toward short episodes.

Keeping "the first episodes to finish" over-represents short ones (in coinrun: quick deaths). Here every
env slot plays a fixed quota of complete episodes, ``ceil(episodes / slots of its task)``; episodes a
slot starts after its quota are discarded. Each task's result is the mean, standard deviation and
standard error of its slots' episodes.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from .acting import ActingLoop


def summarise(returns) -> dict:
    """{mean, std, stderr, episodes} of a list of episode returns (std with ddof=1; nan when empty)."""
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    std = float(r.std(ddof=1)) if n > 1 else float("nan") if n == 0 else 0.0
    return {"mean": float(r.mean()) if n else float("nan"), "std": std,
            "stderr": std / math.sqrt(n) if n > 1 else float("nan") if n == 0 else 0.0, "episodes": n}


@torch.no_grad()
def evaluate(env, agent: Optional[torch.nn.Module], episodes: int, greedy: bool = False, seed: int = 0,
             max_steps: int = 1_000_000) -> dict:
    """Play ``episodes`` (at least; rounded up to a whole quota per slot) complete episodes per task.

    agent=None gives the uniformly random policy. Returns ``{task: {"mean", "std", "stderr", "episodes",
    "returns"}}``. Raises RuntimeError when ``max_steps`` steps do not finish the quotas.
    """
    if agent is not None:
        agent.eval()
    task_ids = np.asarray(env.task_ids)
    slots_per_task = np.bincount(task_ids, minlength=len(env.task_names))
    quota = np.array([math.ceil(episodes / max(slots_per_task[t], 1)) for t in task_ids])
    done_count = np.zeros(env.num_envs, dtype=np.int64)
    returns = {task: [] for task in env.task_names}
    loop = ActingLoop(env, agent, seed=seed, greedy=greedy)
    for _ in range(max_steps):
        if (done_count >= quota).all():
            break
        for record in loop.step().finished:
            slot = record["slot"]
            if done_count[slot] < quota[slot]:
                returns[record["task"]].append(record["return"])
            done_count[slot] += 1
    else:
        raise RuntimeError(f"evaluation did not finish {episodes} episodes per task in {max_steps} steps")
    return {task: {**summarise(r), "returns": r} for task, r in returns.items()}
