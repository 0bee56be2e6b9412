"""Readers of the on-disk layouts, on small fixture folders (conftest.py), and their errors."""
import os

import pytest
import torch
from PIL import Image

from metarl.fewshot import DatasetLayoutError, load_split
from metarl.fewshot.readers import FC100_SUPERCLASSES, vinyals_split

from .conftest import OMNIGLOT_CHARACTERS


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Decoded images go to this test's folder, not to the user's cache."""
    monkeypatch.setenv("METARL_CACHE", str(tmp_path / "cache"))


def expected_omniglot(split):
    return sorted(f"{a}/{c}" for (_, a, c), s in OMNIGLOT_CHARACTERS.items() if s == split)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_omniglot_raw_vinyals_split_rotations_and_ink(omniglot_raw, split):
    data = load_split("omniglot", split, omniglot_raw)
    assert sorted(data.names) == expected_omniglot(split)
    assert data.num_classes == 4 * len(data.names) and data.rotations == 4  # x4 rotation classes
    assert data.images.shape == (6 * len(data.names), 1, 28, 28) and data.images.dtype == torch.uint8
    image = data.images[0, 0].float()
    assert image[:3].mean() < 10 and image.max() > 200  # inverted: ink bright on a dark background
    assert load_split("omniglot", split, omniglot_raw, rotations=False).num_classes == len(data.names)


def test_vinyals_split_boundaries():
    assert vinyals_split("images_background", "Hebrew", "character01") == "val"
    assert vinyals_split("images_background", "Greek", "character01") == "train"
    assert vinyals_split("images_evaluation", "Gurmukhi", "character41") == "train"
    assert vinyals_split("images_evaluation", "Gurmukhi", "character42") == "test"
    assert vinyals_split("images_evaluation", "ULOG", "character01") == "test"


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_omniglot_torchmeta_hdf5_matches_the_raw_reader(omniglot_raw, omniglot_hdf5, split):
    data = load_split("omniglot", split, omniglot_hdf5)
    raw = load_split("omniglot", split, omniglot_raw)
    assert sorted(data.names) == sorted(raw.names) and data.images.shape[1:] == (1, 28, 28)
    assert data.counts.tolist() == [4] * len(data.names) and data.rotations == 4
    order = [raw.names.index(n) for n in data.names]
    first_raw = torch.stack([raw.images[raw.starts[i]] for i in order]).float()
    first = data.images[data.starts[:-1]].float()
    assert (first - first_raw).abs().mean() < 8  # same pictures, ink up, resized alike


def test_miniimagenet_csv(miniimagenet_csv):
    data = load_split("miniimagenet", "train", miniimagenet_csv)
    assert data.names == ["n01", "n02", "n03"] and data.counts.tolist() == [4, 4, 4]
    assert data.images.shape == (12, 3, 84, 84)  # resized from 100x90
    assert data.images[4:8, 0].float().mean().round() == 40  # class n02 is red = 40
    assert load_split("miniimagenet", "test", miniimagenet_csv).names == ["n05"]


def test_decoded_images_are_cached_until_a_file_changes(miniimagenet_csv, tmp_path):
    first = load_split("miniimagenet", "train", miniimagenet_csv)
    cached = list((tmp_path / "cache" / "fewshot").glob("miniimagenet_train_84px_*.pt"))
    assert len(cached) == 1
    again = load_split("miniimagenet", "train", miniimagenet_csv)
    assert torch.equal(again.images, first.images) and again.names == first.names
    assert list((tmp_path / "cache" / "fewshot").glob("*.pt")) == cached  # read back, not written anew
    # a changed image is decoded again
    image = miniimagenet_csv / "images" / "n0200000001.jpg"
    Image.new("RGB", (100, 90), (250, 0, 0)).save(image)
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    changed = load_split("miniimagenet", "train", miniimagenet_csv)
    assert changed.images[5, 0].float().mean().round() == 250
    assert len(list((tmp_path / "cache" / "fewshot").glob("*.pt"))) == 2


def test_miniimagenet_torchmeta_hdf5(miniimagenet_hdf5):
    data = load_split("miniimagenet", "train", miniimagenet_hdf5)
    assert data.names == ["n01", "n02"] and data.images.shape == (10, 3, 84, 84)
    assert data.images[5:].unique().tolist() == [20]
    assert load_split("miniimagenet", "train", miniimagenet_hdf5, image_size=42).images.shape == (10, 3, 42, 42)


@pytest.mark.parametrize("split, classes", [("train", 60), ("val", 20), ("test", 20)])
def test_fc100_superclass_split(cifar100, split, classes):
    data = load_split("fc100", split, cifar100)
    assert data.num_classes == classes and data.images.shape == (3 * classes, 3, 32, 32)
    assert {n.split("/")[0] for n in data.names} == set(FC100_SUPERCLASSES[split])
    for k, name in enumerate(data.names):  # every image of a class is its fine label (train + test pickles)
        fine = int(name.split("/")[1][4:])
        assert data.images[data.starts[k]:data.starts[k + 1]].unique().tolist() == [fine]
        assert data.counts[k] == 3


def test_splits_of_a_dataset_are_disjoint(omniglot_raw, cifar100):
    for dataset, root in (("omniglot", omniglot_raw), ("fc100", cifar100)):
        names = [set(load_split(dataset, s, root).names) for s in ("train", "val", "test")]
        assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


@pytest.mark.parametrize("dataset, expected", [
    ("omniglot", "images_background"), ("miniimagenet", "train.csv"), ("fc100", "cifar-100-python")])
def test_missing_folder_names_the_layout(tmp_path, dataset, expected):
    with pytest.raises(DatasetLayoutError, match=expected):
        load_split(dataset, "train", tmp_path / "nowhere")
    with pytest.raises(DatasetLayoutError, match="env.root is not set"):
        load_split(dataset, "train", None)
    (tmp_path / "empty").mkdir(exist_ok=True)
    with pytest.raises(DatasetLayoutError, match=expected):
        load_split(dataset, "train", tmp_path / "empty")


def test_malformed_files_are_named(miniimagenet_csv, cifar100, omniglot_raw):
    (miniimagenet_csv / "val.csv").write_text("image;class\nx.jpg;n04\n")
    with pytest.raises(ValueError, match="val.csv.*filename,label"):
        load_split("miniimagenet", "val", miniimagenet_csv)
    (cifar100 / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="test.*CIFAR-100"):
        load_split("fc100", "train", cifar100)
    (omniglot_raw / "images_background" / "Armenian" / "character03").mkdir()
    with pytest.raises(DatasetLayoutError, match="character03 has no .png"):
        load_split("omniglot", "val", omniglot_raw)


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="env.dataset='mnist'.*omniglot"):
        load_split("mnist", "train")
