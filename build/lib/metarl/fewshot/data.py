"""Images of one class split, and the N-way episode sampler over them.

An :class:`ImageSplit` holds every image of a split as one uint8 tensor grouped by class. Omniglot's
rotation augmentation is virtual: with ``rotations=4`` class ``c`` is base class ``c % K`` rotated by
``90° · (c // K)``, so the split has ``4·K`` classes without storing the rotated copies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F


@dataclass
class ImageSplit:
    """images: uint8 [N, C, H, W], grouped by class; starts: int64 [K + 1], base class k owns
    ``images[starts[k]:starts[k + 1]]``; names: K class names; rotations: 1, or 4 for the x4 class
    augmentation by rotations of 90°."""

    images: torch.Tensor
    starts: torch.Tensor
    names: List[str]
    rotations: int = 1

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.starts) != len(self.names) + 1 or int(self.starts[-1]) != len(self.images):
            raise ValueError("starts must have one entry per class plus the total number of images")
        if self.rotations not in (1, 4):
            raise ValueError(f"rotations must be 1 or 4, got {self.rotations}")
        if self.rotations == 4 and self.images.shape[-1] != self.images.shape[-2]:
            raise ValueError("rotations need square images")

    @classmethod
    def from_classes(cls, per_class: Sequence[torch.Tensor], names: Sequence[str], rotations: int = 1) -> "ImageSplit":
        """per_class: one uint8 [n_k, C, H, W] tensor per class (n_k may differ)."""
        counts = torch.tensor([len(x) for x in per_class], dtype=torch.long)
        starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return cls(torch.cat(list(per_class)), starts, list(names), rotations)

    @property
    def num_classes(self) -> int:
        return len(self.names) * self.rotations

    @property
    def counts(self) -> torch.Tensor:
        """[K] images per base class."""
        return self.starts[1:] - self.starts[:-1]

    @property
    def image_shape(self) -> tuple:
        """(C, H, W)."""
        return tuple(self.images.shape[1:])


def sample_episodes(split: ImageSplit, batch_size: int, ways: int, per_class: int,
                    generator: Optional[torch.Generator] = None):
    """Draw ``batch_size`` episodes of ``ways`` distinct classes and ``per_class`` distinct images of each.

    Returns (images uint8 [B, ways, per_class, C, H, W], classes [B, ways], index [B, ways, per_class]):
    ``classes`` are split class ids (in random order: label i of an episode is its i-th class),
    ``index`` the rows of ``split.images`` that were drawn (before rotation).
    """
    if ways > split.num_classes:
        raise ValueError(f"{ways}-way episodes need {ways} classes; the split has {split.num_classes}")
    smallest = int(split.counts.min())
    if per_class > smallest:
        raise ValueError(f"an episode needs {per_class} images per class (shots + queries); "
                         f"the smallest class of the split has {smallest}")
    K = len(split.names)
    classes = torch.rand(batch_size, split.num_classes, generator=generator).argsort(-1)[:, :ways]
    base, rotation = classes % K, classes // K
    counts = split.counts[base]  # [B, ways]
    keys = torch.rand(batch_size, ways, int(counts.max()), generator=generator)
    keys[torch.arange(keys.shape[-1]) >= counts.unsqueeze(-1)] = 2.0  # images a class lacks sort last
    index = keys.argsort(-1)[..., :per_class] + split.starts[base].unsqueeze(-1)
    images = split.images[index]
    for r in range(1, split.rotations):
        mask = rotation == r
        if mask.any():
            images[mask] = torch.rot90(images[mask], r, dims=(-2, -1))
    return images, classes, index


def to_float(images: torch.Tensor, channels: Optional[int] = None, size: Optional[int] = None) -> torch.Tensor:
    """uint8 [..., C, H, W] -> float [..., channels, size, size] in [0, 1]. Grey images are repeated to
    3 channels, colour ones averaged to 1; other sizes are resized (bilinear, antialiased)."""
    x = images.float().div_(255.0)
    lead, (C, H, W) = x.shape[:-3], x.shape[-3:]
    if channels is not None and channels != C:
        x = x.expand(*lead, channels, H, W).contiguous() if C == 1 else x.mean(-3, keepdim=True)
    if size is not None and (H, W) != (size, size):
        flat = x.reshape(-1, *x.shape[-3:])
        x = F.interpolate(flat, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False).reshape(*lead, -1, size, size)
    return x
