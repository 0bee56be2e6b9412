"""From configs to envs, agents and learners, and the learner's checkpoints (shared by the runners and
the evaluation script)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from metarl.agents import make_agent
from metarl.engine.checkpoint import load_checkpoint, save_checkpoint
from metarl.envs import make_env_from_config
from metarl.errors import ConfigError, check_choice


def make_rl_env(env_cfg: DictConfig, num_envs: int, seed: int = 0, split: str = "train"):
    """The batched env of an ``env`` config; split="test": procgen's unseen levels."""
    return make_env_from_config(env_cfg, num_envs, seed=seed, split=split)


def use_amp(cfg: DictConfig) -> bool:
    """impala.amp: "on", "off", or "auto" = on for CUDA and for CPUs with bf16 kernels (AVX512-BF16 / AMX)."""
    check_choice("impala.amp", cfg.impala.amp, ("auto", "on", "off"))
    if cfg.impala.amp != "auto":
        return cfg.impala.amp == "on"
    if str(cfg.device).startswith("cuda"):
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def build_agent(cfg: DictConfig, env):
    return make_agent(env.obs_shape, env.num_actions, cfg.agent, amp=use_amp(cfg))


def rollouts_per_update(cfg: DictConfig) -> int:
    """How many actor rollouts make one learner batch (batch_size rows, envs_per_actor rows each)."""
    batch_size, envs = cfg.impala.batch_size, cfg.runner.envs_per_actor
    if batch_size % envs:
        raise ConfigError(f"impala.batch_size={batch_size} must be a multiple of runner.envs_per_actor={envs} "
                          "(rollouts are batched whole)")
    return batch_size // envs


def resume_learner(cfg: DictConfig, learner) -> None:
    """Load cfg.resume (model, optimiser, frame and update counters, RNG states) into the learner, if given."""
    if cfg.resume:
        payload = load_checkpoint(cfg.resume, learner.agent, learner.optimizer, restore_rng=True)
        learner.frames, learner.updates = payload["counters"]["frames"], payload["counters"]["step"]


def save_learner(run_dir, learner, cfg: DictConfig, best: Optional[dict] = None) -> Path:
    """Write run_dir/checkpoint.pt (atomically) with the learner's model, optimiser, counters and the periodic
    evaluation's best-so-far values (``{metric: value, "<metric>@frames": frames}``)."""
    return save_checkpoint(Path(run_dir) / "checkpoint.pt", learner.agent, learner.optimizer,
                           counters={"step": learner.updates, "frames": learner.frames}, config=cfg, best=best)
