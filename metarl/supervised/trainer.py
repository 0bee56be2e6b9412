"""A small supervised trainer for token-sequence tasks: embedding -> core -> classifier."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .. import cores
from ..checkpoint import load_checkpoint, save_checkpoint
from .tasks import RecallTask


class SequenceClassifier(nn.Module):
    """tokens [B, T] -> logits [B, T, num_classes] through a core."""

    def __init__(self, vocab_size: int, num_classes: int, core: nn.Module):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, core.d_model)
        self.core = core
        self.head = nn.Linear(core.d_model, num_classes)

    def forward(self, tokens):
        h, _ = self.core(self.embed(tokens))
        return self.head(h)


def make_core(agent: DictConfig) -> nn.Module:
    """Build the core that an ``agent`` config describes."""
    return cores.make(agent.name, d_model=agent.d_model, num_layers=agent.num_layers, num_heads=agent.num_heads,
                      ff=agent.ff, d_ff=agent.d_ff, dropout=agent.dropout,
                      ff_options=OmegaConf.to_container(agent.ff_options),
                      **OmegaConf.to_container(agent.options))


def make_task(env: DictConfig):
    if env.name == "recall":
        return RecallTask(env.num_cues, env.num_distractors, env.length)
    raise ValueError(f"unknown supervised task {env.name!r}; known: recall")


def accuracy(logits, targets):
    mask = targets != -100
    return ((logits.argmax(-1) == targets) & mask).sum().item() / max(mask.sum().item(), 1)


def train_supervised(cfg: DictConfig, run_dir: Path) -> dict:
    """Train on a generated task; log to tensorboard in ``run_dir``; return the final metrics."""
    env = cfg.env
    torch.manual_seed(cfg.seed)
    task = make_task(env)
    model = SequenceClassifier(task.vocab_size, task.num_classes, make_core(cfg.agent)).to(cfg.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=env.lr)
    step = 0
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.resume:
        state = load_checkpoint(cfg.resume, model, optimiser)
        step = state["step"]
        generator.manual_seed(cfg.seed + step)
    writer = SummaryWriter(str(run_dir))
    eval_generator = torch.Generator().manual_seed(cfg.seed + 10_000)
    eval_batches = [task.sample(env.batch_size, eval_generator) for _ in range(env.eval_batches)]
    metrics = {}
    last_checkpoint = time.time()
    bar = tqdm(total=env.steps, initial=step, disable=not cfg.progress, desc=f"{env.name}/{cfg.agent.name}")
    start, tokens_seen = time.time(), 0
    while step < env.steps:
        tokens, targets = task.sample(env.batch_size, generator)
        tokens, targets = tokens.to(cfg.device), targets.to(cfg.device)
        logits = model(tokens)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        loss = loss + model.core.aux_loss()
        if not torch.isfinite(loss):
            save_checkpoint(run_dir / "checkpoint_nonfinite.pt", model, optimiser, step, cfg)
            raise FloatingPointError(f"non-finite loss at step {step}; state saved to {run_dir}/checkpoint_nonfinite.pt. "
                                     "Lower env.lr or check the inputs.")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        tokens_seen += tokens.numel()
        writer.add_scalar("losses/train", loss.item(), step)
        if step % env.eval_every == 0 or step == env.steps:
            model.eval()
            with torch.no_grad():
                accs = [accuracy(model(t.to(cfg.device)), y.to(cfg.device)) for t, y in eval_batches]
            model.train()
            metrics = {"eval/accuracy": sum(accs) / len(accs), "losses/train": loss.item(), "step": step}
            writer.add_scalar("eval/accuracy", metrics["eval/accuracy"], step)
            writer.add_scalar("charts/sps", tokens_seen / (time.time() - start), step)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{metrics.get('eval/accuracy', float('nan')):.2f}")
        bar.update(1)
        if time.time() - last_checkpoint > 60 * cfg.checkpoint_minutes:
            save_checkpoint(run_dir / "checkpoint.pt", model, optimiser, step, cfg)
            last_checkpoint = time.time()
    bar.close()
    save_checkpoint(run_dir / "checkpoint.pt", model, optimiser, step, cfg)
    writer.close()
    return metrics
