"""metarl agents as an RLlib (new API stack) stateful ``TorchRLModule`` with the value-function API, so
RLlib's IMPALA/APPO can train SRWM, DeltaNet or any fixed-size-state core.

    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from metarl.rllib import MetarlRLModule

    config = IMPALAConfig().environment("CartPole-v1").rl_module(rl_module_spec=RLModuleSpec(
        module_class=MetarlRLModule,
        model_config={"core": "srwm", "d_model": 64, "num_layers": 1, "num_heads": 4, "d_ff": 128,
                      "core_options": {"d_head": 16}, "max_seq_len": 20}))

``impala_config(...)`` builds that config with settings that run on a small machine without waiting for
resources (one env runner with several envs and half a CPU, one remote learner with one CPU).

RLlib cuts episodes into sequences of ``max_seq_len`` steps, each with its own ``STATE_IN``, so there are
no resets inside a call; the previous action and reward inputs of :class:`metarl.agents.Agent` are fed
as zeros (RLlib passes observations only). Cores whose state grows (``transformer``) are not supported:
RLlib needs a fixed-size state.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from . import cores
from .agents import Agent


def _flatten(state) -> list:
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in _flatten(part)]


def _unflatten(template, leaves: list):
    if isinstance(template, torch.Tensor):
        return leaves.pop(0)
    return tuple(_unflatten(part, leaves) for part in template)


class MetarlRLModule(TorchRLModule, ValueFunctionAPI):
    """model_config: core (a core name; "mlp" is memoryless), d_model, num_layers, num_heads, ff, d_ff, core_options, ff_options."""

    def setup(self):
        mc = self.model_config
        core = mc.get("core", "srwm")
        if core == "transformer":
            raise ValueError("MetarlRLModule: the transformer core's state grows with the sequence; RLlib needs a "
                             "fixed-size state. Use srwm, delta, recdelta, lt or lstm.")
        core_cfg = {"name": core, "d_model": mc.get("d_model", 128), "num_layers": mc.get("num_layers", 2),
                    "num_heads": mc.get("num_heads", 8), "ff": mc.get("ff", "dense"), "d_ff": mc.get("d_ff"),
                    "ff_options": mc.get("ff_options") or {}, "options": mc.get("core_options") or {}}
        self.agent = Agent(self.observation_space.shape, int(self.action_space.n), cores.from_config(core_cfg))
        self._template = self.agent.initial_state(1)

    def get_initial_state(self) -> Dict[str, np.ndarray]:
        leaves = _flatten(self._template)
        return {f"s{i}": leaf[0].detach().cpu().numpy() for i, leaf in enumerate(leaves)}

    def _features(self, batch):
        """h [B, T, d_model] and STATE_OUT from OBS [B, T, ...] and STATE_IN."""
        obs = batch[Columns.OBS]
        B, T = obs.shape[:2]
        state_in = batch[Columns.STATE_IN]
        state = _unflatten(self._template, [state_in[f"s{i}"] for i in range(len(state_in))]) if state_in else ()
        zeros = torch.zeros(B, T, dtype=torch.long, device=obs.device)
        h, state = self.agent.features(obs, zeros, zeros.float(), zeros.bool(), state if state_in else None)
        state_out = {f"s{i}": leaf for i, leaf in enumerate(_flatten(state))} if state_in else {}
        return h, state_out

    def _forward(self, batch, **kwargs):
        h, state_out = self._features(batch)
        return {Columns.ACTION_DIST_INPUTS: self.agent.policy(h), Columns.STATE_OUT: state_out}

    def _forward_train(self, batch, **kwargs):
        h, state_out = self._features(batch)
        return {Columns.ACTION_DIST_INPUTS: self.agent.policy(h), Columns.STATE_OUT: state_out,
                Columns.EMBEDDINGS: h}

    def compute_values(self, batch: Dict[str, Any], embeddings: Optional[Any] = None):
        """Values [B, T] from the core features (reused from _forward_train when given)."""
        h = embeddings if embeddings is not None else self._features(batch)[0]
        return self.agent.baseline(h).squeeze(-1)


def impala_config(env, model_config: dict, env_config: Optional[dict] = None, envs_per_runner: int = 16,
                  unroll: int = 20, lr: float = 6e-4, runner_cpus: float = 0.5, learner_cpus: float = 1.0):
    """An ``IMPALAConfig`` (new API stack) that trains ``MetarlRLModule(model_config)`` on ``env`` (a gymnasium
    id or a name given to ``ray.tune.register_env``): one env runner with ``envs_per_runner`` envs and
    ``runner_cpus`` CPUs, fragments of ``unroll`` steps, batches of one fragment per env, one remote learner
    with ``learner_cpus`` CPUs. With the learner in the driver (``num_learners=0``) RLlib's IMPALA received
    no samples at all on a 2-CPU machine, hence the remote learner. Sized so that 2 CPUs are enough."""
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    return (IMPALAConfig()
            .environment(env, env_config=env_config or {})
            .env_runners(num_env_runners=1, num_envs_per_env_runner=envs_per_runner,
                         num_cpus_per_env_runner=runner_cpus, rollout_fragment_length=unroll)
            .learners(num_learners=1, num_cpus_per_learner=learner_cpus)
            .training(lr=lr, train_batch_size_per_learner=envs_per_runner * unroll, entropy_coeff=0.01,
                      vf_loss_coeff=0.5, grad_clip=40.0)
            .rl_module(rl_module_spec=RLModuleSpec(module_class=MetarlRLModule,
                                                   model_config={**model_config, "max_seq_len": unroll})))
