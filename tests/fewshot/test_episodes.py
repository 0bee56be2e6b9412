"""Episode sampler invariants, the two protocols, the glyph generator and the models' episode contract."""
import pytest
import torch

from metarl import cores
from metarl.fewshot import (Conv4, ImageSplit, ProtoNet, Res12, SequenceLearner, delayed_episodes, glyph_split,
                            sample_episodes, sync_episodes, to_float)
from metarl.testing import assert_close


def numbered_split(classes=12, per_class=6, rotations=1):
    """Image i is filled with the value i, so a sampled image tells which image (and class) it was."""
    images = torch.arange(classes * per_class, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    return ImageSplit.from_classes(list(images.split(per_class)), [f"c{k}" for k in range(classes)], rotations)


def image_ids(images):
    """float or uint8 images [..., 1, 4, 4] -> the number each image was filled with [...]."""
    values = images[..., 0, 0, 0]
    return (values * 255).round().long() if values.is_floating_point() else values.long()


def test_sampler_draws_distinct_classes_and_images():
    split = numbered_split()
    images, classes, index = sample_episodes(split, 200, 5, 4, torch.Generator().manual_seed(0))
    assert images.shape == (200, 5, 4, 1, 4, 4) and classes.shape == (200, 5)
    assert all(len(set(row.tolist())) == 5 for row in classes)  # N distinct classes
    assert all(len(set(cls.tolist())) == 4 for cls in index.flatten(0, 1))  # K distinct images per class
    assert torch.equal(index // 6, classes.unsqueeze(-1).expand(-1, -1, 4))  # each from its class
    assert torch.equal(image_ids(images), index)
    assert set(classes.flatten().tolist()) == set(range(12))  # every class gets drawn


def test_sampler_rotations_make_new_classes():
    split = numbered_split(classes=3, per_class=4, rotations=4)
    split.images[:, :, 0, 1] = 255  # a mark that shows the rotation
    images, classes, index = sample_episodes(split, 100, 5, 2, torch.Generator().manual_seed(1))
    assert split.num_classes == 12 and classes.max() >= 3
    for b, n in zip(*torch.nonzero(classes >= 0, as_tuple=True)):
        turns = int(classes[b, n]) // 3
        original = split.images[index[b, n]]
        assert torch.equal(images[b, n], torch.rot90(original, turns, dims=(-2, -1)))


def test_sampler_rejects_impossible_episodes():
    with pytest.raises(ValueError, match="6 images per class"):
        sample_episodes(numbered_split(per_class=5), 2, 5, 6)
    with pytest.raises(ValueError, match="13 classes"):
        sample_episodes(numbered_split(), 2, 13, 1)


def test_sync_episodes_support_queries_and_remapped_labels():
    split, ways, shots, queries = numbered_split(), 5, 2, 3
    batch = sync_episodes(split, 300, ways, shots, queries, torch.Generator().manual_seed(2))
    assert batch.support.shape == (300, ways * shots, 1, 4, 4) and batch.queries.shape == (300, ways * queries, 1, 4, 4)
    support_ids, query_ids = image_ids(batch.support), image_ids(batch.queries)
    first_label_class = []
    for b in range(300):
        assert not set(support_ids[b].tolist()) & set(query_ids[b].tolist())  # no query in the support set
        assert sorted(batch.support_labels[b].tolist()) == sorted(list(range(ways)) * shots)
        assert sorted(batch.query_labels[b].tolist()) == sorted(list(range(ways)) * queries)
        mapping = {}
        for ids, labels in ((support_ids[b], batch.support_labels[b]), (query_ids[b], batch.query_labels[b])):
            for i, label in zip(ids.tolist(), labels.tolist()):
                assert mapping.setdefault(label, i // 6) == i // 6  # one class per label in an episode
        first_label_class.append(mapping[0])
    assert len(set(first_label_class)) == 12  # label 0 is any class: labels are remapped per episode
    assert len({tuple(batch.support_labels[b].tolist()) for b in range(300)}) > 50  # support order shuffled


def test_delayed_episodes_feed_the_previous_label_and_count_shots():
    ways, shots = 3, 4
    one = delayed_episodes([numbered_split()], 50, ways, shots, torch.Generator().manual_seed(3))
    assert one.images.shape[:2] == (50, ways * shots)
    assert (one.fed[:, 0] == ways).all() and torch.equal(one.fed[:, 1:], one.targets[:, :-1])
    for b in range(50):
        for label in range(ways):
            assert one.shot[b][one.targets[b] == label].tolist() == list(range(shots))  # 0, 1, 2, ... in order

    two = delayed_episodes([numbered_split(), numbered_split(classes=8)], 200, ways, shots,
                           torch.Generator().manual_seed(4), max_trim=2)
    T = two.targets.shape[1]
    assert 2 * ways * shots - 4 <= T <= 2 * ways * shots
    first_part = two.part[:, 0]
    assert 0 < first_part.sum() < 200  # both orders occur
    for b in range(200):  # one contiguous block per dataset
        changes = (two.part[b, 1:] != two.part[b, :-1]).sum()
        assert changes == 1 and (two.shot[b][two.part[b] == 0] < shots).all()
    with pytest.raises(ValueError, match="max_trim"):
        delayed_episodes([numbered_split()], 2, ways, shots, max_trim=ways * shots)


def test_glyphs_are_deterministic_split_and_class_structured():
    make = glyph_split.__wrapped__  # bypass the cache
    train = make("train", num_classes=50, samples=5, seed=3)
    assert torch.equal(train.images, make("train", num_classes=50, samples=5, seed=3).images)
    assert not torch.equal(train.images, make("train", num_classes=50, samples=5, seed=4).images)
    sizes = [len(make(s, num_classes=50, samples=5, seed=3).names) for s in ("train", "val", "test")]
    assert sizes == [32, 8, 10]
    default = glyph_split("test")
    assert len(default.names) == 120 and default.images.shape == (120 * 20, 1, 28, 28)
    x = to_float(train.images).flatten(1)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    similarity = x @ x.T / x.shape[1]
    same = torch.arange(len(x)) // 5
    mask = same.unsqueeze(0) == same.unsqueeze(1)
    within, between = similarity[mask & ~torch.eye(len(x), dtype=torch.bool)].mean(), similarity[~mask].mean()
    assert within > between + 0.2  # samples of a class look alike, classes differ


def test_to_float_converts_channels_and_size():
    grey = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    assert to_float(grey, channels=3, size=84).shape == (2, 3, 84, 84)
    assert to_float(grey.expand(2, 3, 28, 28), channels=1).shape == (2, 1, 28, 28)
    assert to_float(grey).max() == 1.0


@pytest.mark.parametrize("size, out", [(28, 64), (84, 32 * 25), (32, 32 * 4)])
def test_conv4_feature_sizes(size, out):
    channels = 64 if size == 28 else 32
    net = Conv4(1 if size == 28 else 3, [channels] * 4)
    assert net.out_dim(size, size) == out
    assert net(torch.rand(2, 1 if size == 28 else 3, size, size)).shape == (2, out)
    assert Res12(3, [8, 8, 8, 16])(torch.rand(2, 3, size, size)).shape == (2, 16)


@pytest.mark.parametrize("name", cores.names())
def test_each_query_is_classified_from_the_support_alone(name):
    """episode_logits equals feeding support + that one query (with the "no label" input) as one sequence."""
    torch.manual_seed(0)
    backbone = Conv4(1, [4, 4, 4, 4])
    model = SequenceLearner(backbone, backbone.out_dim(28, 28), cores.make(name, d_model=32, num_heads=2, d_ff=32), 5)
    model.eval()
    batch = sync_episodes(glyph_split("val"), 3, 5, 2, 2, torch.Generator().manual_seed(1))
    logits = model.episode_logits(batch.support, batch.support_labels, batch.queries)
    assert logits.shape == (3, 10, 5)
    for q in range(10):
        images = torch.cat([batch.support, batch.queries[:, q:q + 1]], 1)
        fed = torch.cat([batch.support_labels, torch.full((3, 1), 5)], 1)
        reference, _ = model(images, fed)
        assert_close(f"{name} query {q}", reference[:, -1], logits[:, q], rtol=1e-4)


def test_protonet_picks_the_nearest_prototype():
    model = ProtoNet(Conv4(1, [4, 4, 4, 4]), 5).eval()
    batch = sync_episodes(glyph_split("val"), 4, 5, 1, 1, torch.Generator().manual_seed(2))
    logits = model.episode_logits(batch.support, batch.support_labels, batch.support)  # queries = the support
    assert torch.equal(logits.argmax(-1), batch.support_labels)
