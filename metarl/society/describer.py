"""An image describer: a member that says in words what a trained image classifier sees.

How images travel in a text conversation: they do not. A task keeps its images in a side table, a
``Gallery`` (name -> uint8 image ``[C, H, W]``), and its text names them ``image:<name>`` ("What is the class of
image:left plus the class of image:right?"). The describer holds the gallery; while a task is shown
(``with gallery.showing(task.images): ...``) it answers every ``image:<name>`` of the request (or, when the
request names none, of the task) with the class its classifier predicts::

    image:left shows class 3; image:right shows class 5.

and ``I cannot see image:<name>.`` for a name the gallery does not hold. Every other member reads only that
text: the describer is the society's only eye. Like the other tools it abstains from votes and choices.

The classifier is a checkpoint of ``python -m metarl.train env=image/glyphs`` (any ``env=image/<dataset>``
run: the Conv-4 baseline ``env.model=conv4`` or a sequence core over patches), loaded with
``ImageDescriber.from_checkpoint``; ``train_glyph_classifier`` trains the Conv-4 one on the engine loop in a
few seconds and returns its best checkpoint, so a demo needs nothing prepared.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from omegaconf import OmegaConf
from torch import nn

from ..engine import read_checkpoint
from ..errors import CheckpointError
from .agents import UNKNOWN, Tool, reply
from .messages import Message, last_request

IMAGE_REF = re.compile(r"(?<![\w:])image:([A-Za-z0-9_\-]+)")


def image_refs(text: str) -> List[str]:
    """The image names ``text`` refers to (``image:<name>``), in order of first mention."""
    return list(dict.fromkeys(IMAGE_REF.findall(text)))


class Gallery:
    """The side table of the images of the task being solved: ``gallery[name]`` is a uint8 ``[C, H, W]``."""

    def __init__(self, images: Optional[Mapping[str, torch.Tensor]] = None):
        self.images: Dict[str, torch.Tensor] = dict(images or {})

    @contextmanager
    def showing(self, images: Mapping[str, torch.Tensor]):
        """Within the block the gallery holds ``images`` (only them); then what it held before."""
        before, self.images = self.images, dict(images)
        try:
            yield self
        finally:
            self.images = before

    def __contains__(self, name: str) -> bool:
        return name in self.images

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.images[name]


def _to_float(images: torch.Tensor) -> torch.Tensor:
    from ..supervised.vision.data import to_float

    return to_float(images)


def load_image_classifier(path, device: str = "cpu") -> Tuple[nn.Module, List[str], dict]:
    """(model in eval mode, the dataset's class names, the run config) of a checkpoint written by an
    ``env=image/<dataset>`` run (``best-val-accuracy.pt`` or ``checkpoint.pt``)."""
    from ..supervised.vision.image import ImageClassification

    payload = read_checkpoint(path)
    cfg = payload.get("config") or {}
    if (cfg.get("env") or {}).get("family") != "image":
        raise CheckpointError(f"{path} is not a checkpoint of an image classifier; pass one from "
                              "`python -m metarl.train env=image/glyphs env.model=conv4` (runs/<run>/best-val-accuracy.pt)")
    task = ImageClassification(OmegaConf.create(cfg))
    model = task.build_model()
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit the model its config builds "
                              f"({' '.join(str(err).split())[:200]})") from None
    return model.to(device).eval(), list(task.data.classes), cfg


class ImageDescriber(Tool):
    """Names the class a trained classifier sees in each ``image:<name>`` of the request (module docstring).

    class_names: the word said for each label (default: the dataset's class names); ``min_confidence``: below
    this softmax probability the describer says it is unsure (``image:x is unclear (maybe class 3)``)."""

    def __init__(self, model: nn.Module, gallery: Gallery, class_names: Sequence[str], *, name: str = "describer",
                 description: str = "describes images: names the class of the glyph each image:<name> shows",
                 device: str = "cpu", min_confidence: float = 0.0):
        self.model, self.gallery = model.eval(), gallery
        self.class_names = [str(c) for c in class_names]
        self.name, self.description, self.device = name, description, device
        self.min_confidence = float(min_confidence)

    @classmethod
    def from_checkpoint(cls, path, gallery: Gallery, class_names: Optional[Sequence[str]] = None,
                        device: str = "cpu", **kwargs) -> "ImageDescriber":
        model, names, _ = load_image_classifier(path, device)
        return cls(model, gallery, class_names if class_names is not None else names, device=device, **kwargs)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``[N, C, H, W]`` -> (labels [N], softmax confidence of each [N])."""
        probs = torch.softmax(self.model(_to_float(images).to(self.device)).float(), -1).cpu()
        confidence, labels = probs.max(-1)
        return labels, confidence

    def describe(self, names: Sequence[str]) -> str:
        seen = [n for n in names if n in self.gallery]
        words = {}
        if seen:
            labels, confidence = self.classify(torch.stack([self.gallery[n] for n in seen]))
            for n, label, p in zip(seen, labels.tolist(), confidence.tolist()):
                cls = self.class_names[label]
                words[n] = (f"image:{n} shows class {cls}" if p >= self.min_confidence
                            else f"image:{n} is unclear (maybe class {cls})")
        parts = [words.get(n, f"I cannot see image:{n}") for n in names]
        return "; ".join(parts) + "."

    def answer(self, text: str) -> str:
        names = image_refs(text)
        return self.describe(names) if names else UNKNOWN

    def respond(self, conversation: Sequence[Message]) -> Message:
        request = last_request(conversation)
        if request.intent in ("vote", "choose"):
            return super().respond(conversation)
        names = image_refs(request.content)
        if not names:  # a bare "describe them": the images of the task
            task = next((m.content for m in conversation if m.name == "task"), "")
            names = image_refs(task)
        return reply(self, self.describe(names) if names else UNKNOWN)

    def __repr__(self) -> str:
        return f"ImageDescriber({self.name!r}, {len(self.class_names)} classes)"


def train_glyph_classifier(run_dir, *, steps: int = 200, seed: int = 0, classes: int = 10, samples: int = 100,
                           data_seed: int = 0, channels: Sequence[int] = (16, 16, 16, 16), lr: float = 2e-3,
                           batch_size: int = 32, device: str = "cpu", progress: bool = False) -> Path:
    """Train the Conv-4 glyph classifier of ``env=image/glyphs env.model=conv4`` on the engine loop in
    ``run_dir`` (checkpoints, metrics.jsonl, curves.png) and return its best checkpoint
    (``best-val-accuracy.pt``). 200 updates take a few seconds on one CPU thread and reach ~99 % test
    accuracy on the default 10 glyph classes."""
    from ..config import TrainConfig
    from ..engine import train as engine_train
    from ..supervised.vision.image import ImageClassification, ImageConfig

    env = ImageConfig(name="image_glyphs", dataset="glyphs", model="conv4", conv_channels=list(channels),
                      classes=classes, samples=samples, data_seed=data_seed, batch_size=batch_size,
                      eval_every=max(1, steps // 2))
    cfg = OmegaConf.structured(TrainConfig)
    cfg.env = OmegaConf.structured(env)
    cfg.optim.lr, cfg.optim.steps = lr, steps
    cfg.seed, cfg.device, cfg.progress, cfg.checkpoint_minutes = seed, device, progress, 1e9
    run_dir = Path(run_dir)
    engine_train(ImageClassification(cfg), cfg, run_dir)
    return run_dir / "best-val-accuracy.pt"
