"""Evaluation of a policy (or of uniformly random actions) on a batched env, per task."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch


@torch.no_grad()
def evaluate(env, agent: Optional[torch.nn.Module], episodes: int, greedy: bool = False, seed: int = 0,
             max_steps: int = 1_000_000) -> dict:
    """Run until every task has ``episodes`` finished episodes (the first ones to finish per task).

    agent=None gives the uniformly random policy. Returns ``{task: {"mean", "std", "episodes"}}``.
    """
    n = env.num_envs
    generator = torch.Generator().manual_seed(seed)
    obs = torch.from_numpy(np.asarray(env.reset(seed=seed)))
    prev_action = torch.zeros(n, dtype=torch.long)
    prev_reward = torch.zeros(n)
    reset = torch.ones(n, dtype=torch.bool)
    state = agent.initial_state(n) if agent is not None else None
    if agent is not None:
        agent.eval()
    returns = {task: [] for task in env.task_names}
    for _ in range(max_steps):
        if all(len(r) >= episodes for r in returns.values()):
            break
        if agent is None:
            action = torch.randint(0, env.num_actions, (n,), generator=generator)
        else:
            logits, _, state = agent(obs[:, None], prev_action[:, None], prev_reward[:, None], reset[:, None], state)
            logits = logits[:, 0]
            action = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1,
                                                                        generator=generator).squeeze(1)
        next_obs, reward, done, finished = env.step(action.numpy())
        for record in finished:
            if len(returns[record["task"]]) < episodes:
                returns[record["task"]].append(record["return"])
        obs = torch.from_numpy(np.asarray(next_obs))
        prev_action, prev_reward = action, torch.as_tensor(reward, dtype=torch.float32)
        reset = torch.as_tensor(done, dtype=torch.bool)
    return {task: {"mean": float(np.mean(r)) if r else float("nan"), "std": float(np.std(r)) if r else float("nan"),
                   "episodes": len(r)} for task, r in returns.items()}
