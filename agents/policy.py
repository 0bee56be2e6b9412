"""Recurrent actor-critic: encoder -> [features, previous action, previous reward] -> core -> heads."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from metarl.cores import detach_state

from .encoders import make_encoder


class Agent(nn.Module):
    """Policy and value from a sequence of observations.

    ``forward(obs [B, T, ...], prev_action [B, T] long, prev_reward [B, T], reset [B, T] bool, state)``
    returns ``(logits [B, T, A], values [B, T], state)``. ``reset[b, t]`` marks the first step of an
    episode: the core starts over and the previous action and reward are zeroed there.

    ``core`` is any sequence core (``metarl.cores.from_config``; ``mlp`` is the memoryless baseline).
    ``truncate_grad_each_step`` runs the core one step at a time and detaches its state between steps, as
    the reference implementation does (there only the SRWM's Wy gets a gradient); by default gradients
    flow through the whole unroll. ``amp`` runs the encoder under bf16 autocast (its features are cast
    back to float32 before the core: the fast weights stay in float32).
    """

    def __init__(self, obs_shape, num_actions: int, core: nn.Module, encoder_hidden: int = 64,
                 truncate_grad_each_step: bool = False, amp: bool = False):
        super().__init__()
        self.num_actions = num_actions
        self.amp = amp
        self.truncate_grad_each_step = truncate_grad_each_step
        self.encoder = make_encoder(tuple(obs_shape), hidden=encoder_hidden)
        self.input_proj = nn.Linear(self.encoder.out_dim + num_actions + 1, core.d_model)
        self.core = core
        self.policy = nn.Linear(core.d_model, num_actions)
        self.baseline = nn.Linear(core.d_model, 1)

    def initial_state(self, batch_size: int, device=None):
        return self.core.initial_state(batch_size, device)

    def forward(self, obs, prev_action, prev_reward, reset, state=None):
        h, state = self.features(obs, prev_action, prev_reward, reset, state)
        return self.policy(h), self.baseline(h).squeeze(-1), state

    def features(self, obs, prev_action, prev_reward, reset, state=None):
        """The core's output h [B, T, d_model] (input of the policy and value heads) and the new state."""
        B, T = obs.shape[:2]
        with torch.autocast(obs.device.type, dtype=torch.bfloat16, enabled=self.amp):
            features = self.encoder(obs.flatten(0, 1))
        features = features.float().view(B, T, -1)
        keep = (~reset).unsqueeze(-1).float()
        action_in = F.one_hot(prev_action.long(), self.num_actions).float() * keep
        reward_in = prev_reward.float().clamp(-1, 1).unsqueeze(-1) * keep
        x = self.input_proj(torch.cat([features, action_in, reward_in], dim=-1))
        if self.truncate_grad_each_step:
            outputs = []
            for t in range(T):
                y, state = self.core(x[:, t:t + 1], detach_state(state) if state is not None else None,
                                     reset[:, t:t + 1])
                outputs.append(y)
            h = torch.cat(outputs, dim=1)
        else:
            h, state = self.core(x, state, reset)
        return h, state

    def aux_loss(self) -> torch.Tensor:
        return self.core.aux_loss()
