"""env=glyph_domains: the generated domain-shift data (domains, uneven classes, determinism), its metrics,
and a short training run through metarl.train with one best checkpoint per selection metric."""
from __future__ import annotations

import json

import pytest
import torch

import metarl.supervised.glyph_domains as gd
from metarl.errors import ConfigError
from metarl.train import compose_config, run

SMALL = ["env=glyph_domains", "agent=mlp", "agent.d_model=32", "progress=false", "env.train_per_domain=60",
         "env.id_val_per_domain=20", "env.eval_per_domain=40"]


def test_domains_split_and_classes_are_uneven():
    cfg = compose_config(*SMALL)
    sets = gd.domain_sets(cfg.env)
    assert len(gd.domains(cfg.env)) == 16 and sets["train"] == sets["id_val"] == list(range(8))
    assert sets["val"] == list(range(8, 12)) and sets["test"] == list(range(12, 16))
    data = gd.make_data(cfg.env)
    images, labels, where = data["train"]
    assert images.dtype == torch.uint8 and images.shape == (8 * 60, 1, 28, 28)
    assert set(where.tolist()) == set(sets["train"]) and set(data["test"][2].tolist()) == set(sets["test"])
    # classes unevenly spread over domains: some class is most of one domain and rare in another
    shares = torch.stack([torch.bincount(labels[where == d], minlength=10).float() / 60 for d in sets["train"]])
    assert shares.max() > 0.4 and (shares.max(0).values - shares.min(0).values).max() > 0.3
    # a pure function of the data fields: regenerated (cache bypassed) it is identical
    again = gd._generate.__wrapped__(gd._key(cfg.env))
    assert torch.equal(again["val"][0], data["val"][0]) and torch.equal(again["test"][1], data["test"][1])
    # the domains differ: noisy domains have more ink-free pixels lit than clean ones
    noisy = [d for d, info in enumerate(gd.domains(cfg.env)) if info[3] > 0 and d in sets["train"]]
    lit = lambda d: (images[where == d] > 60).float().mean().item()  # noqa: E731
    assert min(lit(d) for d in noisy) > max(lit(d) for d in sets["train"] if d not in noisy)


def test_metrics_on_a_hand_example():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0])
    where = torch.tensor([0, 0, 0, 1, 1, 1])
    m = gd.classification_metrics(torch.nn.functional.one_hot(predicted, 3).float() * 5, labels, where)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1: class 0 p=1/2 r=1/2 -> 1/2; class 1 p=2/3 r=1 -> 4/5; class 2 p=1 r=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["worst_domain_accuracy"] == pytest.approx(2 / 3) and m["per_domain"] == pytest.approx({0: 2 / 3, 1: 2 / 3})


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="env.selection"):
        gd.make_data(compose_config(*SMALL, "env.selection=[test/accuracy]").env)
    with pytest.raises(ConfigError, match="env.train_rotations"):
        gd.make_data(compose_config(*SMALL, "env.train_rotations=3").env)


def test_learns_and_keeps_a_checkpoint_per_selection_metric(tmp_path):
    metrics = run(compose_config(*SMALL, "optim.steps=120", "env.eval_every=40", "env.batch_size=32"), tmp_path)
    assert metrics["eval/id_val/accuracy"] > 0.7  # 10 classes: chance is about 0.1-0.2 (uneven classes)
    assert metrics["test/test/accuracy"] > 0.3  # the unseen rotation is harder, but well above chance
    summary = json.loads((tmp_path / "selection.json").read_text())
    assert list(summary["selected"]) == ["val/accuracy", "val/macro_f1", "val/worst_domain_accuracy", "val/nll",
                                         "id_val/accuracy"]
    for metric in summary["selected"]:
        assert (tmp_path / ("best-" + metric.replace("/", "-") + ".pt")).is_file()
    assert set(summary["selected"]["val/nll"]["test"]) == {"test/accuracy", "test/macro_f1",
                                                           "test/worst_domain_accuracy", "test/nll"}
