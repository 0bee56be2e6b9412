"""The actor's step-by-step policy and the learner's whole-unroll recomputation agree (state, resets)."""
import pytest
import torch

from metarl import cores
from metarl.agents import Agent
from metarl.envs import make_env
from metarl.rl.impala import Actor, clone_for_acting, collate


@pytest.mark.parametrize("core", ["srwm", "lstm", "delta", "transformer", "mlp"])
def test_learner_recomputes_the_behaviour_logits(core):
    torch.manual_seed(0)
    env = make_env("memory", 3, seed=0, num_cues=3, delay=2)  # 4-step episodes: resets inside the unroll
    agent = Agent(env.obs_shape, env.num_actions, cores.make(core, d_model=32, num_layers=2, num_heads=2, d_ff=64,
                                                             **({"d_head": 16} if core == "srwm" else {})))
    actor = Actor(env, clone_for_acting(agent), unroll_length=9, seed=0)
    actor.set_weights(agent.state_dict(), 0)
    for _ in range(2):  # the second unroll starts from a carried, non-initial state
        batch = collate([actor.unroll()])
        assert batch["reset"][:, 1:].any() and batch["done"].any()
        with torch.no_grad():
            logits, values, _ = agent(batch["obs"], batch["prev_action"], batch["prev_reward"], batch["reset"],
                                      batch["initial_state"])
        torch.testing.assert_close(logits[:, :-1], batch["behaviour_logits"], rtol=1e-4, atol=1e-5)
        # the rollout's bookkeeping: step t+1 starts an episode exactly when step t ended one
        assert torch.equal(batch["reset"][:, 1:], batch["done"])
        assert torch.equal(batch["prev_action"][:, 1:], batch["action"])
