"""Readers of the standard few-shot datasets, from a folder the user gives, into :class:`ImageSplit`.

Nothing is downloaded. Images are resized once at load (Omniglot 28x28 grey, ink = 255 on 0;
Mini-ImageNet 84x84 RGB; FC100 32x32 RGB, the sizes of the SRWM paper). A missing or malformed folder
fails at once with the layout that was expected (``LAYOUTS``).

The layouts made of image files (Omniglot's raw folders, Mini-ImageNet's images/ + CSV) are decoded once
and cached as uint8 tensors in ``$METARL_CACHE/fewshot`` (default ``~/.cache/metarl/fewshot``), keyed by the
split, the image size and every file's path, size and modification time: a changed file is decoded again.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm import tqdm

from metarl.errors import ConfigError, DataError, MissingPathError

from .data import ImageSplit
from .glyphs import glyph_split

SPLITS = ("train", "val", "test")
DATASETS = ("glyphs", "omniglot", "miniimagenet", "fc100")
NATIVE_SIZE = {"glyphs": 28, "omniglot": 28, "miniimagenet": 84, "fc100": 32}

LAYOUTS = {
    "omniglot": """either the raw folders of the Omniglot release
    <root>/images_background/<alphabet>/<character>/*.png
    <root>/images_evaluation/<alphabet>/<character>/*.png
  or torchmeta's layout
    <root>/omniglot/data.hdf5 with <root>/omniglot/vinyals_{train,val,test}_labels.json""",
    "miniimagenet": """either the images with the Ravi-Larochelle split files
    <root>/images/*.jpg with <root>/train.csv, <root>/val.csv, <root>/test.csv (header: filename,label)
  or torchmeta's layout
    <root>/miniimagenet/{train,val,test}_data.hdf5 with <root>/miniimagenet/{train,val,test}_labels.json""",
    "fc100": """the CIFAR-100 python pickles
    <root>/cifar-100-python/{train,test,meta} (or <root>/{train,test,meta})""",
}

# The Vinyals et al. (2016) split as used by Prototypical Networks and torchmeta (1028 / 172 / 423 characters):
# validation = five whole background alphabets; test = the evaluation characters from Gurmukhi/character42
# on, in sorted order; training = the rest.
VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_FIRST_TEST = ("Gurmukhi", "character42")

# FC100 (Oreshkin et al. 2018): CIFAR-100 superclasses, 12 / 4 / 4 (60 / 20 / 20 classes).
FC100_SUPERCLASSES = {
    "train": ["fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
              "household_furniture", "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "reptiles",
              "trees", "vehicles_1", "vehicles_2"],
    "val": ["large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates", "small_mammals"],
    "test": ["aquatic_mammals", "insects", "medium_mammals", "people"],
}


class DatasetLayoutError(MissingPathError):
    """The dataset folder is missing or does not have the expected layout."""


def layout_error(dataset: str, root, problem: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{dataset}: {problem}.\nenv.root={root} should hold {LAYOUTS[dataset]}")


def load_split(dataset: str, split: str, root: Optional[str] = None, image_size: Optional[int] = None,
               rotations: bool = True, glyph_classes: int = 600, glyph_samples: int = 20,
               glyph_seed: int = 0) -> ImageSplit:
    """One class split of a dataset. image_size defaults to the paper's size (``NATIVE_SIZE``);
    rotations: Omniglot's x4 rotation classes; glyph_*: the generated dataset's parameters."""
    if dataset not in DATASETS:
        raise ConfigError(f"env.dataset={dataset!r} is not a dataset; choose one of: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    size = image_size or NATIVE_SIZE[dataset]
    if dataset == "glyphs":
        return glyph_split(split, glyph_classes, glyph_samples, glyph_seed, size)
    if not root:
        raise layout_error(dataset, root, "env.root is not set (nothing is downloaded)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error(dataset, root, f"{root} is not a folder")
    if dataset == "omniglot":
        if (root / "images_background").is_dir() and (root / "images_evaluation").is_dir():
            return omniglot_raw(root, split, size, rotations)
        folder = root if (root / "data.hdf5").is_file() else root / "omniglot"
        if (folder / "data.hdf5").is_file():
            return omniglot_torchmeta(folder, split, size, rotations)
        raise layout_error(dataset, root, "found neither images_background/ + images_evaluation/ nor data.hdf5")
    if dataset == "miniimagenet":
        if (root / "images").is_dir() and (root / f"{split}.csv").is_file():
            return miniimagenet_csv(root, split, size)
        folder = root if (root / f"{split}_data.hdf5").is_file() else root / "miniimagenet"
        if (folder / f"{split}_data.hdf5").is_file():
            return miniimagenet_torchmeta(folder, split, size)
        raise layout_error(dataset, root, f"found neither images/ + {split}.csv nor {split}_data.hdf5")
    folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    return fc100(folder, split, size)


# ---------------------------------------------------------------------------------------------- helpers

def read_image(path: Path, size: int, mode: str, invert: bool = False) -> torch.Tensor:
    """An image file -> uint8 [C, size, size] (mode "L": C = 1, "RGB": C = 3)."""
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
    except OSError as err:
        raise DataError(f"{path}: cannot read the image ({err})") from err
    if invert:
        image = ImageOps.invert(image)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    array = torch.from_numpy(np.array(image, dtype=np.uint8))
    return array.unsqueeze(0) if array.dim() == 2 else array.permute(2, 0, 1)


def decode_classes(dataset: str, split: str, size: int, classes: "OrderedDict[str, list]", mode: str,
                   invert: bool = False) -> list:
    """Decode ``{class name: [image paths]}`` into one uint8 ``[n, C, size, size]`` tensor per class, through
    the on-disk cache (see the module docstring)."""
    digest = hashlib.sha256(f"{dataset}|{split}|{size}|{mode}|{invert}".encode())
    for name, paths in classes.items():
        digest.update(name.encode())
        for path in paths:
            stat = path.stat()
            digest.update(f"|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    cache = Path(os.environ.get("METARL_CACHE", Path.home() / ".cache" / "metarl")) / "fewshot"
    target = cache / f"{dataset}_{split}_{size}px_{digest.hexdigest()[:20]}.pt"
    if target.is_file():
        try:
            return torch.load(target, weights_only=True)
        except Exception:  # a truncated or foreign file: decode again and overwrite it
            pass
    bar = tqdm(total=sum(len(p) for p in classes.values()), desc=f"{dataset} {split} (decoding once)", leave=False)
    per_class = []
    for paths in classes.values():
        per_class.append(torch.stack([read_image(p, size, mode, invert) for p in paths]))
        bar.update(len(paths))
    bar.close()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        torch.save(per_class, partial)
        partial.replace(target)  # atomic: a reader never sees half a file
    except OSError:  # a read-only cache only costs the decoding next time
        pass
    return per_class


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size] (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def subfolders(path: Path):
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def read_json(path: Path, dataset: str, root):
    if not path.is_file():
        raise layout_error(dataset, root, f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err


def open_hdf5(path: Path):
    try:
        import h5py
    except ImportError as err:  # pragma: no cover - h5py is a dependency
        raise ImportError("torchmeta's hdf5 layout needs h5py: pip install h5py") from err
    return h5py.File(path, "r")


# ---------------------------------------------------------------------------------------------- Omniglot

def vinyals_split(folder: str, alphabet: str, character: str) -> str:
    """The Vinyals split ("train" | "val" | "test") of an Omniglot character."""
    if folder == "images_background":
        return "val" if alphabet in VINYALS_VAL_ALPHABETS else "train"
    return "test" if (alphabet, character) >= VINYALS_FIRST_TEST else "train"


def omniglot_raw(root: Path, split: str, size: int, rotations: bool) -> ImageSplit:
    """Omniglot's raw PNG folders (black ink on white; inverted here)."""
    characters = [(folder, alphabet, character)
                  for folder in ("images_background", "images_evaluation")
                  for alphabet in subfolders(root / folder)
                  for character in subfolders(root / folder / alphabet)
                  if vinyals_split(folder, alphabet, character) == split]
    classes = OrderedDict()
    for folder, alphabet, character in characters:
        files = sorted((root / folder / alphabet / character).glob("*.png"))
        if not files:
            raise layout_error("omniglot", root, f"{root / folder / alphabet / character} has no .png image")
        classes[f"{alphabet}/{character}"] = files
    if not classes:
        raise layout_error("omniglot", root, f"no character of the Vinyals {split} split was found")
    per_class = decode_classes("omniglot", split, size, classes, "L", invert=True)
    return ImageSplit.from_classes(per_class, list(classes), rotations=4 if rotations else 1)


def omniglot_torchmeta(folder: Path, split: str, size: int, rotations: bool) -> ImageSplit:
    """torchmeta's data.hdf5 (groups images_*/<alphabet>/<character>: uint8 [n, 105, 105], ink = 255)."""
    labels = read_json(folder / f"vinyals_{split}_labels.json", "omniglot", folder.parent)
    per_class, names = [], []
    with open_hdf5(folder / "data.hdf5") as data:
        for label in labels:
            key = "/".join(label)
            if key not in data:
                raise ValueError(f"{folder / 'data.hdf5'} has no character {key} listed in vinyals_{split}_labels.json")
            per_class.append(resize(torch.from_numpy(data[key][()]).unsqueeze(1), size))
            names.append("/".join(label[1:]))
    return ImageSplit.from_classes(per_class, names, rotations=4 if rotations else 1)


# ---------------------------------------------------------------------------------------------- Mini-ImageNet

def miniimagenet_csv(root: Path, split: str, size: int) -> ImageSplit:
    """images/ with the Ravi-Larochelle <split>.csv (filename,label)."""
    path = root / f"{split}.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"{path}: expected a header line 'filename,label', got {rows[0] if rows else 'an empty file'}")
    files = OrderedDict()
    for row in rows[1:]:
        if len(row) != 2:
            raise DataError(f"{path}: expected 'filename,label' rows, got {row}")
        files.setdefault(row[1], []).append(root / "images" / row[0])
    missing = [p for paths in files.values() for p in paths if not p.is_file()]
    if missing:
        raise layout_error("miniimagenet", root, f"{len(missing)} images listed in {path.name} are missing, "
                                                  f"e.g. {missing[0]}")
    return ImageSplit.from_classes(decode_classes("miniimagenet", split, size, files, "RGB"), list(files))


def miniimagenet_torchmeta(folder: Path, split: str, size: int) -> ImageSplit:
    """torchmeta's <split>_data.hdf5 (datasets/<class>: uint8 [n, 84, 84, 3]) with <split>_labels.json."""
    labels = read_json(folder / f"{split}_labels.json", "miniimagenet", folder.parent)
    per_class = []
    with open_hdf5(folder / f"{split}_data.hdf5") as data:
        if "datasets" not in data:
            raise ValueError(f"{folder / f'{split}_data.hdf5'}: no group 'datasets' (not torchmeta's layout)")
        for name in labels:
            if name not in data["datasets"]:
                raise ValueError(f"{folder / f'{split}_data.hdf5'} has no class {name} listed in {split}_labels.json")
            per_class.append(resize(torch.from_numpy(data["datasets"][name][()]).permute(0, 3, 1, 2), size))
    return ImageSplit.from_classes(per_class, labels)


# ---------------------------------------------------------------------------------------------- FC100

def read_pickle(path: Path, keys) -> dict:
    """A CIFAR pickle with its keys as str; fails naming the file when a key is missing."""
    if not path.is_file():
        raise layout_error("fc100", path.parent, f"{path} is missing")
    with open(path, "rb") as f:
        try:
            raw = pickle.load(f, encoding="bytes")
        except Exception as err:
            raise DataError(f"{path}: not a CIFAR-100 python pickle ({err})") from err
    data = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    if not set(keys) <= set(data):
        raise DataError(f"{path}: not a CIFAR-100 python pickle (expected the keys {', '.join(keys)})")
    return data


def fc100(folder: Path, split: str, size: int) -> ImageSplit:
    """FC100 from CIFAR-100's train + test pickles (600 images per class), split by superclass."""
    meta = read_pickle(folder / "meta", ["fine_label_names", "coarse_label_names"])
    decode = lambda names: [n.decode() if isinstance(n, bytes) else n for n in names]  # noqa: E731
    fine_names, coarse_names = decode(meta["fine_label_names"]), decode(meta["coarse_label_names"])
    parts = [read_pickle(folder / name, ["data", "fine_labels", "coarse_labels"]) for name in ("train", "test")]
    images = torch.from_numpy(np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts]))
    fine = torch.tensor(np.concatenate([p["fine_labels"] for p in parts]), dtype=torch.long)
    coarse = torch.tensor(np.concatenate([p["coarse_labels"] for p in parts]), dtype=torch.long)
    if images.dim() != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(fine):
        raise ValueError(f"{folder}: CIFAR-100 'data' must be uint8 [N, 3072] with one fine label per row")
    images = images.view(-1, 3, 32, 32)
    per_class, names = [], []
    for superclass in FC100_SUPERCLASSES[split]:
        if superclass not in coarse_names:
            raise ValueError(f"{folder / 'meta'}: no CIFAR-100 superclass {superclass!r} (needed by the FC100 split)")
        for j in sorted(set(fine[coarse == coarse_names.index(superclass)].tolist())):
            per_class.append(resize(images[fine == j], size))
            names.append(f"{superclass}/{fine_names[j]}")
    return ImageSplit.from_classes(per_class, names)
