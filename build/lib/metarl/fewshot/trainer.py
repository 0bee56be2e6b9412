"""The episodic few-shot trainer: ``python -m metarl.train env=glyphs agent=srwm`` (``env.kind = "fewshot"``).

Top to bottom: load the train and validation splits, build backbone -> core -> classifier (or ProtoNet),
then per update draw a batch of episodes (a function of (seed, step), so a resumed run sees the same
stream), take one Adam step on the cross-entropy of the protocol, and every ``eval_every`` updates measure
the accuracy on a fixed set of validation episodes: the best one is kept as ``best.pt`` (model
selection). At the end the selected model is tested on ``test_episodes`` test episodes.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.supervised.trainer import make_core

from .models import BACKBONES, ProtoNet, SequenceLearner, make_backbone
from .protocols import DelayedEpisodes, delayed_episodes, sync_episodes
from .readers import DATASETS, load_split

PROTOCOLS = ("sync", "delayed")
LR_SCHEDULES = ("constant", "noam")
VAL_SEED, TEST_SEED = 10_000, 20_000  # the validation and test episodes are the same for every run


def validate_env(cfg: DictConfig) -> None:
    """Value checks of the few-shot settings; each error names the key and the fix."""
    env = cfg.env

    def one_of(key, value, known):
        return value in known, f"env.{key}={value!r}: choose one of {', '.join(known)}"

    checks = [
        one_of("dataset", env.dataset, DATASETS),
        one_of("protocol", env.protocol, PROTOCOLS),
        one_of("lr_schedule", env.lr_schedule, LR_SCHEDULES),
        one_of("backbone", env.backbone, list(BACKBONES)),
        (env.ways >= 2 and env.shots >= 1 and env.queries >= 1,
         f"env.ways={env.ways}, env.shots={env.shots}, env.queries={env.queries}: need 2+, 1+ and 1+"),
        (len(env.backbone_channels) == 4, f"env.backbone_channels={list(env.backbone_channels)}: give 4 widths"),
        (not (cfg.agent.name == "protonet" and env.protocol != "sync"),
         "agent=protonet classifies queries against a labelled support set: use env.protocol=sync"),
        (env.second_dataset is None or env.protocol == "delayed",
         "env.second_dataset (two datasets concatenated) needs env.protocol=delayed"),
        one_of("second_dataset", env.second_dataset, DATASETS) if env.second_dataset else (True, ""),
        (env.protocol != "delayed" or 0 <= env.max_trim < env.ways * env.shots,
         f"env.max_trim={env.max_trim} must be in [0, ways·shots = {env.ways * env.shots})"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def load_splits(env: DictConfig, split: str) -> list:
    """The split of env.dataset, and of env.second_dataset when set: a list of one or two ImageSplits."""
    options = dict(image_size=env.image_size, rotations=env.rotations, glyph_classes=env.glyph_classes,
                   glyph_samples=env.glyph_samples, glyph_seed=env.glyph_seed)
    splits = [load_split(env.dataset, split, env.root, **options)]
    if env.second_dataset:
        splits.append(load_split(env.second_dataset, split, env.second_root, **options))
    return splits


def build_model(cfg: DictConfig, image_shape) -> nn.Module:
    """Backbone -> core -> classifier for a core name, or ProtoNet for ``agent.name=protonet``.
    image_shape: (C, H, W) of the inputs."""
    env = cfg.env
    channels, height, width = image_shape
    backbone = make_backbone(env.backbone, channels, env.backbone_channels, env.vision_dropout)
    if cfg.agent.name == "protonet":
        return ProtoNet(backbone, env.ways)
    return SequenceLearner(backbone, backbone.out_dim(height, width), make_core(cfg.agent), env.ways)


def sample_batch(env: DictConfig, splits, batch_size: int, generator, shots=None):
    """A batch of episodes of env.protocol; every dataset is shaped like the first one."""
    channels, size = splits[0].image_shape[0], env.image_size
    shots = shots or env.shots
    if env.protocol == "sync":
        return sync_episodes(splits[0], batch_size, env.ways, shots, env.queries, generator, channels, size)
    return delayed_episodes(splits, batch_size, env.ways, shots, generator, env.max_trim, channels, size)


def episode_loss(model: nn.Module, batch):
    """-> (mean cross-entropy, correct [B, T] bool) on the queries (sync) or at every step (delayed)."""
    if isinstance(batch, DelayedEpisodes):
        logits, _ = model(batch.images, batch.fed)
        targets = batch.targets
    else:
        logits = model.episode_logits(batch.support, batch.support_labels, batch.queries)
        targets = batch.query_labels
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return loss, logits.argmax(-1) == targets


def mean_and_ci95(accuracies: torch.Tensor) -> tuple:
    """Per-episode accuracies [n] -> (mean, half-width of the 95% interval 1.96 · std / sqrt(n))."""
    n = len(accuracies)
    return accuracies.mean().item(), (1.96 * accuracies.std() / n ** 0.5).item() if n > 1 else 0.0


@torch.no_grad()
def evaluate(model: nn.Module, env: DictConfig, splits, episodes: int, seed: int, batch_size: int,
             device="cpu", *, shots=None, names=None) -> dict:
    """Accuracy over ``episodes`` episodes drawn with ``seed``: mean and 95% interval 1.96·std/sqrt(n) of the
    per-episode accuracies; for the delayed protocol also the accuracy per shot (``shot_s``: s images of the
    class came before) and, with two datasets, per dataset (``<name>/accuracy``, names from ``names``)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    per_episode, tallies = [], {}  # tallies: metric -> (hits, total)
    for start in range(0, episodes, batch_size):
        batch = sample_batch(env, splits, min(batch_size, episodes - start), generator, shots).to(device)
        _, correct = episode_loss(model, batch)
        per_episode.append(correct.float().mean(1).cpu())
        if isinstance(batch, DelayedEpisodes):
            groups = [(f"shot_{s}", batch.shot == s) for s in batch.shot.unique().tolist()]
            if len(splits) > 1:
                groups += [(f"{names[p] if names else p}/accuracy", batch.part == p) for p in range(len(splits))]
            for key, mask in groups:
                hits, total = tallies.get(key, (0, 0))
                tallies[key] = (hits + correct[mask].sum().item(), total + mask.sum().item())
    model.train(was_training)
    accuracy, ci95 = mean_and_ci95(torch.cat(per_episode))
    return {"accuracy": accuracy, "ci95": ci95, "episodes": episodes,
            **{key: hits / total for key, (hits, total) in tallies.items()}}


def learning_rate(env: DictConfig, step: int) -> float:
    """The learning rate of update ``step`` (from 1): constant, or noam with its peak env.lr at warmup_steps."""
    if env.lr_schedule == "noam":
        return env.lr * min(step / env.warmup_steps, (env.warmup_steps / step) ** 0.5)
    return env.lr


def dataset_names(env: DictConfig) -> list:
    names = [env.dataset] + ([env.second_dataset] if env.second_dataset else [])
    return names if len(set(names)) == len(names) else [f"{n}{i}" for i, n in enumerate(names)]


def log_eval(writer: SummaryWriter, prefix: str, result: dict, step: int) -> None:
    for key, value in result.items():
        if key != "episodes":
            writer.add_scalar(f"{prefix}/{key}", value, step)


def train_fewshot(cfg: DictConfig, run_dir: Path) -> dict:
    """Train on episodes of env.dataset; tensorboard, checkpoint.pt and best.pt in ``run_dir``."""
    env, run_dir = cfg.env, Path(run_dir)
    validate_env(cfg)
    torch.manual_seed(cfg.seed)
    train_splits, val_splits = load_splits(env, "train"), load_splits(env, "val")
    model = build_model(cfg, (train_splits[0].image_shape[0], env.image_size, env.image_size)).to(cfg.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=env.lr, betas=tuple(env.adam_betas), eps=env.adam_eps)
    step, best, best_step = 0, -1.0, 0
    if cfg.resume:
        payload = load_checkpoint(cfg.resume, model, optimiser)
        step = payload["step"]
        best, best_step = payload["counters"].get("best_accuracy", -1.0), payload["counters"].get("best_step", 0)
        previous_best = Path(cfg.resume).parent / "best.pt"
        if previous_best.is_file() and previous_best.resolve() != (run_dir / "best.pt").resolve():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(previous_best, run_dir / "best.pt")

    def save(name, with_optimiser=True):
        save_checkpoint(run_dir / name, model, optimiser if with_optimiser else None, step, cfg,
                        best_accuracy=best, best_step=best_step)

    names = dataset_names(env)
    writer = SummaryWriter(str(run_dir))
    generator = torch.Generator()
    metrics = {}
    hits, seen, train_time, episodes_done = 0, 0, 0.0, 0
    last_checkpoint = time.time()
    bar = tqdm(total=env.steps, initial=step, disable=not cfg.progress, desc=f"{env.name}/{cfg.agent.name}")
    while step < env.steps:
        start = time.time()
        generator.manual_seed(cfg.seed * 1_000_003 + step)  # the data stream is a function of (seed, step)
        batch = sample_batch(env, train_splits, env.batch_size, generator).to(cfg.device)
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(env, step + 1)
        loss, correct = episode_loss(model, batch)
        loss = loss + model.aux_loss()
        if not torch.isfinite(loss):
            save("checkpoint_nonfinite.pt")
            raise FloatingPointError(f"non-finite loss at step {step}; state saved to {run_dir}/checkpoint_nonfinite"
                                     ".pt. Lower env.lr, set env.grad_clip or use env.lr_schedule=noam.")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if env.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), env.grad_clip)
        optimiser.step()
        step += 1
        train_time += time.time() - start
        episodes_done += env.batch_size
        hits, seen = hits + correct.sum().item(), seen + correct.numel()
        metrics.update({"losses/train": loss.item(), "step": step, "charts/episodes_per_s": episodes_done / train_time})
        if step % 10 == 0 or step == env.steps:
            metrics["train/accuracy"], hits, seen = hits / seen, 0, 0
            for key in ("losses/train", "train/accuracy", "charts/episodes_per_s"):
                writer.add_scalar(key, metrics[key], step)
            writer.add_scalar("charts/lr", learning_rate(env, step), step)
        if step % env.eval_every == 0 or step == env.steps:
            result = evaluate(model, env, val_splits, env.eval_episodes, VAL_SEED, env.batch_size, cfg.device,
                              names=names)
            log_eval(writer, "eval", result, step)
            if result["accuracy"] > best:
                best, best_step = result["accuracy"], step
                save("best.pt", with_optimiser=False)
            writer.add_scalar("eval/best_accuracy", best, step)
            metrics.update({"eval/accuracy": result["accuracy"], "eval/best_accuracy": best, "best_step": best_step})
        bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{metrics.get('eval/accuracy', float('nan')):.3f}",
                        best=f"{max(best, 0):.3f}")
        bar.update(1)
        if time.time() - last_checkpoint > 60 * cfg.checkpoint_minutes:
            save("checkpoint.pt")
            last_checkpoint = time.time()
    bar.close()
    save("checkpoint.pt")
    if env.test_episodes > 0:
        if (run_dir / "best.pt").is_file():
            load_checkpoint(run_dir / "best.pt", model)
        result = evaluate(model, env, load_splits(env, "test"), env.test_episodes, TEST_SEED, env.batch_size,
                          cfg.device, names=names)
        log_eval(writer, "test", result, step)
        metrics.update({f"test/{k}": v for k, v in result.items() if k in ("accuracy", "ci95")})
    writer.close()
    return metrics
