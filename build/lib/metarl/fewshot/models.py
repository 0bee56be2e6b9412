"""Few-shot models: a vision backbone, then either a sequence core (``SequenceLearner``) or prototypes
(``ProtoNet``, the baseline).

SequenceLearner (SRWM paper, Irie et al. 2022)::

    images [B, T, C, H, W] -> backbone -> features [B, T, F]
    [features, one-hot(fed label)] -> input projection -> core (metarl.cores) -> classifier -> logits [B, T, N]

The fed label is one of N classes or ``N`` itself, the "no label" input: the queries of the synchronous
protocol and the first step of the delayed one get it.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metarl.cores import map_state


class Conv4(nn.Module):
    """Four blocks of [3x3 conv, batch norm, 2x2 max-pool, dropout, ReLU] (Vinyals et al. 2016), flattened.

    [N, C, H, W] -> [N, channels[-1] · (H // 16) · (W // 16)] (28x28: 1x1, 84x84: 5x5, 32x32: 2x2 maps).
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (64, 64, 64, 64), dropout: float = 0.0):
        super().__init__()
        blocks = []
        for width in channels:
            blocks += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.MaxPool2d(2),
                       nn.Dropout(dropout), nn.ReLU(inplace=True)]
            in_channels = width
        self.net = nn.Sequential(*blocks, nn.Flatten())
        self.channels = list(channels)

    def out_dim(self, height: int, width: int) -> int:
        for _ in self.channels:
            height, width = height // 2, width // 2
        if height == 0 or width == 0:
            raise ValueError(f"images too small for {len(self.channels)} pooling blocks")
        return self.channels[-1] * height * width

    def forward(self, x):
        return self.net(x)


class ResBlock(nn.Module):
    """ResNet-12 block: 3 x [3x3 conv, batch norm, leaky ReLU] with a 1x1-conv shortcut, then 2x2 max-pool."""

    def __init__(self, in_channels: int, width: int, dropout: float):
        super().__init__()
        layers = []
        for i in range(3):
            layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width)]
            if i < 2:
                layers.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2), nn.Dropout(dropout))

    def forward(self, x):
        return self.out(self.body(x) + self.shortcut(x))


class Res12(nn.Module):
    """ResNet-12 (Lee et al. 2019; widths 64-96-128-256 or 64-128-256-512), global average pool.

    [N, C, H, W] -> [N, channels[-1]].
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (64, 96, 128, 256), dropout: float = 0.0):
        super().__init__()
        blocks = []
        for width in channels:
            blocks.append(ResBlock(in_channels, width, dropout))
            in_channels = width
        self.net = nn.Sequential(*blocks)
        self.channels = list(channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def out_dim(self, height: int, width: int) -> int:
        return self.channels[-1]

    def forward(self, x):
        return self.net(x).mean(dim=(-2, -1))


BACKBONES = {"conv4": Conv4, "res12": Res12}


def make_backbone(name: str, in_channels: int, channels: Sequence[int], dropout: float = 0.0) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"env.backbone={name!r} is not a backbone; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name](in_channels, channels, dropout)


def embed_images(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """images [B, T, C, H, W] -> features [B, T, F] (one backbone pass over all B·T images)."""
    B, T = images.shape[:2]
    return backbone(images.flatten(0, 1)).view(B, T, -1)


class SequenceLearner(nn.Module):
    """Backbone -> input projection of [features, label one-hot] -> core -> classifier.

    The projection is written as two blocks, ``feature_proj(features) + label_embed(label)``: the same
    linear map of the concatenation, with the label block initialised N(0, 1) like a token embedding rather
    than with a linear layer's small uniform init. On glyphs this takes SRWM and DeltaNet off the initial
    chance-level plateau within a few hundred updates, where the small init left them at chance.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, core: nn.Module, ways: int):
        super().__init__()
        self.backbone, self.core, self.ways = backbone, core, ways
        self.feature_proj = nn.Linear(feature_dim, core.d_model)
        self.label_embed = nn.Embedding(ways + 1, core.d_model)  # one row per label, the last is "no label"
        self.head = nn.Linear(core.d_model, ways)
        self._aux = None  # the core's auxiliary losses (σ-MoE) of the last forward or episode_logits call

    def inputs(self, features: torch.Tensor, fed: torch.Tensor) -> torch.Tensor:
        """features [B, T, F], fed labels [B, T] in [0, ways] -> core inputs [B, T, d_model]."""
        return self.feature_proj(features) + self.label_embed(fed)

    def forward(self, images: torch.Tensor, fed: torch.Tensor, state=None):
        """images [B, T, C, H, W], fed [B, T] -> (logits [B, T, ways], state). The delayed-label protocol."""
        y, state = self.core(self.inputs(embed_images(self.backbone, images), fed), state)
        self._aux = self.core.aux_loss()
        return self.head(y), state

    def episode_logits(self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor):
        """The synchronous-label protocol: support [B, S, C, H, W] with labels [B, S], queries [B, Q, C, H, W]
        -> logits [B, Q, ways]. Each query is fed with the "no label" input after the whole support set and
        is classified from the state the support left, on its own (queries do not see each other)."""
        B, S, Q = support.shape[0], support.shape[1], queries.shape[1]
        features = embed_images(self.backbone, torch.cat([support, queries], 1))
        _, state = self.core(self.inputs(features[:, :S], support_labels))
        support_aux = self.core.aux_loss()
        state = map_state(lambda s: s.repeat_interleave(Q, dim=0), state)  # one copy per query
        no_label = torch.full((B * Q, 1), self.ways, dtype=torch.long, device=support.device)
        y, _ = self.core(self.inputs(features[:, S:].reshape(B * Q, 1, -1), no_label), state)
        self._aux = support_aux + self.core.aux_loss()
        return self.head(y).view(B, Q, self.ways)

    def aux_loss(self) -> torch.Tensor:
        """Auxiliary losses of the core calls of the last forward or episode_logits call (0 if none)."""
        return self._aux if self._aux is not None else self.core.aux_loss()


class ProtoNet(nn.Module):
    """Prototypical Networks (Snell et al. 2017): logits = -squared distance to the class means of the support."""

    def __init__(self, backbone: nn.Module, ways: int):
        super().__init__()
        self.backbone, self.ways = backbone, ways

    def episode_logits(self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor):
        """support [B, S, C, H, W], labels [B, S], queries [B, Q, C, H, W] -> logits [B, Q, ways]."""
        S = support.shape[1]
        features = embed_images(self.backbone, torch.cat([support, queries], 1))
        one_hot = F.one_hot(support_labels, self.ways).to(features.dtype)  # [B, S, ways]
        prototypes = one_hot.transpose(1, 2) @ features[:, :S] / one_hot.sum(1).clamp_min(1).unsqueeze(-1)
        return -(features[:, S:].unsqueeze(2) - prototypes.unsqueeze(1)).pow(2).sum(-1)

    def aux_loss(self) -> torch.Tensor:
        return torch.zeros((), device=next(self.parameters()).device)
