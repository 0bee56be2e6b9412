"""IMPALA (Espeholt et al. 2018): actors that unroll the newest policy they have, a learner with V-trace.

The two halves talk only through plain data, so they run in threads of one process (``runner=local``,
:mod:`metarl.rl.local`) or as Ray actors:

- ``Actor.unroll()`` returns a *rollout*: a dict of batch-first tensors over ``N`` envs and ``T`` steps
  (``T + 1`` where the bootstrap step is included)::

      obs [N, T+1, ...]   prev_action [N, T+1]   prev_reward [N, T+1]   reset [N, T+1]
      action [N, T]       reward [N, T]          done [N, T]            behaviour_logits [N, T, A]
      initial_state       the core state before step 0 (detached), a tuple of [N, ...] tensors
      version             the policy version that acted (int)

  plus ``episodes``, the records of the episodes that finished during the unroll.
- ``Learner.learn(batch)`` takes rollouts concatenated along N (``collate``), runs the agent over the
  ``T + 1`` steps from ``initial_state`` (gradients through the whole unroll), computes V-trace and takes
  one optimiser step; ``Learner.weights()`` gives the parameters to publish with a version number.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Optional

import torch
from torch import nn

from ..cores import detach_state, map_state
from ..engine.optim import Schedule, clip_gradients, make_optimizer
from ..errors import NonFiniteLossError
from . import losses, vtrace
from .acting import ActingLoop


class Actor:
    """Unrolls the newest policy it has on a batched env (the acting loop of :mod:`metarl.rl.acting`)."""

    def __init__(self, env, agent: nn.Module, unroll_length: int, seed: Optional[int] = None):
        self.env = env
        self.agent = agent.eval()
        self.unroll_length = unroll_length
        self.version = -1
        self.loop = ActingLoop(env, self.agent, seed=seed)

    def set_weights(self, state_dict: dict, version: int) -> None:
        """Load newer weights (a no-op for a version already loaded)."""
        if version != self.version:
            self.agent.load_state_dict(state_dict)
            self.version = version

    @torch.no_grad()
    def unroll(self) -> dict:
        loop = self.loop
        initial_state = detach_state(loop.state)
        steps = [loop.step() for _ in range(self.unroll_length)]
        stack = lambda xs: torch.stack(xs, dim=1)
        # the bootstrap step: its inputs, not its action
        inputs = lambda name, last: stack([getattr(s, name) for s in steps] + [last])
        return {
            "obs": inputs("obs", loop.obs), "prev_action": inputs("prev_action", loop.prev_action),
            "prev_reward": inputs("prev_reward", loop.prev_reward), "reset": inputs("reset", loop.reset),
            "action": stack([s.action for s in steps]), "reward": stack([s.reward for s in steps]),
            "done": stack([s.done for s in steps]), "behaviour_logits": stack([s.logits for s in steps]),
            "initial_state": initial_state, "version": self.version,
            "episodes": [e for s in steps for e in s.finished],
        }


def collate(rollouts: list) -> dict:
    """Concatenate rollouts along the env axis N (episode records are pooled)."""
    batch = {key: torch.cat([r[key] for r in rollouts]) for key in rollouts[0]
             if key not in ("initial_state", "version", "episodes")}
    batch["initial_state"] = map_state(lambda *xs: torch.cat(xs), *[r["initial_state"] for r in rollouts])
    batch["version"] = min(r["version"] for r in rollouts)
    batch["episodes"] = [e for r in rollouts for e in r["episodes"]]
    return batch


class Learner:
    """V-trace actor-critic updates with the ``optim`` group's optimiser, schedule and clipping (IMPALA's
    setting, ``optim=rmsprop``: RMSProp, lr decayed linearly to 0 over the run, norm clip 40).

    impala needs: total_frames, unroll_length, batch_size, entropy_cost, baseline_cost, gamma, reward_clip.
    The schedule runs over total_frames / (batch_size · unroll_length) updates.
    """

    def __init__(self, agent: nn.Module, impala, optim, device: str = "cpu"):
        self.agent = agent.to(device)
        self.cfg, self.optim = impala, optim
        self.device = device
        self.optimizer = make_optimizer(agent, optim)
        frames_per_update = impala.batch_size * impala.unroll_length
        self.schedule = Schedule(optim, total_steps=math.ceil(impala.total_frames / frames_per_update))
        self.frames = 0  # env frames learned from
        self.updates = 0

    def weights(self) -> dict:
        """A CPU copy of the parameters for actors."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.agent.state_dict().items()}

    def learn(self, batch: dict) -> dict:
        cfg, dev = self.cfg, self.device
        self.agent.train()
        to = lambda x: x.to(dev, non_blocking=True)
        logits, values, _ = self.agent(to(batch["obs"]), to(batch["prev_action"]), to(batch["prev_reward"]),
                                       to(batch["reset"]), map_state(to, batch["initial_state"]))
        bootstrap, logits, values = values[:, -1], logits[:, :-1], values[:, :-1]
        rewards = to(batch["reward"])
        if cfg.reward_clip:
            rewards = losses.clip_rewards(rewards)
        discounts = (~to(batch["done"])).float() * cfg.gamma
        actions = to(batch["action"])
        vt = vtrace.from_logits(to(batch["behaviour_logits"]), logits.detach(), actions, discounts, rewards,
                                values.detach(), bootstrap.detach())
        pg_loss = losses.policy_gradient_loss(logits, actions, vt.pg_advantages)
        baseline_loss = cfg.baseline_cost * losses.baseline_loss(vt.vs - values)
        entropy_loss = cfg.entropy_cost * losses.entropy_loss(logits)
        # the three losses above are sums over the B·T steps (losses.py, reduction="sum", as torchbeast); the
        # core's aux loss (σ-MoE entropy regulariser) is one per-batch mean-like term, weighted for a per-token
        # mean loss (Csordás et al.): scale it by the number of summed terms so entropy_reg keeps that meaning
        aux_loss = self.agent.aux_loss() * actions.numel()
        total = pg_loss + baseline_loss + entropy_loss + aux_loss
        if not torch.isfinite(total):
            raise NonFiniteLossError(
                f"non-finite loss at update {self.updates + 1} (policy {pg_loss.item()}, baseline "
                f"{baseline_loss.item()}, entropy {entropy_loss.item()}); lower optim.lr or check the rewards")
        lr = self.schedule.apply(self.optimizer, self.updates + 1)
        self.optimizer.zero_grad()
        total.backward()
        grad_norm = clip_gradients(self.agent.parameters(), self.optim.grad_clip)
        self.optimizer.step()
        self.frames += batch["action"].numel()
        self.updates += 1
        return {
            "losses/total": total.item(), "losses/policy": pg_loss.item(), "losses/baseline": baseline_loss.item(),
            "losses/entropy": entropy_loss.item(), "losses/aux": aux_loss.item(),
            "charts/grad_norm": grad_norm, "charts/learning_rate": lr,
            "charts/policy_lag": self.updates - 1 - batch["version"],
        }


def clone_for_acting(agent: nn.Module) -> nn.Module:
    """A CPU copy of the agent for an actor (no gradients)."""
    clone = copy.deepcopy(agent).to("cpu").eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone
