"""From configs to envs and agents (shared by the runners and the evaluation script)."""
from __future__ import annotations

from omegaconf import DictConfig

from metarl.agents import make_agent
from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.envs import make_env


def env_options(env_cfg: DictConfig, split: str = "train") -> dict:
    """make_env arguments for an ``env`` config. split="test": procgen's unseen levels (the levels after
    the training range, or from a far seed offset when training used all levels)."""
    if env_cfg.type == "procgen":
        options = {"games": list(env_cfg.games), "distribution_mode": env_cfg.distribution_mode,
                   "num_levels": env_cfg.num_levels, "start_level": env_cfg.start_level}
        if split == "test":
            options["start_level"] = env_cfg.start_level + (env_cfg.num_levels or 1_000_000)
            options["num_levels"] = 0
        return options
    if env_cfg.type == "gym":
        return {"env_id": env_cfg.id}
    if env_cfg.type == "memory":
        return {"num_cues": env_cfg.num_cues, "delay": env_cfg.delay}
    raise ValueError(f"env.type={env_cfg.type!r} is not an RL env type; known: procgen, gym, memory")


def make_rl_env(env_cfg: DictConfig, num_envs: int, seed: int = 0, split: str = "train"):
    return make_env(env_cfg.type, num_envs, seed=seed, **env_options(env_cfg, split))


def build_agent(cfg: DictConfig, env):
    return make_agent(env.obs_shape, env.num_actions, cfg.agent)


def rollouts_per_update(cfg: DictConfig) -> int:
    """How many actor rollouts make one learner batch (batch_size rows, envs_per_actor rows each)."""
    batch_size, envs = cfg.impala.batch_size, cfg.runner.envs_per_actor
    if batch_size % envs:
        raise ValueError(f"impala.batch_size={batch_size} must be a multiple of runner.envs_per_actor={envs} "
                         "(rollouts are batched whole)")
    return batch_size // envs


def resume_learner(cfg: DictConfig, learner) -> None:
    """Load cfg.resume (model, optimiser, frame and update counters) into the learner, if given."""
    if cfg.resume:
        payload = load_checkpoint(cfg.resume, learner.agent, learner.optimizer)
        learner.frames, learner.updates = payload["counters"]["frames"], payload["step"]


def save_learner(run_dir, learner, cfg: DictConfig) -> None:
    """Write run_dir/checkpoint.pt (atomically) with the learner's model, optimiser and counters."""
    save_checkpoint(run_dir / "checkpoint.pt", learner.agent, learner.optimizer, learner.updates, cfg,
                    frames=learner.frames)
