"""A small supervised trainer for token-sequence tasks: embedding -> core -> classifier.

Tasks follow the protocol of ``tasks.py``. Metrics: ``losses/train``, ``charts/sps``, ``eval/accuracy`` (the
in-distribution set, every ``eval_every`` updates) and, at the end, ``eval/<set>/accuracy`` (positions right;
the mean over task lengths for sets with one length per batch) and ``eval/<set>/sequence_accuracy`` (rows with every
position right) for every evaluation set of the task.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .. import cores
from ..checkpoint import load_checkpoint, save_checkpoint
from .tasks import Batch, RecallTask


class SequenceClassifier(nn.Module):
    """tokens [B, T] -> logits [B, T, num_classes] through a core.

    lengths [B] (optional): real tokens per row. A causal core never sees the padding after them; for a
    non-causal core (a Transformer with ``causal=False``) the padding starts a new episode (a reset), so the
    real tokens are processed exactly as if alone.
    """

    def __init__(self, vocab_size: int, num_classes: int, core: nn.Module):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, core.d_model)
        self.core = core
        self.head = nn.Linear(core.d_model, num_classes)
        self.causal = all(getattr(block.mixer, "causal", True) for block in core.blocks)

    def forward(self, tokens: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        reset = None
        if lengths is not None and not self.causal:
            reset = torch.arange(tokens.shape[1], device=tokens.device)[None, :] == lengths[:, None]
        h, _ = self.core(self.embed(tokens), reset=reset)
        return self.head(h)


def make_core(agent: DictConfig) -> nn.Module:
    """Build the core that an ``agent`` config describes."""
    return cores.make(agent.name, d_model=agent.d_model, num_layers=agent.num_layers, num_heads=agent.num_heads,
                      ff=agent.ff, d_ff=agent.d_ff, dropout=agent.dropout,
                      ff_options=OmegaConf.to_container(agent.ff_options),
                      **OmegaConf.to_container(agent.options))


def make_task(env: DictConfig):
    """The task an ``env`` config describes (``env.family``: formal | chomsky | ctlpp; or ``env.name=recall``)."""
    family = env.get("family", env.name)
    if family == "recall":
        return RecallTask(env.num_cues, env.num_distractors, env.length, env.batch_size, env.eval_batches)
    if family == "formal":
        from .formal import from_config
    elif family == "chomsky":
        from .chomsky import from_config
    elif family == "ctlpp":
        from .ctlpp import from_config
    else:
        raise ValueError(f"unknown supervised task family {family!r}; known: recall, formal, chomsky, ctlpp")
    return from_config(env)


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


def train_supervised(cfg: DictConfig, run_dir: Path) -> dict:
    """Train on a generated task; log to tensorboard in ``run_dir``; return the final metrics."""
    env = cfg.env
    torch.manual_seed(cfg.seed)
    task = make_task(env)
    causal = cfg.agent.options.get("causal", True)
    if task.requires_causal and causal is False:
        raise ValueError(f"env {env.name!r} predicts the next symbol at every position, so the model must not see "
                         "later inputs; remove agent.options.causal=false")
    model = SequenceClassifier(task.vocab_size, task.num_classes, make_core(cfg.agent)).to(cfg.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=env.lr)
    grad_clip = env.get("grad_clip", 0.0)
    step = 0
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.resume:
        state = load_checkpoint(cfg.resume, model, optimiser)
        step = state["step"]
        generator.manual_seed(cfg.seed + step)
    writer = SummaryWriter(str(run_dir))
    eval_sets = task.eval_sets(torch.Generator().manual_seed(cfg.seed + 10_000))
    first = next(iter(eval_sets))
    metrics = {}
    last_checkpoint = time.time()
    bar = tqdm(total=env.steps, initial=step, disable=not cfg.progress, desc=f"{env.name}/{cfg.agent.name}")
    start, tokens_seen = time.time(), 0
    while step < env.steps:
        batch = task.sample(env.batch_size, generator).to(cfg.device)
        logits = model(batch.tokens, batch.lengths)
        loss = task_loss(logits, batch, task.multilabel) + model.core.aux_loss()
        if not torch.isfinite(loss):
            save_checkpoint(run_dir / "checkpoint_nonfinite.pt", model, optimiser, step, cfg)
            raise FloatingPointError(f"non-finite loss at step {step}; state saved to {run_dir}/checkpoint_nonfinite.pt. "
                                     "Lower env.lr or check the inputs.")
        optimiser.zero_grad()
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimiser.step()
        step += 1
        tokens_seen += batch.tokens.numel()
        writer.add_scalar("losses/train", loss.item(), step)
        if step % env.eval_every == 0 or step == env.steps:
            result = evaluate(model, eval_sets[first], task.multilabel, cfg.device)
            metrics = {"eval/accuracy": result["accuracy"], "losses/train": loss.item(), "step": step}
            writer.add_scalar("eval/accuracy", result["accuracy"], step)
            writer.add_scalar(f"eval/{first}/sequence_accuracy", result["sequence_accuracy"], step)
            writer.add_scalar("charts/sps", tokens_seen / (time.time() - start), step)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{metrics.get('eval/accuracy', float('nan')):.2f}")
        bar.update(1)
        if time.time() - last_checkpoint > 60 * cfg.checkpoint_minutes:
            save_checkpoint(run_dir / "checkpoint.pt", model, optimiser, step, cfg)
            last_checkpoint = time.time()
    bar.close()
    save_checkpoint(run_dir / "checkpoint.pt", model, optimiser, step, cfg)
    metrics["per_length"] = {}
    for name, batches in eval_sets.items():  # the final evaluation: every set, including the OOD ones
        result = evaluate(model, batches, task.multilabel, cfg.device, cfg.progress, desc=f"eval {name}")
        for key in ("accuracy", "sequence_accuracy"):
            metrics[f"eval/{name}/{key}"] = result[key]
            writer.add_scalar(f"eval/{name}/{key}", result[key], step)
        if result["per_length"]:
            metrics["per_length"][name] = result["per_length"]
    writer.close()
    return metrics
