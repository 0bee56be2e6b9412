"""Generated sequence tasks (no download) and the batch format every supervised task returns.

A task has ``vocab_size`` (input tokens), ``num_classes`` (output units), ``multilabel`` (targets are
multi-hot vectors scored with sigmoids, not class ids), ``requires_causal`` (the task is only meaningful for a
model that cannot see later inputs), ``sample(batch_size, generator) -> Batch`` (the training distribution)
and ``eval_sets(generator) -> {name: [Batch, ...]}``: the first set is the in-distribution one the trainer
evaluates periodically, the others (length generalisation, OOD splits) are evaluated once at the end.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch

from ..engine import TaskConfig
from ..errors import ConfigError

IGNORE = -100  # class target of positions without a target


@dataclass
class Batch:
    """One batch of a task; rows are right-padded to a common length T.

    tokens [B, T] long; targets [B, T] long (class ids, ``IGNORE`` where there is none) or [B, T, K] float
    0/1 (multi-label); mask [B, T] bool: positions with a target (the loss); score_mask [B, T] bool: positions
    that count for accuracy (default: mask); lengths [B] long: real tokens per row, the rest is padding
    (None: no padding); length: the task length of every row (for per-length results), 0 if mixed.
    """

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    score_mask: Optional[torch.Tensor] = None
    lengths: Optional[torch.Tensor] = None
    length: int = 0

    def __post_init__(self):
        if self.score_mask is None:
            self.score_mask = self.mask

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, tokens=move(self.tokens), targets=move(self.targets), mask=move(self.mask),
                       score_mask=move(self.score_mask), lengths=move(self.lengths))


def python_rng(generator: torch.Generator) -> random.Random:
    """A Python RNG seeded from a torch generator (string generators are plain Python, still reproducible)."""
    return random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))


def pad_batch(inputs: Sequence[Sequence[int]], targets: Sequence[Sequence], pad: int, length: int = 0,
              multilabel_size: int = 0, scored: Optional[Sequence[int]] = None) -> Batch:
    """Right-pad token lists into a Batch.

    inputs: B token lists; targets: B lists with one entry per token: a class id (``IGNORE`` = none) or, when
    ``multilabel_size`` K > 0, a K-vector of 0/1; pad: the padding token; scored: per row, how many leading
    target positions count for accuracy (None: all positions with a target).
    """
    B, T = len(inputs), max(len(x) for x in inputs)
    tokens = torch.full((B, T), pad, dtype=torch.long)
    lengths = torch.tensor([len(x) for x in inputs], dtype=torch.long)
    if multilabel_size:
        target = torch.zeros(B, T, multilabel_size)
    else:
        target = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, (x, y) in enumerate(zip(inputs, targets)):
        tokens[b, : len(x)] = torch.tensor(x, dtype=torch.long)
        target[b, : len(y)] = torch.tensor(y, dtype=target.dtype)
    positions = torch.arange(T)[None, :]
    mask = positions < lengths[:, None] if multilabel_size else target != IGNORE
    score_mask = None
    if scored is not None:
        first = mask.float().argmax(1, keepdim=True)  # first position with a target
        score_mask = mask & (positions < first + torch.tensor(scored)[:, None])
    return Batch(tokens, target, mask, score_mask, lengths if (lengths < T).any() else None, length)


class LazyBatches:
    """A list-like of batches made on demand, ``make(arg, generator)`` for each arg (the same batches on every
    pass): long evaluation sets (e.g. one batch per test length up to 500) without holding them in memory."""

    def __init__(self, make: Callable[[Any, torch.Generator], Batch], args: Sequence, seed: int):
        self.make, self.args, self.seed = make, list(args), seed

    def __len__(self) -> int:
        return len(self.args)

    def __iter__(self) -> Iterator[Batch]:
        for i, arg in enumerate(self.args):
            yield self.make(arg, torch.Generator().manual_seed(self.seed + i))


class SequenceTask:
    """Defaults of the task protocol (see the module docstring)."""

    multilabel = False
    requires_causal = False
    eval_batch_size = 32
    eval_batches = 8

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def eval_sets(self, generator: torch.Generator) -> Dict[str, List[Batch]]:
        return {"valid": [self.sample(self.eval_batch_size, generator) for _ in range(self.eval_batches)]}


class RecallTask(SequenceTask):
    """The cue at step 0 must be output at every later step, while the inputs there are distractors.

    Tokens 0..num_cues-1 are cues, the next num_distractors are distractors. Needs memory: without it
    the best accuracy is 1/num_cues.
    """

    def __init__(self, num_cues: int = 8, num_distractors: int = 8, length: int = 32, eval_batch_size: int = 32,
                 eval_batches: int = 8):
        if num_cues < 2 or num_distractors < 1 or length < 2:
            raise ConfigError(f"recall task needs num_cues >= 2, num_distractors >= 1, length >= 2; "
                             f"got {num_cues}, {num_distractors}, {length}")
        self.num_cues, self.num_distractors, self.length = num_cues, num_distractors, length
        self.vocab_size = num_cues + num_distractors
        self.num_classes = num_cues
        self.eval_batch_size, self.eval_batches = eval_batch_size, eval_batches

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        cues = torch.randint(0, self.num_cues, (batch_size,), generator=generator)
        tokens = self.num_cues + torch.randint(0, self.num_distractors, (batch_size, self.length), generator=generator)
        tokens[:, 0] = cues
        targets = cues.unsqueeze(1).repeat(1, self.length)
        targets[:, 0] = IGNORE
        return Batch(tokens, targets, targets != IGNORE, length=self.length)


@dataclass
class RecallEnvConfig(TaskConfig):
    """``env=recall``: recall the cue shown at the first step after ``length - 1`` distractors."""

    name: str = "recall"  # run name
    family: str = "recall"  # registered task (metarl.engine.registry.TASKS)
    num_cues: int = 8  # cue tokens (chance accuracy is 1/num_cues)
    num_distractors: int = 8  # distractor tokens
    length: int = 32  # sequence length
    batch_size: int = 32  # sequences per update
    eval_every: int = 100  # updates between evaluations
    eval_batches: int = 8  # batches per evaluation


def recall_from_config(env) -> RecallTask:
    return RecallTask(env.num_cues, env.num_distractors, env.length, env.batch_size, env.eval_batches)
