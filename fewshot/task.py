"""The episodic few-shot task on the engine loop: ``python -m metarl.train env=glyphs agent=srwm``.

The loop (metarl.engine.loop) does the rest; this task loads the train / validation / test splits, builds
backbone -> core -> classifier (or ProtoNet), draws a batch of episodes per update (a function of (seed,
step), so a resumed run sees the same stream), scores the cross-entropy of the protocol, and measures the
accuracy on a fixed set of validation episodes every ``env.eval_every`` updates: the best one is kept as
``best-val-accuracy.pt`` (model selection), and tested on ``env.test_episodes`` test episodes at the end
(``test/test/accuracy`` and its 95% interval ``test/test/ci95``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from metarl import cores
from metarl.engine import StepOutput, Task, TaskConfig, register_task
from metarl.errors import ConfigError, check_choice

from .models import BACKBONES, ProtoNet, SequenceLearner, make_backbone
from .protocols import DelayedEpisodes, delayed_episodes, sync_episodes
from .readers import DATASETS, load_split

PROTOCOLS = ("sync", "delayed")
VAL_SEED, TEST_SEED = 10_000, 20_000  # the validation and test episodes are the same for every run


@dataclass
class FewShotEnvConfig(TaskConfig):
    """Episodic N-way K-shot classification as a sequence (metarl.fewshot); one schema for every dataset."""

    name: str = "glyphs"  # run name
    kind: str = "fewshot"  # which trainer runs it (the engine loop)
    family: str = "fewshot"  # registered task (metarl.engine.registry.TASKS)
    dataset: str = "glyphs"  # glyphs (generated, no download) | omniglot | miniimagenet | fc100
    root: Optional[str] = None  # dataset folder (not for glyphs); a wrong folder fails naming the layouts expected
    image_size: int = 28  # images are resized to image_size x image_size at load (paper: 28, 84, 32)
    rotations: bool = True  # omniglot: rotations by 90, 180, 270 degrees as new classes (x4, Vinyals et al.)
    glyph_classes: int = 600  # glyphs: generated classes, split 64/16/20 % into train/val/test
    glyph_samples: int = 20  # glyphs: images per class
    glyph_seed: int = 0  # glyphs: seed of the generator (the dataset is a function of the glyph_* fields)
    protocol: str = "sync"  # sync: support with labels, queries with a dummy label | delayed: previous label fed
    ways: int = 5  # N: classes per episode
    shots: int = 1  # K: images per class in the support set (delayed: in the sequence)
    queries: int = 1  # sync: query images per class, each classified from the support set alone
    second_dataset: Optional[str] = None  # delayed: a second dataset whose episodes are concatenated in random order
    second_root: Optional[str] = None  # delayed: folder of second_dataset
    max_trim: int = 0  # delayed: drop a random 0..max_trim last steps of each episode
    backbone: str = "conv4"  # conv4 | res12
    backbone_channels: List[int] = field(default_factory=lambda: [64, 64, 64, 64])  # widths of the 4 backbone blocks
    vision_dropout: float = 0.0  # dropout in the backbone
    batch_size: int = 32  # episodes per update (and per evaluation batch)
    eval_every: int = 100  # updates between validations; the best validation accuracy selects the model
    eval_episodes: int = 500  # validation episodes (the same ones at every validation)
    test_episodes: int = 1000  # test episodes for the selected model at the end (0: no test)


def validate_env(cfg: DictConfig) -> None:
    """Value checks of the few-shot settings; each error names the key and the fix."""
    env = cfg.env
    check_choice("env.dataset", env.dataset, DATASETS)
    check_choice("env.protocol", env.protocol, PROTOCOLS)
    check_choice("env.backbone", env.backbone, list(BACKBONES))
    if env.second_dataset:
        check_choice("env.second_dataset", env.second_dataset, DATASETS)
    checks = [
        (env.ways >= 2 and env.shots >= 1 and env.queries >= 1,
         f"env.ways={env.ways}, env.shots={env.shots}, env.queries={env.queries}: need 2+, 1+ and 1+"),
        (len(env.backbone_channels) == 4, f"env.backbone_channels={list(env.backbone_channels)}: give 4 widths"),
        (not (cfg.agent.name == "protonet" and env.protocol != "sync"),
         "agent=protonet classifies queries against a labelled support set: use env.protocol=sync"),
        (env.second_dataset is None or env.protocol == "delayed",
         "env.second_dataset (two datasets concatenated) needs env.protocol=delayed"),
        (env.protocol != "delayed" or 0 <= env.max_trim < env.ways * env.shots,
         f"env.max_trim={env.max_trim} must be in [0, ways·shots = {env.ways * env.shots})"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


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
    return SequenceLearner(backbone, backbone.out_dim(height, width), cores.from_config(cfg.agent), env.ways)


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


def dataset_names(env: DictConfig) -> list:
    names = [env.dataset] + ([env.second_dataset] if env.second_dataset else [])
    return names if len(set(names)) == len(names) else [f"{n}{i}" for i, n in enumerate(names)]


class FewShotTask(Task):
    """Few-shot episodes as an engine task (see the module docstring)."""

    throughput_unit = "episodes"
    eval_sets = ["val"]
    selection = {"val/accuracy": "max"}

    def __init__(self, cfg: DictConfig):
        validate_env(cfg)
        self.cfg, self.env = cfg, cfg.env
        self.splits = {"train": load_splits(self.env, "train"), "val": load_splits(self.env, "val")}
        self.test_sets = ["test"] if self.env.test_episodes > 0 else []
        self.names = dataset_names(self.env)

    def build_model(self) -> nn.Module:
        channels = self.splits["train"][0].image_shape[0]
        return build_model(self.cfg, (channels, self.env.image_size, self.env.image_size))

    def train_batch(self, step: int, generator: torch.Generator):
        return sample_batch(self.env, self.splits["train"], self.env.batch_size, generator)

    def loss(self, model: nn.Module, batch, state) -> StepOutput:
        loss, correct = episode_loss(model, batch)
        return StepOutput(loss + model.aux_loss(), count=len(correct), metrics={"accuracy": correct.float().mean().item()})

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> dict:
        if name not in self.splits:
            self.splits[name] = load_splits(self.env, name)
        episodes, seed = (self.env.eval_episodes, VAL_SEED) if name == "val" else (self.env.test_episodes, TEST_SEED)
        return evaluate(model, self.env, self.splits[name], episodes, seed, self.env.batch_size, self.cfg.device,
                        names=self.names)


register_task("fewshot", FewShotEnvConfig)(FewShotTask)
