"""Batching as the Transformer-XL / σ-MoE / fast-weight LM references do: the token sequence of a split is cut
into B contiguous streams (row b continues where row b - 1's text ends), read in segments of T tokens; the
core state of one segment is the initial state of the next in the same row.

``Streams(tokens [N], batch_size B, pad)``: row b holds tokens ``b·L .. b·L + L`` (L + 1 tokens: the inputs
and, shifted by one, the targets of L steps), so every token but the first is a target of exactly one row.
``pad=False`` (training): L = (N - 1) // B, the last (N - 1) mod B tokens are not used (the rows are a view
of ``tokens``, no copy). ``pad=True``
(evaluation): L = ceil((N - 1) / B), the missing targets of the last rows are padding, masked out, so the
whole split is scored. ``segment(i, T)``: inputs, targets [B, <=T] and mask (None when every target is real)
of segment i; ``num_segments(T)``: ceil(L / T) (the last may be shorter), ``full_segments(T)``: L // T.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from ...errors import ConfigError


@dataclass
class LMBatch:
    """One segment of the B streams: inputs, targets [B, T] long; mask [B, T] bool (None: all real);
    first: the first segment of an epoch (the carried state starts over from the initial state)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: Optional[torch.Tensor] = None
    first: bool = False

    def to(self, device) -> "LMBatch":
        return replace(self, inputs=self.inputs.to(device), targets=self.targets.to(device),
                       mask=None if self.mask is None else self.mask.to(device))


class Streams:
    """B contiguous streams of a token sequence (see the module docstring)."""

    def __init__(self, tokens: torch.Tensor, batch_size: int, pad: bool = False):
        n = tokens.numel()
        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size}: need at least one stream")
        if n < 2:
            raise ConfigError(f"a split of {n} tokens has nothing to predict")
        length = -(-(n - 1) // batch_size) if pad else (n - 1) // batch_size
        if length < 1:
            raise ConfigError(f"{n} tokens cannot fill {batch_size} streams of at least 2 tokens: lower the batch "
                              "size (env.batch_size / env.eval_batch_size) or use more data")
        self.batch_size, self.length = batch_size, length
        if not pad:  # a view: rows overlap by one token (a row's last target is the next row's first input)
            tokens = tokens.long().contiguous()
            self.rows = tokens.as_strided((batch_size, length + 1), (length, 1))
            self.valid = None
            self.num_targets = batch_size * length
            return
        rows = torch.zeros(batch_size, length + 1, dtype=torch.long)
        valid = torch.zeros(batch_size, length, dtype=torch.bool)
        for b in range(batch_size):
            piece = tokens[b * length: b * length + length + 1]
            rows[b, : piece.numel()] = piece
            valid[b, : max(piece.numel() - 1, 0)] = True
        self.rows, self.valid = rows, valid
        self.num_targets = int(valid.sum())  # = N - 1

    def num_segments(self, unroll: int) -> int:
        return -(-self.length // unroll)

    def full_segments(self, unroll: int) -> int:
        return self.length // unroll

    def segment(self, index: int, unroll: int) -> LMBatch:
        start = index * unroll
        stop = min(start + unroll, self.length)
        mask = None if self.valid is None else self.valid[:, start:stop]
        return LMBatch(self.rows[:, start:stop], self.rows[:, start + 1: stop + 1],
                       None if mask is None or bool(mask.all()) else mask.clone(), first=index == 0)
