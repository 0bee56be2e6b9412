"""The RL trainer (``env.kind = "rl"``): IMPALA with the runner ``runner.name`` (a registry, no branches)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..engine.registry import lookup, register_trainer


def _local(cfg, run_dir):
    from .local import train_impala_local

    return train_impala_local(cfg, run_dir)


def _ray(cfg, run_dir):
    from .ray_runner import train_impala_ray

    return train_impala_ray(cfg, run_dir)


#: runner.name -> train(cfg, run_dir); Ray is imported only when runner=ray
RUNNERS = {"local": _local, "ray": _ray}


@register_trainer("rl")
def train_rl(cfg: DictConfig, run_dir: Path) -> dict:
    return lookup(RUNNERS, "runner.name", cfg.runner.name)(cfg, run_dir)
