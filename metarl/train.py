"""Entry point: ``python -m metarl.train env=<task> agent=<core> [key=value ...]`` (Hydra)."""
from __future__ import annotations

from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from . import cores
from .config import register_configs

register_configs()


def compose_config(*overrides: str) -> DictConfig:
    """The config ``python -m metarl.train <overrides>`` would run, for scripts and tests."""
    register_configs()
    with initialize_config_module(config_module="metarl.configs", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def validate(cfg: DictConfig) -> None:
    """Value checks that a schema cannot express; each error names the key and the fix."""
    known = cores.names() + {"rl": ["ff"], "fewshot": ["protonet"]}.get(cfg.env.kind, [])
    if cfg.agent.name not in known:
        raise ValueError(f"agent.name={cfg.agent.name!r} is not a core; choose one of: {', '.join(known)}")
    if cfg.resume and not Path(cfg.resume).is_file():
        raise FileNotFoundError(f"resume={cfg.resume}: no such checkpoint file")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    kind = cfg.env.kind
    if kind == "supervised":
        from .supervised.trainer import train_supervised

        metrics = train_supervised(cfg, run_dir)
    elif kind == "rl":
        if cfg.runner.name == "local":
            from .rl.local import train_impala_local

            metrics = train_impala_local(cfg, run_dir)
        elif cfg.runner.name == "ray":
            from .rl.ray_runner import train_impala_ray

            metrics = train_impala_ray(cfg, run_dir)
        else:
            raise ValueError(f"runner.name={cfg.runner.name!r} is not a runner; known: local, ray")
    elif kind == "fewshot":
        from metarl.fewshot.trainer import train_fewshot

        metrics = train_fewshot(cfg, run_dir)
    else:
        raise ValueError(f"env.kind={kind!r} has no trainer; known kinds: supervised, rl, fewshot")
    summary = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    print(f"[metarl] {cfg.env.name}/{cfg.agent.name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                            for k, v in summary.items()))
    print(f"[metarl] logs and checkpoint in {run_dir}")
    return metrics


@hydra.main(config_path="pkg://metarl.configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
