"""Checkpoints: one file per save, written atomically, readable with ``torch.load(..., weights_only=True)``.

A checkpoint holds::

    format      "metarl-checkpoint" and its version (a file without them is refused)
    model       the model's state_dict            optimizer   the optimiser's state_dict (or None)
    counters    {"step": updates done, ...}       best        best-so-far values of the selection metrics
    rng         torch (CPU and CUDA), numpy and Python RNG states
    config      the resolved run config           extra       trainer-specific tensors (e.g. carried core state)

The schedule is a function of ``counters["step"]`` (see :mod:`metarl.engine.optim`), so it needs no state
of its own. A save writes ``<path>.tmp`` and renames it over ``path``: a crash never leaves half a file.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from ..errors import CheckpointError, MissingPathError

FORMAT, VERSION = "metarl-checkpoint", 1


def rng_state() -> dict:
    """The global RNG states as plain tensors and numbers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, model, optimizer=None, *, counters: dict, config=None, best: Optional[dict] = None,
                    extra: Optional[dict] = None) -> Path:
    """Write a checkpoint atomically; returns its path. ``config``: an OmegaConf config or a plain dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if config is not None and OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=True)
    payload = {
        "format": FORMAT, "version": VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "counters": {k: (int(v) if isinstance(v, (bool, int, np.integer)) else float(v)) for k, v in counters.items()},
        "best": dict(best or {}),
        "rng": rng_state(),
        "config": config,
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> dict:
    """The contents of a checkpoint file; a missing, truncated or foreign file raises a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"checkpoint {path} does not exist; pass a checkpoint file written by an earlier run "
                               "(runs/<date>-<env>-<agent>/checkpoint.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds on a truncated or foreign file (RuntimeError, KeyError, ...)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a metarl checkpoint ({first_line[:200]}); it may be truncated or "
                              "written by another program: pass a checkpoint.pt written by metarl") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a metarl checkpoint (no '{FORMAT}' marker); pass a checkpoint.pt "
                              "written by metarl")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is a metarl checkpoint of version {payload.get('version')}, this metarl "
                              f"reads version {VERSION}")
    return payload


def load_checkpoint(path, model=None, optimizer=None, restore_rng: bool = False) -> dict:
    """Load a checkpoint into ``model`` / ``optimizer`` (when given; RNG states if ``restore_rng``) and
    return its contents. A model of another shape raises CheckpointError naming the mismatch."""
    payload = read_checkpoint(path)
    if model is not None:
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:300]
            raise CheckpointError(f"{path} holds a different model than this config builds ({detail}); resume "
                                  "with the env=/agent= settings of the run that wrote it") from None
    if optimizer is not None and payload.get("optimizer") is not None:
        optimizer.load_state_dict(payload["optimizer"])
    if restore_rng:
        set_rng_state(payload["rng"])
    return payload
