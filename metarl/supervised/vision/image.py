"""Image classification through the sequence cores (``env=image/<dataset>``), with the few-shot package's
Conv-4 as the baseline.

    images [B, C, H, W] -> non-overlapping P x P patches in reading order [B, T = (H/P)(W/P), C·P·P]
        (P = 1: pixels) -> linear -> + learned position embedding -> core (metarl.cores.from_config) [B, T, d]
        -> the last output (``readout=last``) or the mean over T (``mean``) -> linear -> logits [B, classes]
    ``model=conv4``: Conv-4 (metarl.fewshot.models) -> linear -> logits (the agent config is not used)

Metrics: ``train/accuracy``; ``eval/val/accuracy``, ``test/test/accuracy`` on the model with the best
validation accuracy. Datasets: those of :mod:`.data` (default: 10 generated glyph classes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ... import cores
from ...engine import StepOutput, Task, register_task
from ...errors import ConfigError, check_choice
from .data import evaluation_subset, to_float
from .vqvae import VisionDataConfig, dataset_from_env

READOUTS = ("last", "mean")
MODELS = ("core", "conv4")


@dataclass
class ImageConfig(VisionDataConfig):
    """``env=image/<dataset>``: images as sequences of patches into ``agent`` (or Conv-4), one class each."""

    name: str = "image"
    kind: str = "supervised"  # the engine loop
    family: str = "image"
    batch_size: int = 32
    eval_every: int = 100
    patch: int = 4  # patch side P (1: pixels); must divide the image height and width
    readout: str = "mean"  # last | mean: which core outputs the classifier reads
    model: str = "core"  # core (agent=...) | conv4 (the few-shot backbone, the baseline)
    conv_channels: List[int] = field(default_factory=lambda: [32, 32, 32, 32])  # model=conv4: channels per block


def patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/size)(W/size), C·size·size]: patches in reading order (row by row)."""
    B, C, H, W = images.shape
    if H % size or W % size:
        raise ConfigError(f"env.patch={size} must divide the image size {H}x{W}")
    x = images.reshape(B, C, H // size, size, W // size, size).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // size) * (W // size), C * size * size)


class PatchClassifier(nn.Module):
    """images -> patches -> linear + position -> core -> readout -> logits (module docstring)."""

    def __init__(self, image_shape, patch: int, classes: int, core: nn.Module, readout: str = "mean"):
        super().__init__()
        C, H, W = image_shape
        self.patch, self.readout, self.core = patch, readout, core
        tokens = (H // patch) * (W // patch)
        self.embed = nn.Linear(C * patch * patch, core.d_model)
        self.position = nn.Parameter(torch.randn(tokens, core.d_model) * 0.02)
        self.norm = nn.LayerNorm(core.d_model)
        self.head = nn.Linear(core.d_model, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, _ = self.core(self.embed(patches(images, self.patch)) + self.position)
        h = h[:, -1] if self.readout == "last" else h.mean(1)
        return self.head(self.norm(h))

    def aux_loss(self) -> torch.Tensor:
        return self.core.aux_loss()


class ConvClassifier(nn.Module):
    """Conv-4 (metarl.fewshot.models) -> linear: the baseline without a sequence core."""

    def __init__(self, image_shape, classes: int, channels):
        super().__init__()
        from metarl.fewshot.models import Conv4

        C, H, W = image_shape
        self.backbone = Conv4(C, list(channels))
        self.head = nn.Linear(self.backbone.out_dim(H, W), classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def aux_loss(self) -> torch.Tensor:
        return torch.zeros(())


class ImageClassification(Task):
    """Classify the images of a vision dataset (module docstring)."""

    eval_sets = ["val"]
    test_sets = ["test"]
    selection = {"val/accuracy": "max"}

    def __init__(self, cfg: DictConfig):
        env = cfg.env
        check_choice("env.readout", env.readout, READOUTS)
        check_choice("env.model", env.model, MODELS)
        if env.patch < 1:
            raise ConfigError(f"env.patch={env.patch} must be >= 1")
        self.cfg, self.env = cfg, env
        self.data = dataset_from_env(env)

    def build_model(self) -> nn.Module:
        classes = len(self.data.classes)
        if self.env.model == "conv4":
            return ConvClassifier(self.data.image_shape, classes, self.env.conv_channels)
        return PatchClassifier(self.data.image_shape, self.env.patch, classes, cores.from_config(self.cfg.agent),
                               self.env.readout)

    def train_batch(self, step: int, generator: torch.Generator):
        train = self.data.train
        index = torch.randint(0, len(train), (self.env.batch_size,), generator=generator)
        return to_float(train.images[index]), train.labels[index]

    def loss(self, model: nn.Module, batch, state) -> StepOutput:
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits, labels) + model.aux_loss()
        accuracy = (logits.argmax(-1) == labels).float().mean().item()
        return StepOutput(loss, count=len(labels), metrics={"accuracy": accuracy})

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict:
        split = self.data.split(name)
        index = evaluation_subset(len(split), self.env.eval_images)  # every class, not the first ones only
        images, labels = split.images[index], split.labels[index]
        right, total, loss = 0, 0, 0.0
        for x, y in zip(images.split(256), labels.split(256)):
            x, y = to_float(x).to(self.cfg.device), y.to(self.cfg.device)
            logits = model(x)
            right += (logits.argmax(-1) == y).sum().item()
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            total += len(y)
        return {"accuracy": right / max(total, 1), "loss": loss / max(total, 1)}


register_task("image", ImageConfig)(ImageClassification)
