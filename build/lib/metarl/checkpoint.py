"""Checkpoints: one file per save with model, optimiser, step counters and the resolved config.

Contents are plain tensors and containers, so ``torch.load(path, weights_only=True)`` reads them. A save
writes a temporary file and renames it, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf


def save_checkpoint(path, model, optimiser, step: int, cfg: DictConfig, **counters) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict() if optimiser is not None else None,
        "step": int(step),
        "counters": {k: int(v) if isinstance(v, (int, bool)) else v for k, v in counters.items()},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, model=None, optimiser=None) -> dict:
    """Load a checkpoint into ``model``/``optimiser`` (when given) and return its contents."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass resume=<path to a checkpoint.pt> "
                                "written by an earlier run (runs/<date>-<name>/checkpoint.pt)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if model is not None:
        model.load_state_dict(payload["model"])
    if optimiser is not None and payload.get("optimiser") is not None:
        optimiser.load_state_dict(payload["optimiser"])
    return payload
