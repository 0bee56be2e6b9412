"""Optimisers, learning-rate schedules and gradient clipping from the ``optim`` config group.

    optimiser = make_optimizer(model, cfg.optim)
    schedule = Schedule(cfg.optim, total_steps=cfg.optim.steps)
    schedule.apply(optimiser, step)                 # before update ``step`` (counted from 1)
    grad_norm = clip_gradients(model.parameters(), cfg.optim.grad_clip)

Schedules, as a factor of ``optim.lr`` at update s of S (w = ``warmup_steps``, r = ``final_lr_ratio``,
p = (s - w) / (S - w) the progress after warm-up):

    constant   1
    linear     1 - (1 - r) p
    cosine     r + (1 - r) (1 + cos(pi p)) / 2
    noam       min(s / w, sqrt(w / s))        (peak 1 at s = w, then 1/sqrt decay; Vaswani et al. 2017)

and every schedule but noam is multiplied by min(1, s / w) when w > 0 (linear warm-up from 0).
Weight decay applies to weight matrices only: biases, norms, embeddings and other 1-d parameters are
put in a group without decay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, List

import torch
from torch import nn

from ..errors import ConfigError, check_choice

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "linear", "cosine", "noam")
NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


@dataclass
class OptimConfig:
    """The ``optim`` group: optimiser, learning rate and schedule, clipping, number of updates."""

    name: str = "adam"  # optimiser: adam | adamw | rmsprop | sgd
    lr: float = 1e-3  # peak learning rate
    steps: int = 1000  # updates of supervised and few-shot runs (RL runs for impala.total_frames)
    schedule: str = "constant"  # constant | linear | cosine | noam (see metarl.engine.optim)
    warmup_steps: int = 0  # linear warm-up from 0 over this many updates (noam: the update of the peak)
    final_lr_ratio: float = 0.0  # linear, cosine: learning rate at the last update as a fraction of lr
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw: moment decay rates
    eps: float = 1e-8  # adam, adamw, rmsprop: denominator epsilon
    alpha: float = 0.99  # rmsprop: smoothing constant of the squared-gradient average
    momentum: float = 0.0  # sgd, rmsprop: momentum
    weight_decay: float = 0.0  # decay of weight matrices (adamw: decoupled; others: L2); never norms, biases, embeddings
    grad_clip: float = 0.0  # global gradient-norm clip (0: none)


def validate(cfg) -> None:
    """Checks a schema cannot express; each error names the field and the valid values."""
    check_choice("optim.name", cfg.name, OPTIMIZERS)
    check_choice("optim.schedule", cfg.schedule, SCHEDULES)
    if not cfg.lr > 0:
        raise ConfigError(f"optim.lr={cfg.lr} must be positive")
    if cfg.warmup_steps < 0 or cfg.steps < 0:
        raise ConfigError(f"optim.warmup_steps={cfg.warmup_steps} and optim.steps={cfg.steps} must be >= 0")
    if cfg.schedule == "noam" and cfg.warmup_steps <= 0:
        raise ConfigError("optim.schedule=noam needs optim.warmup_steps > 0 (the update where the peak is reached)")
    if len(cfg.betas) != 2:
        raise ConfigError(f"optim.betas={list(cfg.betas)}: give two values")


def parameter_groups(model: nn.Module, weight_decay: float) -> list:
    """[{params: decayed weights, weight_decay}, {params: the rest, weight_decay: 0}] (empty groups dropped)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            skip = isinstance(module, NO_DECAY_MODULES) or name.endswith("bias") or p.dim() < 2
            (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The optimiser ``cfg.name`` over the model's trainable parameters (see ``parameter_groups``)."""
    validate(cfg)
    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


class Schedule:
    """The learning rate of update ``step`` (from 1) of ``total_steps``: a pure function of the step, so
    resuming needs only the step counter."""

    def __init__(self, cfg, total_steps: int):
        validate(cfg)
        self.cfg, self.total_steps = cfg, max(int(total_steps), 1)

    def factor(self, step: int) -> float:
        c, s = self.cfg, max(int(step), 1)
        w = c.warmup_steps
        if c.schedule == "noam":
            return min(s / w, math.sqrt(w / s))
        p = min(max((s - w) / max(self.total_steps - w, 1), 0.0), 1.0)
        if c.schedule == "linear":
            f = 1.0 - (1.0 - c.final_lr_ratio) * p
        elif c.schedule == "cosine":
            f = c.final_lr_ratio + (1.0 - c.final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
        else:
            f = 1.0
        return f * min(1.0, s / w) if w > 0 else f

    def lr(self, step: int) -> float:
        return self.cfg.lr * self.factor(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's learning rate for update ``step``; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (0: no clipping); returns the norm before clipping."""
    return float(nn.utils.clip_grad_norm_(list(parameters), max_norm if max_norm > 0 else float("inf")))
