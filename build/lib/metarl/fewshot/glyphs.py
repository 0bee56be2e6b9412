"""``glyphs``: a generated character dataset for few-shot learning that needs no download.

A class is a "character" of 2 to 4 strokes, each a quadratic Bézier curve with random control points.
A sample is its class's character after a random distortion: control points jittered, the whole glyph
rotated, scaled, sheared and shifted, the stroke width varied. Images are rendered antialiased, ink 255
on 0 (like Omniglot once inverted). Everything is a pure function of (num_classes, samples, seed, size):
the class templates come from ``seed``, each split's distortions from a seed derived from it. Classes are
split 64 / 16 / 20 % into train / val / test, the Mini-ImageNet proportions.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from .data import ImageSplit

SPLITS = {"train": (0.0, 0.64), "val": (0.64, 0.80), "test": (0.80, 1.0)}
MAX_STROKES = 4
SEGMENTS = 8  # straight pieces per rendered stroke


def class_templates(num_classes: int, generator: torch.Generator):
    """-> control points [K, MAX_STROKES, 3, 2] in [0.15, 0.85]², active [K, MAX_STROKES] (2 to 4 strokes).
    A stroke after the first starts on a control point of the one before, so glyphs are mostly connected."""
    points = 0.15 + 0.7 * torch.rand(num_classes, MAX_STROKES, 3, 2, generator=generator)
    pick = torch.randint(0, 3, (num_classes, MAX_STROKES), generator=generator)
    for s in range(1, MAX_STROKES):
        attach = points[torch.arange(num_classes), s - 1, pick[:, s]]
        points[:, s, 0] = torch.where(torch.rand(num_classes, 1, generator=generator) < 0.7, attach, points[:, s, 0])
    active = torch.ones(num_classes, MAX_STROKES, dtype=torch.bool)
    active[:, 2:] = torch.rand(num_classes, MAX_STROKES - 2, generator=generator) < 0.5
    return points, active


def distort(points: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """points [M, S, 3, 2] -> the same glyphs jittered and under a random affine map about the centre."""
    M = points.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # noqa: E731 (uniform in [-1, 1])
    points = points + 0.035 * torch.randn(points.shape, generator=generator)
    angle, scale, shear = 0.25 * u(M), 1.0 + 0.12 * u(M, 2), 0.15 * u(M)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [M, 2, 2]
    shearing = torch.eye(2).repeat(M, 1, 1)
    shearing[:, 0, 1] = shear
    A = rotation @ shearing * scale.unsqueeze(-1)  # rows scaled
    shift = 0.06 * u(M, 1, 1, 2)
    return (points - 0.5) @ A.transpose(-1, -2).unsqueeze(1) + 0.5 + shift


def render(points: torch.Tensor, active: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """points [M, S, 3, 2], active [M, S], width [M] (stroke half-width, in image units) -> uint8 [M, size, size].

    Ink at a pixel is 1 where its centre is within ``width`` of a stroke, fading linearly over one pixel.
    """
    t = torch.linspace(0, 1, SEGMENTS + 1).view(1, 1, -1, 1)
    p0, p1, p2 = points[:, :, 0:1], points[:, :, 1:2], points[:, :, 2:3]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # [M, S, SEGMENTS + 1, 2]
    a, b = curve[:, :, :-1].flatten(1, 2), curve[:, :, 1:].flatten(1, 2)  # segment ends [M, S·SEGMENTS, 2]
    on = active.repeat_interleave(SEGMENTS, dim=1)  # [M, S·SEGMENTS]
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    gx, gy = (g.reshape(1, -1) for g in torch.meshgrid(centres, centres, indexing="xy"))  # pixel centres [1, P]
    nearest = torch.full((len(points), size * size), math.inf)  # squared distance to the nearest segment [M, P]
    for j in range(a.shape[1]):
        ax, ay = a[:, j, 0:1], a[:, j, 1:2]
        dx, dy = b[:, j, 0:1] - ax, b[:, j, 1:2] - ay
        px, py = gx - ax, gy - ay
        along = ((px * dx + py * dy) / (dx * dx + dy * dy).clamp_min(1e-12)).clamp_(0, 1)
        d2 = (px - along * dx).square_() + (py - along * dy).square_()
        torch.minimum(nearest, d2.masked_fill_(~on[:, j:j + 1], math.inf), out=nearest)
    ink = ((width.view(-1, 1) - nearest.sqrt()) * size + 0.5).clamp(0, 1)  # [M, P]
    return (ink * 255).round().to(torch.uint8).view(-1, size, size)


@lru_cache(maxsize=8)
def glyph_split(split: str, num_classes: int = 600, samples: int = 20, seed: int = 0, size: int = 28) -> ImageSplit:
    """The ``split`` ("train" | "val" | "test") of the glyph dataset: images uint8 [N, 1, size, size]."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if num_classes < 10 or samples < 2:
        raise ValueError(f"glyphs need at least 10 classes and 2 samples per class, got {num_classes}, {samples}")
    templates, active = class_templates(num_classes, torch.Generator().manual_seed(seed))
    lo, hi = (round(f * num_classes) for f in SPLITS[split])
    generator = torch.Generator().manual_seed(seed * 1000 + 1 + list(SPLITS).index(split))
    classes = torch.arange(lo, hi).repeat_interleave(samples)  # sample-major within class
    chunks, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops: one thread is several times faster than two on a busy machine
    try:
        for part in classes.split(512):
            width = 0.045 * (1 + 0.2 * (torch.rand(len(part), generator=generator) * 2 - 1))
            chunks.append(render(distort(templates[part], generator), active[part], width, size))
    finally:
        torch.set_num_threads(threads)
    images = torch.cat(chunks).unsqueeze(1)
    starts = torch.arange(0, len(images) + 1, samples)
    return ImageSplit(images, starts, [f"glyph{c:04d}" for c in range(lo, hi)])
