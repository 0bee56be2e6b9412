"""Agents: shapes, resets of previous action/reward, and where gradients go."""
import pytest
import torch

from metarl import cores
from metarl.agents import Agent


def inputs(B=2, T=5, obs_shape=(6,), num_actions=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, T, *obs_shape, generator=g) if len(obs_shape) == 1 else \
        torch.randint(0, 256, (B, T, *obs_shape), generator=g, dtype=torch.uint8)
    return (obs, torch.randint(0, num_actions, (B, T), generator=g), torch.randn(B, T, generator=g),
            torch.zeros(B, T, dtype=torch.bool))


@pytest.mark.parametrize("core", ["mlp", "lstm", "srwm", "delta", "transformer"])
def test_shapes_and_state(core):
    agent = Agent((6,), 3, cores.make(core, d_model=32, num_layers=1, num_heads=2, d_ff=64,
                                      **({"d_head": 16} if core == "srwm" else {})))
    obs, pa, pr, reset = inputs()
    logits, values, state = agent(obs, pa, pr, reset, agent.initial_state(2))
    assert logits.shape == (2, 5, 3) and values.shape == (2, 5)
    # split call equals one call (the carried state)
    l1, _, s = agent(obs[:, :2], pa[:, :2], pr[:, :2], reset[:, :2], agent.initial_state(2))
    l2, _, _ = agent(obs[:, 2:], pa[:, 2:], pr[:, 2:], reset[:, 2:], s)
    torch.testing.assert_close(torch.cat([l1, l2], 1), logits, rtol=1e-5, atol=1e-5)


def test_impala_cnn_on_procgen_frames():
    agent = Agent((64, 64, 3), 15, cores.make("srwm", d_model=128, num_layers=2, num_heads=8, d_ff=512, d_head=16))
    obs, pa, pr, reset = inputs(B=2, T=3, obs_shape=(64, 64, 3), num_actions=15)
    logits, values, _ = agent(obs, pa, pr, reset)
    assert logits.shape == (2, 3, 15) and values.shape == (2, 3)


def test_previous_action_and_reward_are_zeroed_at_reset():
    agent = Agent((6,), 3, cores.make("mlp", d_model=16, num_layers=1, ff="none"))
    obs, pa, pr, _ = inputs(B=1, T=1)
    reset = torch.ones(1, 1, dtype=torch.bool)
    a, _, _ = agent(obs, pa, pr, reset)
    b, _, _ = agent(obs, (pa + 1) % 3, pr + 5, reset)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("truncate, expect_wq_grad", [(False, True), (True, False)])
def test_truncate_grad_each_step_leaves_only_wy_with_gradient(truncate, expect_wq_grad):
    torch.manual_seed(0)
    agent = Agent((6,), 3, cores.make("srwm", d_model=16, num_layers=1, num_heads=1, d_ff=32, d_head=16),
                  truncate_grad_each_step=truncate)
    obs, pa, pr, reset = inputs(T=6)
    logits, values, _ = agent(obs, pa, pr, reset)
    (logits.sum() + values.sum()).backward()
    mixer = agent.core.blocks[0].mixer
    assert mixer.Wy.grad.abs().sum() > 0
    for name in ("Wq", "Wk", "wb"):
        grad = getattr(mixer, name).grad
        has_grad = grad is not None and grad.abs().sum() > 0
        assert has_grad == expect_wq_grad, name


def test_bf16_encoder_is_close_to_float32_and_feeds_the_core_float32():
    torch.manual_seed(0)
    agent = Agent((64, 64, 3), 15, cores.make("lstm", d_model=32, num_layers=1, num_heads=1, d_ff=32))
    obs, pa, pr, reset = inputs(B=2, T=3, obs_shape=(64, 64, 3), num_actions=15)
    reference, _, _ = agent(obs, pa, pr, reset)
    seen = {}
    agent.encoder.stages[0].register_forward_hook(lambda m, i, o: seen.update(conv=o.dtype))  # hooks return None
    agent.core.register_forward_pre_hook(lambda m, args: seen.update(core=args[0].dtype))
    agent.amp = True
    logits, _, _ = agent(obs, pa, pr, reset)
    assert seen == {"conv": torch.bfloat16, "core": torch.float32}
    torch.testing.assert_close(logits, reference, rtol=0, atol=5e-2)
