"""Optimisers, weight-decay groups, schedules (against their closed forms) and clipping."""
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from metarl.engine.optim import OptimConfig, Schedule, clip_gradients, make_optimizer, parameter_groups
from metarl.errors import ConfigError


def optim(**values):
    return OmegaConf.merge(OmegaConf.structured(OptimConfig), values)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.linear = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.gain = nn.Parameter(torch.ones(3))  # 1-d: no decay


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("rmsprop", torch.optim.RMSprop), ("sgd", torch.optim.SGD)])
def test_every_optimiser_builds_and_steps(name, cls):
    net = Net()
    opt = make_optimizer(net, optim(name=name, lr=0.1, momentum=0.9, weight_decay=0.01))
    assert isinstance(opt, cls)
    before = net.linear.weight.detach().clone()
    net.linear(net.embed(torch.tensor([1, 2]))).sum().backward()
    opt.step()
    assert not torch.equal(before, net.linear.weight)


def test_weight_decay_skips_norms_biases_and_embeddings():
    net = Net()
    decay, no_decay = parameter_groups(net, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(net.linear.weight)]
    skipped = {id(p) for p in no_decay["params"]}
    assert skipped == {id(net.embed.weight), id(net.linear.bias), id(net.norm.weight), id(net.norm.bias),
                       id(net.gain)}


def test_schedules_follow_their_formulas():
    S, lr = 100, 2.0
    constant = Schedule(optim(lr=lr), S)
    linear = Schedule(optim(lr=lr, schedule="linear", final_lr_ratio=0.1), S)
    cosine = Schedule(optim(lr=lr, schedule="cosine"), S)
    noam = Schedule(optim(lr=lr, schedule="noam", warmup_steps=16), S)
    warm = Schedule(optim(lr=lr, schedule="cosine", warmup_steps=10), S)
    for s in (1, 7, 50, 99, 100):
        assert constant.lr(s) == lr
        assert linear.lr(s) == pytest.approx(lr * (1 - 0.9 * s / S))
        assert cosine.lr(s) == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * s / S)))
        assert noam.lr(s) == pytest.approx(lr * min(s / 16, (16 / s) ** 0.5))
    assert warm.lr(5) == pytest.approx(lr * 0.5)  # half-way through the warm-up, cosine still at its peak
    assert warm.lr(10) == pytest.approx(lr) and warm.lr(100) == pytest.approx(0.0, abs=1e-12)
    assert max(range(1, 200), key=noam.lr) == 16


def test_apply_sets_every_group():
    net = Net()
    opt = make_optimizer(net, optim(weight_decay=0.1, schedule="linear"))
    lr = Schedule(optim(schedule="linear"), 10).apply(opt, 5)
    assert [g["lr"] for g in opt.param_groups] == [lr, lr] and lr == pytest.approx(1e-3 * 0.5)


def test_clipping_returns_the_norm_and_clips():
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    assert clip_gradients([p], 0) == pytest.approx(5.0) and torch.equal(p.grad, torch.tensor([3.0, 4.0]))
    assert clip_gradients([p], 1.0) == pytest.approx(5.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("values, field", [({"name": "adagrad"}, "optim.name"), ({"schedule": "step"}, "optim.schedule"),
                                           ({"schedule": "noam"}, "warmup_steps"), ({"lr": 0.0}, "optim.lr")])
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        make_optimizer(Net(), optim(**values))
