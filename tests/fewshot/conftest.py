"""Small fake copies of the on-disk dataset layouts, written by the tests (nothing is downloaded)."""
import json
import pickle

import numpy as np
import pytest
from PIL import Image, ImageDraw

CIFAR100_SUPERCLASSES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]

# (folder, alphabet, character) -> the Vinyals split it belongs to
OMNIGLOT_CHARACTERS = {
    ("images_background", "Alphabet_of_the_Magi", "character01"): "train",
    ("images_background", "Alphabet_of_the_Magi", "character02"): "train",
    ("images_background", "Armenian", "character01"): "val",
    ("images_background", "Armenian", "character02"): "val",
    ("images_evaluation", "Gurmukhi", "character41"): "train",
    ("images_evaluation", "Gurmukhi", "character42"): "test",
    ("images_evaluation", "Kannada", "character01"): "test",
    ("images_evaluation", "Angelic", "character01"): "train",
}


def stroke_image(index: int) -> Image.Image:
    """A 105x105 Omniglot-like image: black ink (a box at a position given by index) on white."""
    image = Image.new("L", (105, 105), 255)
    x = 10 + 8 * (index % 8)
    ImageDraw.Draw(image).rectangle([x, 20, x + 20, 60], fill=0)
    return image


@pytest.fixture
def omniglot_raw(tmp_path):
    root = tmp_path / "omniglot_raw"
    for i, (folder, alphabet, character) in enumerate(OMNIGLOT_CHARACTERS):
        path = root / folder / alphabet / character
        path.mkdir(parents=True)
        for j in range(6):
            stroke_image(i).convert("1").save(path / f"{i:04d}_{j:02d}.png")
    return root


@pytest.fixture
def omniglot_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "tm" / "omniglot"
    folder.mkdir(parents=True)
    labels = {"train": [], "val": [], "test": []}
    with h5py.File(folder / "data.hdf5", "w") as f:
        for i, ((group, alphabet, character), split) in enumerate(OMNIGLOT_CHARACTERS.items()):
            ink = 255 - np.asarray(stroke_image(i), dtype=np.uint8)  # torchmeta stores inverted images
            f.create_dataset(f"{group}/{alphabet}/{character}", data=np.stack([ink] * 4))
            labels[split].append([group, alphabet, character])
    for split, names in labels.items():
        (folder / f"vinyals_{split}_labels.json").write_text(json.dumps(sorted(names)))
    return tmp_path / "tm"


@pytest.fixture
def miniimagenet_csv(tmp_path):
    root = tmp_path / "mini"
    (root / "images").mkdir(parents=True)
    for split, classes in {"train": ["n01", "n02", "n03"], "val": ["n04"], "test": ["n05"]}.items():
        lines = ["filename,label"]
        for c, name in enumerate(classes):
            for j in range(4):
                filename = f"{name}{j:08d}.jpg"
                Image.new("RGB", (100, 90), (40 * c, 100, 200)).save(root / "images" / filename)
                lines.append(f"{filename},{name}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def miniimagenet_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "tm" / "miniimagenet"
    folder.mkdir(parents=True)
    names = ["n01", "n02"]
    with h5py.File(folder / "train_data.hdf5", "w") as f:
        for c, name in enumerate(names):
            f.create_dataset(f"datasets/{name}", data=np.full((5, 84, 84, 3), 10 * (c + 1), dtype=np.uint8))
    (folder / "train_labels.json").write_text(json.dumps(names))
    return tmp_path / "tm"


@pytest.fixture
def cifar100(tmp_path):
    """CIFAR-100 python pickles (bytes keys, as Python 3 reads the originals): 100 fine classes, fine j in
    superclass j % 20, 2 train + 1 test images each, every pixel of an image equal to its fine label."""
    folder = tmp_path / "cifar" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, per_class in (("train", 2), ("test", 1)):
        fine = [j for j in range(100) for _ in range(per_class)]
        data = np.repeat(np.asarray(fine, dtype=np.uint8)[:, None], 3072, axis=1)
        payload = {b"data": data, b"fine_labels": fine, b"coarse_labels": [j % 20 for j in fine]}
        with open(folder / name, "wb") as f:
            pickle.dump(payload, f)
    meta = {b"fine_label_names": [f"fine{j:02d}".encode() for j in range(100)],
            b"coarse_label_names": [n.encode() for n in CIFAR100_SUPERCLASSES]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    return tmp_path / "cifar"
