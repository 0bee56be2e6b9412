"""Image datasets for the vision tasks (VQ-VAE, classification): read from a path the user gives, or generated.

``load_dataset(name, root, ...)`` -> :class:`ImageData` with ``train``, ``val`` and ``test`` splits of uint8
``[N, C, H, W]`` images and int64 labels. Nothing is downloaded. Layouts (``LAYOUTS``):

==============  ====================================================================================
glyphs          generated (``metarl.fewshot.glyphs``): ``classes`` characters x ``samples`` distortions,
                28x28 grey; every class in every split (samples split 70 / 15 / 15 %)
procgen         generated: frames of procgen games stepped with random actions (64x64 RGB; label = the
                game), cached as ``.npz`` in ``cache_dir`` (default ``$METARL_CACHE/vision``,
                ``~/.cache/metarl/vision``)
cifar10         ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch}`` (or those files in <root>)
mnist           ``<root>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (or under <root>/raw/)
fashion_mnist   the same idx files as MNIST
imagefolder     ``<root>/<class>/*.{png,jpg,...}`` (split 80 / 10 / 10 % per class, fixed order), or
                ``<root>/{train,val,test}/<class>/*`` (``val`` may be missing: then 10 % of train)
==============  ====================================================================================

CIFAR and MNIST have no validation split: it is the last ``val_fraction`` of the training set.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from metarl.errors import ConfigError, DataError, MissingPathError

DATASETS = ("glyphs", "procgen", "cifar10", "mnist", "fashion_mnist", "imagefolder")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm")

LAYOUTS = {
    "cifar10": "<root>/cifar-10-batches-py/data_batch_1 ... data_batch_5 and test_batch (the python version)",
    "mnist": "<root>/train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
             "t10k-labels-idx1-ubyte (each may end in .gz; also under <root>/raw/)",
    "imagefolder": "<root>/<class>/<image files>, or <root>/train/<class>/... with <root>/test/<class>/... "
                   "(and optionally <root>/val/<class>/...)",
}
LAYOUTS["fashion_mnist"] = LAYOUTS["mnist"]


@dataclass
class Split:
    """images uint8 [N, C, H, W], labels int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class ImageData:
    """The three splits of a dataset and its class names."""

    name: str
    train: Split
    val: Split
    test: Split
    classes: List[str]

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def missing(dataset: str, root, problem: str) -> MissingPathError:
    return MissingPathError(f"{dataset}: {problem}. Pass env.root=<folder> holding {LAYOUTS[dataset]} "
                            "(nothing is downloaded; env.dataset=glyphs or procgen need no files)")


def cache_folder(cache_dir: Optional[str]) -> Path:
    base = cache_dir or os.environ.get("METARL_CACHE") or Path.home() / ".cache" / "metarl"
    return Path(base).expanduser() / ("" if cache_dir else "vision")


def _hold_out(split: Split, fraction: float) -> Tuple[Split, Split]:
    """(the first 1 - fraction, the last fraction) of a split."""
    n_val = int(round(len(split) * fraction))
    cut = len(split) - n_val
    return Split(split.images[:cut], split.labels[:cut]), Split(split.images[cut:], split.labels[cut:])


# ---------------------------------------------------------------------------------------------- generated
def glyphs(classes: int = 10, samples: int = 100, seed: int = 0, size: int = 28) -> ImageData:
    """``classes`` generated characters, ``samples`` distortions each; per class the first 70 % of the
    samples are train, the next 15 % val, the rest test."""
    from metarl.fewshot.glyphs import class_templates, distort, render

    if classes < 2 or samples < 7:
        raise ConfigError(f"env.classes must be >= 2 and env.samples >= 7, got {classes}, {samples}")
    templates, active = class_templates(classes, torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(seed * 1000 + 7)
    labels = torch.arange(classes).repeat_interleave(samples)
    chunks = []
    for part in labels.split(512):
        width = 0.045 * (1 + 0.2 * (torch.rand(len(part), generator=generator) * 2 - 1))
        chunks.append(render(distort(templates[part], generator), active[part], width, size))
    images = torch.cat(chunks).unsqueeze(1).view(classes, samples, 1, size, size)
    bounds = [0, int(0.7 * samples), int(0.85 * samples), samples]
    splits = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        splits.append(Split(images[:, lo:hi].reshape(-1, 1, size, size).contiguous(),
                            torch.arange(classes).repeat_interleave(hi - lo)))
    return ImageData("glyphs", *splits, [f"glyph{c:03d}" for c in range(classes)])


def procgen_frames(games: Sequence[str] = ("coinrun", "starpilot"), frames: int = 2048, envs: int = 16,
                   seed: int = 0, cache_dir: Optional[str] = None) -> ImageData:
    """``frames`` 64x64 RGB frames per split and game from procgen games stepped with uniformly random
    actions (``envs`` levels at once, one frame kept every 4 steps), labelled by game. Train / val / test
    frames come from disjoint level ranges (start levels 0, 10000, 20000). Cached as one ``.npz`` per
    (games, frames, envs, seed) in ``cache_dir``."""
    from metarl.envs.procgen import ProcgenEnv

    key = hashlib.sha1(repr((sorted(games), frames, envs, seed)).encode()).hexdigest()[:12]
    path = cache_folder(cache_dir) / f"procgen-{key}.npz"
    if path.is_file():
        with np.load(path) as archive:
            loaded = {k: torch.from_numpy(archive[k]) for k in archive.files}
        splits = [Split(loaded[f"{s}_images"], loaded[f"{s}_labels"]) for s in SPLITS]
        return ImageData("procgen", *splits, list(games))
    rng = np.random.default_rng(seed)
    arrays = {}
    for index, split in enumerate(SPLITS):
        images, labels = [], []
        for g, game in enumerate(games):
            env = ProcgenEnv(game, envs, num_levels=0, start_level=10_000 * index, seed=seed + 97 * index + g,
                             num_threads=1)
            env.reset()
            kept = []
            step = 0
            while sum(len(k) for k in kept) < frames:
                obs, *_ = env.step(rng.integers(0, env.num_actions, size=envs))
                step += 1
                if step % 4 == 0:
                    kept.append(obs.copy())
            env.close()
            images.append(np.concatenate(kept)[:frames].transpose(0, 3, 1, 2))
            labels.append(np.full(frames, g, dtype=np.int64))
        arrays[f"{split}_images"] = np.ascontiguousarray(np.concatenate(images))
        arrays[f"{split}_labels"] = np.concatenate(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    splits = [Split(torch.from_numpy(arrays[f"{s}_images"]), torch.from_numpy(arrays[f"{s}_labels"])) for s in SPLITS]
    return ImageData("procgen", *splits, list(games))


# ---------------------------------------------------------------------------------------------- on disk
def cifar10(root: Path, val_fraction: float) -> ImageData:
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    absent = [n for n in names if not (folder / n).is_file()]
    if absent:
        raise missing("cifar10", root, f"{folder} lacks {', '.join(absent)}")

    def read(name: str) -> Split:
        try:
            with open(folder / name, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data, labels = batch[b"data"], batch[b"labels"]
        except (OSError, pickle.UnpicklingError, KeyError, EOFError) as err:
            raise DataError(f"{folder / name}: not a CIFAR-10 python batch ({err!r})") from err
        images = torch.from_numpy(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        return Split(images, torch.tensor(labels, dtype=torch.long))

    parts = [read(n) for n in names[:5]]
    train = Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    train, val = _hold_out(train, val_fraction)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return ImageData("cifar10", train, val, read("test_batch"), classes)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, optionally gzipped) -> uint8 array of its dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: holds {data.size} bytes, its header says {shape}")
    return data.reshape(shape)


def mnist(dataset: str, root: Path, val_fraction: float) -> ImageData:
    def find(stem: str) -> Path:
        for folder in (root, root / "raw"):
            for name in (stem, stem + ".gz"):
                if (folder / name).is_file():
                    return folder / name
        raise missing(dataset, root, f"no {stem}[.gz] in {root} or {root / 'raw'}")

    def read(prefix: str) -> Split:
        images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise DataError(f"{dataset}: {len(images)} {prefix} images but {len(labels)} labels")
        return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))

    train, val = _hold_out(read("train"), val_fraction)
    classes = [str(i) for i in range(10)] if dataset == "mnist" else [
        "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
    return ImageData(dataset, train, val, read("t10k"), classes)


def _read_image(path: Path, size: Optional[int], mode: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.array(image, dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{path}: cannot read the image ({err})") from err
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _folder_classes(folder: Path) -> Dict[str, List[Path]]:
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[sub.name] = files
    return classes


def imagefolder(root: Path, size: Optional[int], channels: int, val_fraction: float) -> ImageData:
    mode = "L" if channels == 1 else "RGB"
    if size is None:
        raise ConfigError("env.dataset=imagefolder needs env.image_size (images are resized to it)")

    def decode(per_class: Dict[str, List[Path]], names: List[str]) -> Split:
        images, labels = [], []
        for label, name in enumerate(names):
            for path in per_class.get(name, []):
                images.append(_read_image(path, size, mode))
                labels.append(label)
        if not images:
            return Split(torch.zeros(0, channels, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
        return Split(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long))

    if (root / "train").is_dir() and (root / "test").is_dir():
        train_files = _folder_classes(root / "train")
        names = sorted(train_files)
        if not names:
            raise missing("imagefolder", root, f"{root / 'train'} has no class folder with images")
        train, test = decode(train_files, names), decode(_folder_classes(root / "test"), names)
        if (root / "val").is_dir():
            val = decode(_folder_classes(root / "val"), names)
        else:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
            train, val = _hold_out(Split(train.images[order], train.labels[order]), val_fraction)
        return ImageData("imagefolder", train, val, test, names)
    per_class = _folder_classes(root)
    if not per_class:
        raise missing("imagefolder", root, f"{root} has no class folder with images")
    names = sorted(per_class)
    parts = {s: {} for s in SPLITS}
    for name, files in per_class.items():  # 80 / 10 / 10 % of each class, in file-name order
        a, b = int(0.8 * len(files)), int(0.9 * len(files))
        parts["train"][name], parts["val"][name], parts["test"][name] = files[:a], files[a:b], files[b:]
    return ImageData("imagefolder", *(decode(parts[s], names) for s in SPLITS), names)


def load_dataset(name: str, root: Optional[str] = None, image_size: Optional[int] = None, channels: int = 3,
                 val_fraction: float = 0.1, cache_dir: Optional[str] = None, classes: int = 10,
                 samples: int = 100, seed: int = 0, games: Sequence[str] = ("coinrun", "starpilot"),
                 frames: int = 2048) -> ImageData:
    """The dataset ``name`` (``DATASETS``); ``root`` for the ones on disk; glyphs: ``classes``, ``samples``,
    ``seed``; procgen: ``games``, ``frames`` per split and game; imagefolder: ``image_size``, ``channels``."""
    if name not in DATASETS:
        raise ConfigError(f"env.dataset={name!r} is not known; choose one of: {', '.join(DATASETS)}")
    if name == "glyphs":
        return glyphs(classes, samples, seed, image_size or 28)
    if name == "procgen":
        return procgen_frames(tuple(games), frames, seed=seed, cache_dir=cache_dir)
    if not root:
        raise missing(name, root, "env.root is not set")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise missing(name, root, f"{path} is not a folder")
    if name == "cifar10":
        return cifar10(path, val_fraction)
    if name in ("mnist", "fashion_mnist"):
        return mnist(name, path, val_fraction)
    return imagefolder(path, image_size, channels, val_fraction)


def evaluation_subset(length: int, n: int) -> torch.Tensor:
    """Indices of ``min(n, length)`` items spread evenly over a split of ``length`` (the splits are ordered by
    class or game, so its first n items could all be of the first class)."""
    n = min(n, length)
    return torch.arange(n) * length // max(n, 1)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., C, H, W] -> float in [-0.5, 0.5] (the VQ-VAE input range of the reference)."""
    return images.float().div_(255.0).sub_(0.5)
