"""Entry point: ``python -m metarl.train env=<task> agent=<core> [optim=<optimiser>] [key=value ...]`` (Hydra).

``env.kind`` picks the trainer from a registry (``metarl.engine.registry.TRAINERS``): ``rl`` (IMPALA, any
runner), the engine loop (``supervised``, ``fewshot``: the task from ``env.family``, ``runner=local`` or
``ray``) or a society of agents (``society``). Errors a user can
cause (``metarl.errors.UserError``: a bad value, a missing path, an unknown name, a corrupt checkpoint)
print one message and exit with status 2; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from . import cores
from .config import register_configs
from .engine import loop
from .engine.ray_train import train_on_ray
from .engine.registry import TASKS, TRAINERS, lookup, register_trainer
from .errors import ConfigError, Interrupted, MissingPathError, UserError

register_configs()


def compose_config(*overrides: str) -> DictConfig:
    """The config ``python -m metarl.train <overrides>`` would run, for scripts and tests."""
    register_configs()
    with initialize_config_module(config_module="metarl.configs", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def build_engine_task(cfg: DictConfig):
    """The engine task of ``env.family`` (the task registry), built from ``cfg``."""
    return lookup(TASKS, "env.family", cfg.env.family)(cfg)


#: runner.name -> how an engine task is trained: in this process, or data-parallel on Ray Train
ENGINE_RUNNERS = {
    "local": lambda cfg, run_dir: loop.train(build_engine_task(cfg), cfg, run_dir),
    "ray": lambda cfg, run_dir: train_on_ray(cfg, run_dir, build_engine_task),
}


@register_trainer("supervised")
@register_trainer("fewshot")
def train_engine_task(cfg: DictConfig, run_dir: Path) -> dict:
    """An engine task (``env.family`` in the task registry) on the shared loop (``runner=local``), or on
    ``runner.num_workers`` data-parallel workers (``runner=ray``: :mod:`metarl.engine.ray_train`)."""
    return lookup(ENGINE_RUNNERS, "runner.name", cfg.runner.name)(cfg, run_dir)


def validate(cfg: DictConfig) -> None:
    """Checks that apply to every run; each error names the key and the fix. Trainers check their own."""
    if cfg.env.kind != "fewshot" or cfg.agent.name != "protonet":  # protonet: the few-shot task's own model
        if cfg.agent.name not in cores.names():
            raise ConfigError(f"agent.name={cfg.agent.name!r} is not a core; choose one of: {', '.join(cores.names())}")
    if cfg.resume and not Path(cfg.resume).is_file():
        raise MissingPathError(f"resume={cfg.resume}: no such checkpoint file; pass the checkpoint.pt of an "
                               "earlier run (runs/<date>-<env>-<agent>/checkpoint.pt)")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    trainer = lookup(TRAINERS, "env.kind", cfg.env.kind)
    metrics = trainer(cfg, Path(run_dir))
    summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print(f"[metarl] {cfg.env.name}/{cfg.agent.name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                            for k, v in summary.items()))
    print(f"[metarl] logs and checkpoint in {run_dir}")
    return metrics


_composed = False  # set once Hydra has built the config: exit status 1 after that is a failure, not a bad config


@hydra.main(config_path="pkg://metarl.configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    global _composed
    _composed = True
    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except Interrupted as stop:
        print(f"[metarl] {stop}", file=sys.stderr)
        sys.exit(stop.exit_code)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"[metarl] error: {err}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    """``main`` with Hydra's own config errors (unknown key, wrong type, unknown group option) also exiting 2."""
    try:
        main()
    except SystemExit as exit_:
        sys.exit(2 if exit_.code == 1 and not _composed else exit_.code)


if __name__ == "__main__":
    cli()
