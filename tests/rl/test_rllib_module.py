"""metarl.rllib.MetarlRLModule: RLlib's stateful-module contract on top of our agent."""
import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from metarl.rllib import MetarlRLModule


def module(core="srwm"):
    torch.manual_seed(0)
    return MetarlRLModule(observation_space=gym.spaces.Box(-1, 1, (4,), np.float32), action_space=gym.spaces.Discrete(3),
                          model_config={"core": core, "d_model": 32, "num_layers": 2, "num_heads": 2, "d_ff": 64,
                                        "core_options": {"d_head": 16} if core == "srwm" else {}})


def batched(state, B):
    return {k: torch.from_numpy(v).unsqueeze(0).repeat(B, *([1] * v.ndim)) for k, v in state.items()}


@pytest.mark.parametrize("core", ["srwm", "lstm", "delta"])
def test_state_in_out_carries_the_sequence(core):
    m = module(core)
    B, T = 3, 6
    obs = torch.randn(B, T, 4)
    whole = m.forward_train({Columns.OBS: obs, Columns.STATE_IN: batched(m.get_initial_state(), B)})
    first = m.forward_train({Columns.OBS: obs[:, :2], Columns.STATE_IN: batched(m.get_initial_state(), B)})
    second = m.forward_train({Columns.OBS: obs[:, 2:], Columns.STATE_IN: first[Columns.STATE_OUT]})
    logits = torch.cat([first[Columns.ACTION_DIST_INPUTS], second[Columns.ACTION_DIST_INPUTS]], 1)
    torch.testing.assert_close(logits, whole[Columns.ACTION_DIST_INPUTS], rtol=1e-5, atol=1e-5)
    values = m.compute_values({Columns.OBS: obs, Columns.STATE_IN: batched(m.get_initial_state(), B)})
    torch.testing.assert_close(values, m.compute_values({}, embeddings=whole[Columns.EMBEDDINGS]))
    assert values.shape == (B, T)


def test_growing_state_core_is_refused():
    with pytest.raises(ValueError, match="fixed-size state"):
        module("transformer")


def test_rllib_impala_trains_the_module():
    # RLlib's own IMPALA (real Ray, 2 CPUs) samples with our module and updates it
    import math
    import time

    import ray

    from metarl.rllib import impala_config

    model = {"core": "srwm", "d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64, "core_options": {"d_head": 16}}
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        config = impala_config("CartPole-v1", model, envs_per_runner=4, unroll=10, lr=1e-3)
        algo = config.reporting(min_time_s_per_iteration=2).build_algo()
        try:
            deadline, learner = time.time() + 120, {}
            while learner.get("num_module_steps_trained_lifetime", 0) < 200 and time.time() < deadline:
                learner = algo.train().get("learners", {}).get("default_policy", {})
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    assert learner.get("num_module_steps_trained_lifetime", 0) >= 200, f"RLlib trained nothing: {learner}"
    assert math.isfinite(learner["total_loss"]) and learner["gradients_default_optimizer_global_norm"] > 0
