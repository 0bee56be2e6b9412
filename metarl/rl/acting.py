"""One acting loop for the actors and the evaluation: a batched env, the agent's carried inputs and state,
and one step of acting. ``Actor.unroll`` (metarl.rl.impala) strings T steps into a rollout;
``evaluate`` (metarl.rl.evaluate) steps until every env slot has finished its quota of episodes.

Per step, with n env slots: the agent sees ``obs [n]``, the previous action and reward and ``reset [n]``
(True on the first step of an episode, where the core starts over), samples an action from the softmax
of its logits (or takes the argmax, or a uniformly random action when there is no agent), and the env
steps (auto-reset: ``done`` ends the episode and the next obs is the next episode's first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn


@dataclass
class Step:
    """What one step of acting saw and did ([n] tensors; logits [n, A] or None for the random policy)."""

    obs: torch.Tensor
    prev_action: torch.Tensor
    prev_reward: torch.Tensor
    reset: torch.Tensor
    action: torch.Tensor
    logits: Optional[torch.Tensor]
    reward: torch.Tensor
    done: torch.Tensor
    finished: list  # records of the episodes that ended at this step: task, slot, return, length


class ActingLoop:
    """Acting state of a batched env: the next obs, previous action and reward, reset flags, core state."""

    def __init__(self, env, agent: Optional[nn.Module], seed: Optional[int] = None, greedy: bool = False):
        self.env, self.agent, self.greedy = env, agent, greedy
        n = env.num_envs
        self.obs = torch.from_numpy(np.asarray(env.reset(seed=seed)))
        self.prev_action = torch.zeros(n, dtype=torch.long)
        self.prev_reward = torch.zeros(n)
        self.reset = torch.ones(n, dtype=torch.bool)  # the first step of every slot starts an episode
        self.state = agent.initial_state(n) if agent is not None else None
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)

    @torch.no_grad()
    def step(self) -> Step:
        obs, prev_action, prev_reward, reset = self.obs, self.prev_action, self.prev_reward, self.reset
        if self.agent is None:
            logits = None
            action = torch.randint(0, self.env.num_actions, (self.env.num_envs,), generator=self.generator)
        else:
            logits, _, self.state = self.agent(obs[:, None], prev_action[:, None], prev_reward[:, None],
                                               reset[:, None], self.state)
            logits = logits[:, 0]
            action = logits.argmax(-1) if self.greedy else \
                torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator).squeeze(1)
        next_obs, reward, done, finished = self.env.step(action.numpy())
        reward = torch.as_tensor(reward, dtype=torch.float32)
        done = torch.as_tensor(done, dtype=torch.bool)
        self.obs = torch.from_numpy(np.asarray(next_obs))
        self.prev_action, self.prev_reward, self.reset = action, reward, done
        return Step(obs, prev_action, prev_reward, reset, action, logits, reward, done, finished)
