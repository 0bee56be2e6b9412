"""Token-sequence tasks on the engine loop: embedding -> core -> classifier over a sequence-data generator
(``tasks.SequenceTask``: recall, formal languages, Chomsky-hierarchy tasks, CTL++).

Metrics: ``losses/total``, ``charts/tokens_per_s``; during training ``eval/<first set>/accuracy`` and
``sequence_accuracy``; at the end ``test/<set>/accuracy`` (positions right; the mean over task lengths for
sets with one length per batch) and ``test/<set>/sequence_accuracy`` (rows with every position right) for
every evaluation set of the task, on the last model (these tasks select no model).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from .. import cores
from ..engine import StepOutput, Task, register_task
from ..errors import ConfigError
from .tasks import Batch, SequenceTask


class SequenceClassifier(nn.Module):
    """tokens [B, T] -> logits [B, T, num_classes] through a core.

    lengths [B] (optional): real tokens per row. A causal core never sees the padding after them; for a
    non-causal core (a Transformer with ``causal=False``) the padding starts a new episode (a reset), so the
    real tokens are processed exactly as if alone.
    """

    def __init__(self, vocab_size: int, num_classes: int, core: nn.Module):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, core.d_model)
        if getattr(core.blocks[0].mixer, "scale_input", False):
            # the Ruoss et al. encoder scales embeddings by sqrt(d): its reference initialises them with a
            # truncated normal of std 0.02 (randomized_positional_encodings models/transformer.py), not N(0, 1)
            nn.init.trunc_normal_(self.embed.weight, std=0.02)
        self.core = core
        self.head = nn.Linear(core.d_model, num_classes)
        self.causal = all(getattr(block.mixer, "causal", True) for block in core.blocks)

    def forward(self, tokens: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        reset = None
        if lengths is not None and not self.causal:
            reset = torch.arange(tokens.shape[1], device=tokens.device)[None, :] == lengths[:, None]
        h, _ = self.core(self.embed(tokens), reset=reset)
        return self.head(h)


def task_loss(logits: torch.Tensor, batch: Batch, multilabel: bool) -> torch.Tensor:
    """Mean loss over the positions with a target: binary cross-entropy summed over the K outputs
    (multi-label) or cross-entropy (classes)."""
    if multilabel:
        per_position = nn.functional.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none").sum(-1)
        return (per_position * batch.mask).sum() / batch.mask.sum().clamp_min(1)
    return nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100)


def correct_positions(logits: torch.Tensor, batch: Batch, multilabel: bool) -> torch.Tensor:
    """[B, T] bool: the prediction at each position is right (multi-label: every output on the right side of 0)."""
    if multilabel:
        return ((logits > 0) == (batch.targets > 0.5)).all(-1)
    return logits.argmax(-1) == batch.targets


@torch.no_grad()
def evaluate(model: nn.Module, batches: List[Batch], multilabel: bool, device, progress: bool = False,
             desc: str = "") -> Dict:
    """accuracy: fraction of the scored positions that are right, averaged over task lengths when every batch
    holds one length (Chomsky tasks: the paper's score), pooled otherwise; sequence_accuracy: rows with every
    scored position right; per_length: {length: accuracy} for batches of one task length."""
    was_training = model.training
    model.eval()
    right_total, scored_total, rows_right, rows, per_length = 0, 0, 0, 0, {}
    for batch in tqdm(batches, disable=not progress, desc=desc, leave=False):
        batch = batch.to(device)
        right = correct_positions(model(batch.tokens, batch.lengths), batch, multilabel)
        scored = batch.score_mask
        hits, count = (right & scored).sum().item(), scored.sum().item()
        right_total, scored_total = right_total + hits, scored_total + count
        has_score = scored.any(1)
        rows_right += ((right | ~scored).all(1) & has_score).sum().item()
        rows += has_score.sum().item()
        if batch.length:
            per_length[batch.length] = hits / max(count, 1)
    model.train(was_training)
    one_length = per_length and len(per_length) == len(batches)
    accuracy = sum(per_length.values()) / len(per_length) if one_length else right_total / max(scored_total, 1)
    return {"accuracy": accuracy, "sequence_accuracy": rows_right / max(rows, 1), "per_length": per_length}


class SequenceClassification(Task):
    """A ``SequenceTask`` as an engine task: ``cfg.env`` sizes the batches, ``cfg.agent`` the core."""

    throughput_unit = "tokens"

    def __init__(self, cfg: DictConfig, data: SequenceTask):
        causal = cfg.agent.options.get("causal", True)
        if data.requires_causal and causal is False:
            raise ConfigError(f"env {cfg.env.name!r} predicts the next symbol at every position, so the model must "
                              "not see later inputs; remove agent.options.causal=false")
        self.cfg, self.data = cfg, data
        self._sets = None
        first = next(iter(self.sets))
        self.eval_sets, self.test_sets = [first], list(self.sets)

    @property
    def sets(self) -> Dict[str, List[Batch]]:
        """The evaluation sets, drawn once from seed + 10000 (the same at every evaluation)."""
        if self._sets is None:
            self._sets = self.data.eval_sets(torch.Generator().manual_seed(self.cfg.seed + 10_000))
        return self._sets

    def build_model(self) -> nn.Module:
        return SequenceClassifier(self.data.vocab_size, self.data.num_classes, cores.from_config(self.cfg.agent))

    def train_batch(self, step: int, generator: torch.Generator) -> Batch:
        return self.data.sample(self.cfg.env.batch_size, generator)

    def loss(self, model: nn.Module, batch: Batch, state) -> StepOutput:
        logits = model(batch.tokens, batch.lengths)
        loss = task_loss(logits, batch, self.data.multilabel) + model.core.aux_loss()
        return StepOutput(loss, count=batch.tokens.numel())

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict:
        return evaluate(model, self.sets[name], self.data.multilabel, self.cfg.device, progress, desc=f"eval {name}")


def register_sequence_task(family: str, config_class, make_data: Callable[[DictConfig], SequenceTask]) -> None:
    """Register ``env.family = family``: ``make_data(cfg.env)`` gives the sequence data, this module the rest."""
    register_task(family, config_class)(lambda cfg: SequenceClassification(cfg, make_data(cfg.env)))
