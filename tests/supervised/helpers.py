"""Shared helper: a short training run through the Hydra configs."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from metarl.train import compose_config, run


def config(env: str, *overrides: str):
    return compose_config(f"env={env}", *overrides)


def train(env: str, *overrides: str) -> dict:
    """Run ``python -m metarl.train env=<env> <overrides>`` in-process on one thread; return the metrics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            return run(config(env, *overrides, "progress=false"), Path(run_dir))
    finally:
        torch.set_num_threads(threads)
