"""The IMPALA learner weights the core's aux loss (σ-MoE regulariser) by B·T, the number of summed loss terms."""
import pytest
import torch
from torch import nn

from agents.policy import Agent
from metarl import cores
from metarl.config import ImpalaConfig
from metarl.engine.optim import OptimConfig
from metarl.rl.impala import Learner

B, T, A = 3, 5, 4  # rows, unroll length, actions


def batch(agent, obs_dim: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(B, T + 1, obs_dim, generator=g),
        "prev_action": torch.randint(A, (B, T + 1), generator=g),
        "prev_reward": torch.randn(B, T + 1, generator=g),
        "reset": torch.zeros(B, T + 1, dtype=torch.bool),
        "action": torch.randint(A, (B, T), generator=g),
        "reward": torch.randn(B, T, generator=g),
        "done": torch.zeros(B, T, dtype=torch.bool),
        "behaviour_logits": torch.randn(B, T, A, generator=g),
        "initial_state": agent.initial_state(B),
        "version": 0,
    }


class FakeAgent(nn.Module):
    """Constant policy and value; aux_loss = a² with a parameter that nothing else depends on."""

    def __init__(self, a: float):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(A))
        self.value = nn.Parameter(torch.zeros(()))
        self.a = nn.Parameter(torch.tensor(a))

    def initial_state(self, batch_size, device=None):
        return ()

    def forward(self, obs, prev_action, prev_reward, reset, state=None):
        n, steps = prev_action.shape
        return self.logits.expand(n, steps, A), self.value.expand(n, steps), state

    def aux_loss(self):
        return self.a ** 2


def learner(agent, lr=0.01):
    return Learner(agent, ImpalaConfig(total_frames=10_000, unroll_length=T, batch_size=B),
                   OptimConfig(name="sgd", lr=lr, grad_clip=0.0))


def test_aux_loss_is_scaled_by_the_number_of_summed_steps():
    agent = FakeAgent(0.5)
    metrics = learner(agent).learn(batch(agent))
    assert metrics["losses/aux"] == pytest.approx(B * T * 0.25)
    parts = metrics["losses/policy"] + metrics["losses/baseline"] + metrics["losses/entropy"] + metrics["losses/aux"]
    assert metrics["losses/total"] == pytest.approx(parts, rel=1e-6)
    # one SGD step on a alone: d(B·T·a²)/da = 2·a·B·T
    assert agent.a.item() == pytest.approx(0.5 - 0.01 * 2 * 0.5 * B * T, rel=1e-6)


def test_real_moe_agent_aux_term_is_bt_times_the_core_regulariser():
    torch.manual_seed(0)
    core = cores.make("mlp", d_model=16, num_layers=2, ff="moe",
                      ff_options={"num_experts": 4, "expert_size": 8, "top_k": 2, "entropy_reg": 1e-2})
    agent = Agent((2,), A, core)
    metrics = learner(agent, lr=1e-3).learn(batch(agent))
    per_call = agent.aux_loss().item()  # the regulariser of the learner's forward (kept by the σ-MoE layers)
    assert per_call < 0  # negative entropy of the expert usage
    assert metrics["losses/aux"] == pytest.approx(B * T * per_call, rel=1e-6)
