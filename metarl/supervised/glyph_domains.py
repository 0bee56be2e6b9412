"""``env=glyph_domains``: a generated domain-shift dataset (WILDS-like, no download) on the engine loop.

Glyph classes (the stroke characters of :mod:`metarl.fewshot.glyphs`) are drawn in domains, each a
rotation x stroke width x pixel noise. Training uses the domains of the first rotations, validation
(``val``, out of distribution) the next one and test the last one; ``id_val`` holds unseen images of
the training domains. Classes are spread unevenly over domains (per domain, class proportions from a
Dirichlet(``env.dirichlet``)), so a domain says something about the label, as in WILDS' iWildCam / FMoW.

Model: images [B, 1, H, W] -> a small CNN -> input projection -> core (``agent=...``, the image as a
sequence of length 1; ``agent=mlp`` is the natural choice) -> classifier. Metrics of every set:
``accuracy``, ``macro_f1`` (mean F1 over the classes present in the set), ``worst_domain_accuracy`` (the
lowest accuracy over the set's domains) and ``nll``. One ``best-<set>-<metric>.pt`` per ``env.selection``
entry; ``test/test/<metric>`` for each (metarl.engine.selection compares them across seeds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from .. import cores
from ..engine import StepOutput, Task, TaskConfig, register_task
from ..errors import ConfigError
from ..fewshot.glyphs import class_templates, distort, render

SETS = ("train", "id_val", "val", "test")
METRICS = ("accuracy", "macro_f1", "worst_domain_accuracy", "nll")
LOWER_IS_BETTER = ("nll",)


@dataclass
class GlyphDomainsConfig(TaskConfig):
    """Glyph classification under domain shift (rotation x stroke width x noise); see the module docstring."""

    name: str = "glyph_domains"  # run name
    family: str = "glyph_domains"  # registered task (metarl.engine.registry.TASKS)
    num_classes: int = 10  # glyph classes
    glyph_seed: int = 0  # seed of the dataset (templates, domains' class mixes, images): the same for every run
    image_size: int = 28  # pixels per side
    rotations: List[float] = field(default_factory=lambda: [0.0, 20.0, 35.0, 50.0])  # degrees, one per domain group
    train_rotations: int = 2  # the first train_rotations rotations are training domains; the next is val, the last test
    widths: List[float] = field(default_factory=lambda: [0.03, 0.065])  # stroke half-widths (image units)
    noises: List[float] = field(default_factory=lambda: [0.0, 0.35])  # std of Gaussian pixel noise (ink = 1)
    dirichlet: float = 0.5  # concentration of each domain's class proportions (small: uneven)
    train_per_domain: int = 400  # training images per training domain
    id_val_per_domain: int = 50  # id_val images per training domain
    eval_per_domain: int = 200  # val and test images per domain
    channels: List[int] = field(default_factory=lambda: [16, 32])  # CNN widths (3x3 conv, ReLU, 2x2 max-pool each)
    selection: List[str] = field(default_factory=lambda: ["val/accuracy", "val/macro_f1", "val/worst_domain_accuracy",
                                                          "val/nll", "id_val/accuracy"])  # <set>/<metric> to select on
    batch_size: int = 64  # images per update
    eval_every: int = 25  # updates between evaluations


def domains(env) -> List[Tuple[int, float, float, float]]:
    """(rotation index, angle, width, noise) of every domain, rotation-major."""
    return [(r, angle, width, noise) for r, angle in enumerate(env.rotations) for width in env.widths
            for noise in env.noises]


def domain_sets(env) -> Dict[str, List[int]]:
    """{set: domain ids}: training domains for train and id_val, the next rotation for val, the last for test."""
    ids = domains(env)
    rot = lambda r: [d for d, info in enumerate(ids) if info[0] == r]  # noqa: E731
    train = [d for r in range(env.train_rotations) for d in rot(r)]
    return {"train": train, "id_val": train, "val": rot(env.train_rotations), "test": rot(len(env.rotations) - 1)}


def _validate(env) -> None:
    if env.num_classes < 2:
        raise ConfigError(f"env.num_classes={env.num_classes}: need at least 2")
    if not 1 <= env.train_rotations <= len(env.rotations) - 2:
        raise ConfigError(f"env.train_rotations={env.train_rotations}: with {len(env.rotations)} env.rotations it must "
                          f"leave one rotation for val and one for test (1..{len(env.rotations) - 2})")
    if not env.widths or not env.noises:
        raise ConfigError("env.widths and env.noises need at least one value each")
    if env.dirichlet <= 0:
        raise ConfigError(f"env.dirichlet={env.dirichlet}: must be positive")
    for metric in env.selection:
        split, _, name = metric.partition("/")
        if split not in ("id_val", "val") or name not in METRICS:
            raise ConfigError(f"env.selection entry {metric!r}: use <id_val|val>/<{'|'.join(METRICS)}>")


def _key(env) -> tuple:
    return (env.num_classes, env.glyph_seed, env.image_size, tuple(env.rotations), env.train_rotations,
            tuple(env.widths), tuple(env.noises), env.dirichlet, env.train_per_domain, env.id_val_per_domain,
            env.eval_per_domain)


@lru_cache(maxsize=4)
def _generate(key: tuple) -> Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    (num_classes, seed, size, rotations, train_rotations, widths, noises, dirichlet, train_n, id_val_n,
     eval_n) = key
    env = DictConfig({"rotations": list(rotations), "train_rotations": train_rotations, "widths": list(widths),
                      "noises": list(noises)})
    templates, active = class_templates(num_classes, torch.Generator().manual_seed(seed))
    mixes = np.random.RandomState(seed).dirichlet([dirichlet] * num_classes, size=len(domains(env)))  # [D, K]
    counts = {"train": train_n, "id_val": id_val_n, "val": eval_n, "test": eval_n}
    data = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops (see fewshot.glyphs)
    try:
        for index, (split, ids) in enumerate(domain_sets(env).items()):
            generator = torch.Generator().manual_seed(seed * 1000 + 17 + index)
            images, labels, where = [], [], []
            for d in ids:
                _, angle, width, noise = domains(env)[d]
                p = torch.tensor(mixes[d], dtype=torch.float64)
                y = torch.multinomial(p, counts[split], replacement=True, generator=generator)
                points = distort(templates[y], generator)
                a = math.radians(angle)
                rotation = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
                points = (points - 0.5) @ rotation.T + 0.5
                ink = render(points, active[y], torch.full((len(y),), width), size).float() / 255
                ink = (ink + noise * torch.randn(ink.shape, generator=generator)).clamp(0, 1)
                images.append((ink * 255).round().to(torch.uint8).unsqueeze(1))
                labels.append(y)
                where.append(torch.full((len(y),), d, dtype=torch.long))
            data[split] = (torch.cat(images), torch.cat(labels), torch.cat(where))
    finally:
        torch.set_num_threads(threads)
    return data


def make_data(env) -> Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """{set: (images uint8 [N, 1, S, S], labels [N], domain ids [N])}, a pure function of the env's data fields."""
    _validate(env)
    return _generate(_key(env))


class DomainClassifier(nn.Module):
    """images [B, 1, S, S] -> CNN features -> projection -> core (one step) -> logits [B, num_classes]."""

    def __init__(self, image_size: int, channels: List[int], num_classes: int, core: nn.Module):
        super().__init__()
        layers, width, size = [], 1, image_size
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width, size = out, size // 2
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.project = nn.Linear(width * size * size, core.d_model)
        self.core = core
        self.head = nn.Linear(core.d_model, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.project(self.encoder(images.float() / 255))
        y, _ = self.core(h.unsqueeze(1))
        return self.head(y[:, 0])

    def aux_loss(self) -> torch.Tensor:
        return self.core.aux_loss()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, where: torch.Tensor) -> Dict:
    """accuracy, macro_f1 (classes present in ``labels``), worst_domain_accuracy, nll, and per_domain accuracy."""
    predicted = logits.argmax(-1)
    right = predicted == labels
    f1s = []
    for c in labels.unique().tolist():
        tp = (right & (labels == c)).sum().item()
        precision = tp / max((predicted == c).sum().item(), 1)
        recall = tp / (labels == c).sum().item()
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0)
    per_domain = {int(d): right[where == d].float().mean().item() for d in where.unique().tolist()}
    return {"accuracy": right.float().mean().item(), "macro_f1": sum(f1s) / len(f1s),
            "worst_domain_accuracy": min(per_domain.values()), "nll": F.cross_entropy(logits, labels).item(),
            "per_domain": per_domain}


class GlyphDomainsTask(Task):
    """The dataset above as an engine task (see the module docstring)."""

    throughput_unit = "examples"
    eval_sets = ["id_val", "val"]
    test_sets = ["test"]

    def __init__(self, cfg: DictConfig):
        self.cfg, self.env = cfg, cfg.env
        self.data = make_data(self.env)
        self.selection = {m: ("min" if m.split("/")[1] in LOWER_IS_BETTER else "max") for m in self.env.selection}

    def build_model(self) -> nn.Module:
        return DomainClassifier(self.env.image_size, list(self.env.channels), self.env.num_classes,
                                cores.from_config(self.cfg.agent))

    def train_batch(self, step: int, generator: torch.Generator):
        images, labels, _ = self.data["train"]
        rows = torch.randint(0, len(labels), (self.env.batch_size,), generator=generator)
        return images[rows], labels[rows]

    def loss(self, model: nn.Module, batch, state) -> StepOutput:
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        return StepOutput(loss + model.aux_loss(), count=len(labels),
                          metrics={"accuracy": (logits.argmax(-1) == labels).float().mean().item()})

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict:
        images, labels, where = self.data[name]
        logits = torch.cat([model(part.to(self.cfg.device)).cpu() for part in images.split(512)])
        return classification_metrics(logits, labels, where)


register_task("glyph_domains", GlyphDomainsConfig)(GlyphDomainsTask)
