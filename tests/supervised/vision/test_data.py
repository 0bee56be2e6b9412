"""Readers of the on-disk image datasets (written here in their standard layouts), the generated ones, and
the error for a missing folder."""
import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from metarl.errors import MissingPathError
from metarl.supervised.vision.data import load_dataset, read_idx


def write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    (gzip.open if compress else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def test_cifar10_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, 20))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    data = load_dataset("cifar10", str(tmp_path), val_fraction=0.1)
    assert data.train.images.shape == (90, 3, 32, 32) and len(data.val) == 10 and len(data.test) == 20
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f)
    assert torch.equal(data.train.images[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
    assert data.train.labels[0] == first[b"labels"][0] and len(data.classes) == 10


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 10, 30)
    suffix = ".gz" if compress else ""
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    assert read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}").shape == (30, 28, 28)
    data = load_dataset("fashion_mnist", str(tmp_path), val_fraction=0.2)
    assert data.train.images.shape == (24, 1, 28, 28) and len(data.val) == 6 and len(data.test) == 30
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert torch.equal(data.test.labels, torch.from_numpy(labels))


def test_imagefolder(tmp_path):
    for c, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (tmp_path / f"class{c}").mkdir()
        for i in range(10):
            Image.new("RGB", (20, 16), colour).save(tmp_path / f"class{c}" / f"{i:02d}.png")
    data = load_dataset("imagefolder", str(tmp_path), image_size=8, channels=3)
    assert data.classes == ["class0", "class1"]
    assert data.train.images.shape == (16, 3, 8, 8) and len(data.val) == 2 and len(data.test) == 2
    assert (data.train.images[data.train.labels == 1][:, 2] == 255).all()  # blue class, blue channel


@pytest.mark.parametrize("dataset", ["cifar10", "mnist", "imagefolder"])
def test_missing_folder_names_the_fix(tmp_path, dataset):
    with pytest.raises(MissingPathError, match="env.root"):
        load_dataset(dataset, str(tmp_path / "nowhere"), image_size=32)
    with pytest.raises(MissingPathError, match="env.root"):
        load_dataset(dataset, None)
    with pytest.raises(MissingPathError):
        load_dataset(dataset, str(tmp_path), image_size=32)  # a folder without the layout


def test_glyphs_have_every_class_in_every_split():
    data = load_dataset("glyphs", classes=5, samples=20)
    assert data.train.images.shape == (70, 1, 28, 28) and len(data.val) == 15 and len(data.test) == 15
    for split in (data.train, data.val, data.test):
        assert torch.equal(torch.bincount(split.labels), torch.full((5,), len(split) // 5))
    assert not torch.equal(data.train.images[0], data.train.images[1])


def test_procgen_frames_are_generated_once_and_cached(tmp_path):
    first = load_dataset("procgen", games=("coinrun", "starpilot"), frames=16, cache_dir=str(tmp_path))
    assert first.train.images.shape == (32, 3, 64, 64) and first.train.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(first.test.labels), torch.tensor([16, 16]))
    assert first.train.images.float().std() > 10  # real frames, not blank
    assert len(list(tmp_path.glob("procgen-*.npz"))) == 1
    again = load_dataset("procgen", games=("coinrun", "starpilot"), frames=16, cache_dir=str(tmp_path))
    assert torch.equal(again.val.images, first.val.images)
