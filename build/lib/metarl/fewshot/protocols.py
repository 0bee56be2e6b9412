"""Episodes as model inputs, in the two protocols of the SRWM paper.

Synchronous labels (the main protocol): the N·K support images in shuffled order, each fed with its own
label, then each query with the "no label" input; loss and accuracy on the queries.

Delayed labels: N·K images in shuffled order, each fed with the label of the previous step ("no label"
at the first), a prediction at every step; accuracy is reported per shot (how many images of the same
class came before). Episodes of two datasets can be concatenated, in random order per sequence, to test
sequential adaptation to a new task.

Labels are remapped per episode: label i is the i-th class the sampler drew, in random order.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .data import ImageSplit, sample_episodes, to_float


class _Batch:
    def to(self, device):
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def shuffle_rows(generator: Optional[torch.Generator], *tensors: torch.Tensor):
    """Apply one random permutation per row b along dim 1 to every tensor ([B, T, ...])."""
    B, T = tensors[0].shape[:2]
    order = torch.rand(B, T, generator=generator).argsort(-1)
    rows = torch.arange(B).unsqueeze(-1)
    return tuple(t[rows, order] for t in tensors)


@dataclass
class SyncEpisodes(_Batch):
    """support float [B, N·K, C, H, W] with labels [B, N·K]; queries [B, N·Q, C, H, W] with labels [B, N·Q]."""

    support: torch.Tensor
    support_labels: torch.Tensor
    queries: torch.Tensor
    query_labels: torch.Tensor


def sync_episodes(split: ImageSplit, batch_size: int, ways: int, shots: int, queries: int,
                  generator: Optional[torch.Generator] = None, channels: Optional[int] = None,
                  size: Optional[int] = None) -> SyncEpisodes:
    """N-way K-shot episodes with Q queries per class; images converted by :func:`to_float`."""
    images, _, _ = sample_episodes(split, batch_size, ways, shots + queries, generator)
    images = to_float(images, channels, size)  # [B, N, K + Q, C, H, W]
    labels = torch.arange(ways).view(1, ways, 1).expand(batch_size, ways, shots + queries)
    support = shuffle_rows(generator, images[:, :, :shots].flatten(1, 2), labels[:, :, :shots].flatten(1, 2))
    query = shuffle_rows(generator, images[:, :, shots:].flatten(1, 2), labels[:, :, shots:].flatten(1, 2))
    return SyncEpisodes(*support, *query)


@dataclass
class DelayedEpisodes(_Batch):
    """images float [B, T, C, H, W]; targets [B, T]; fed [B, T]: the previous target, "no label" (= N) at
    t = 0; shot [B, T]: earlier images of the same class in the same episode; part [B, T]: which dataset."""

    images: torch.Tensor
    targets: torch.Tensor
    fed: torch.Tensor
    shot: torch.Tensor
    part: torch.Tensor


def delayed_episodes(splits: Sequence[ImageSplit], batch_size: int, ways: int, shots: int,
                     generator: Optional[torch.Generator] = None, max_trim: int = 0,
                     channels: Optional[int] = None, size: Optional[int] = None) -> DelayedEpisodes:
    """One N-way K-shot episode per split (one or two), each shuffled and cut by a random 0..max_trim last
    steps (one draw per split and batch), concatenated in random order per sequence."""
    if not 0 <= max_trim < ways * shots:
        raise ValueError(f"env.max_trim={max_trim} must be in [0, ways·shots = {ways * shots})")
    parts = []
    for index, split in enumerate(splits):
        images, _, _ = sample_episodes(split, batch_size, ways, shots, generator)
        images = to_float(images, channels, size).flatten(1, 2)  # [B, N·K, C, H, W]
        labels = torch.arange(ways).repeat_interleave(shots).expand(batch_size, -1)
        images, labels = shuffle_rows(generator, images, labels)
        keep = ways * shots - int(torch.randint(0, max_trim + 1, (1,), generator=generator))
        images, labels = images[:, :keep], labels[:, :keep]
        shot = (F.one_hot(labels, ways).cumsum(1) - 1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        parts.append((images, labels, shot, torch.full_like(labels, index)))
    if len(parts) == 1:
        images, targets, shot, part = parts[0]
    else:
        first, second = parts
        swap = torch.rand(batch_size, generator=generator) < 0.5

        def cat(i):
            a, b = torch.cat([first[i], second[i]], 1), torch.cat([second[i], first[i]], 1)
            return torch.where(swap.view(-1, *[1] * (a.dim() - 1)), b, a)

        images, targets, shot, part = (cat(i) for i in range(4))
    fed = torch.cat([torch.full_like(targets[:, :1], ways), targets[:, :-1]], 1)
    return DelayedEpisodes(images, targets, fed, shot, part)
