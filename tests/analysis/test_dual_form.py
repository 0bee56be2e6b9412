"""The dual form of linear layers: primal = dual after hundreds of real training steps (float64, 1e-6), for
SGD, momentum / Nesterov / dampening with a schedule and clipping, intermediate steps; refusals; spotlight."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metarl.analysis import DualFormRecorder, dual_output, load_record, pattern, spotlight
from metarl.errors import ConfigError
from metarl.testing import relative_error


def clusters(generator, n, classes=4, dim=12):
    """Unit vectors around ``classes`` fixed directions (seeded), labels, in float64."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=generator)
    x = centres[y] + 0.3 * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True), y


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)).double()


def train(model, optimizer, recorder, steps, scheduler=None, clip=None, snapshot_at=None):
    generator, snapshot = torch.Generator().manual_seed(1), None
    for step in range(1, steps + 1):
        x, y = clusters(generator, 8)
        optimizer.zero_grad()
        recorder.annotate(labels=y, task=int(step > steps // 2), ids=torch.arange(8) + 8 * step)
        F.cross_entropy(model(x), y).backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if step == snapshot_at:
            snapshot = [p.detach().clone() for p in model.parameters()]
    recorder.close()
    return snapshot


def check_primal_equals_dual(model, record, x):
    hidden = model[1](model[0](x))
    err0 = relative_error(model[0](x), dual_output(record["0"], x))
    err2 = relative_error(model[2](hidden), dual_output(record["2"], hidden))
    assert err0 < 1e-6 and err2 < 1e-6, (err0, err2)


def test_sgd_primal_equals_dual_after_hundreds_of_steps(tmp_path):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recorder = DualFormRecorder(model, optimizer, ["0", "2"], tmp_path, chunk_rows=500)
    train(model, optimizer, recorder, 300)
    record = load_record(tmp_path)
    assert len(record["0"].files) >= 4  # 2400 rows in chunks of about 500: bounded memory
    assert record["0"].num_steps == 300
    x, _ = clusters(torch.Generator().manual_seed(5), 50)
    check_primal_equals_dual(model, record, x)
    W, b = record["2"].weights()  # the primal weights rebuilt from W_0 and the record
    assert relative_error(model[2].weight, W) < 1e-6 and relative_error(model[2].bias, b) < 1e-6
    # and the layer really moved: the dual's attention part is not negligible
    moved = relative_error(model[0](x), x @ record["0"].weight0.T + record["0"].bias0)
    assert moved > 0.05


def test_momentum_nesterov_schedule_clipping_and_intermediate_steps(tmp_path):
    for i, (nesterov, dampening) in enumerate([(False, 0.0), (False, 0.3), (True, 0.0)]):
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov, dampening=dampening)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + 0.01 * s))
        recorder = DualFormRecorder(model, optimizer, ["0", "2"], tmp_path / str(i), chunk_rows=300)
        snapshot = train(model, optimizer, recorder, 200, scheduler, clip=0.5, snapshot_at=120)
        record = load_record(tmp_path / str(i))
        assert (record["0"].scale_w < 1).any()  # clipping was active on some steps
        x, _ = clusters(torch.Generator().manual_seed(5), 40)
        check_primal_equals_dual(model, record, x)
        W0, b0 = snapshot[0], snapshot[1]  # the first layer as it was after step 120
        assert relative_error(x @ W0.T + b0, dual_output(record["0"], x, until_step=120)) < 1e-6


def test_sequence_inputs_and_labels_broadcast_over_time(tmp_path):
    torch.manual_seed(0)
    layer = nn.Linear(5, 3).double()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.5)
    with DualFormRecorder(layer, optimizer, [""], tmp_path) as recorder:
        for step in range(40):
            x = torch.randn(4, 7, 5, dtype=torch.float64)  # [B, T, in]
            optimizer.zero_grad()
            recorder.annotate(labels=torch.arange(4))
            (layer(x).sin().sum() + layer(x[:, :2]).pow(2).mean()).backward()  # two calls in one step
            optimizer.step()
    record = load_record(tmp_path)[""]
    x = torch.randn(6, 5, dtype=torch.float64)
    assert relative_error(layer(x), dual_output(record, x)) < 1e-6
    labels = torch.cat([chunk["label"] for chunk in record.chunks()])
    assert labels[:28].tolist() == [b for b in range(4) for _ in range(7)]  # first call: label per example
    assert labels[28:36].tolist() == [b for b in range(4) for _ in range(2)]  # second call: the same examples


@pytest.mark.parametrize("make, match", [
    (lambda p: torch.optim.Adam(p, lr=1e-3), "Adam"),
    (lambda p: torch.optim.AdamW(p, lr=1e-3), "AdamW"),
    (lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=1e-4), "weight_decay"),
])
def test_refused_optimisers_say_why(tmp_path, make, match):
    model = mlp()
    with pytest.raises(ConfigError, match=match) as err:
        DualFormRecorder(model, make(model.parameters()), ["0"], tmp_path)
    assert "W_0" in str(err.value)  # the reason: the weights are no longer W_0 plus attention


def test_weight_penalty_in_the_loss_is_refused(tmp_path):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recorder = DualFormRecorder(model, optimizer, ["0"], tmp_path)
    x, y = clusters(torch.Generator().manual_seed(0), 8)
    (F.cross_entropy(model(x), y) + 1e-2 * model[0].weight.pow(2).sum()).backward()
    with pytest.raises(ConfigError, match="weight penalty"):
        optimizer.step()


def test_spotlight_top_patterns_and_masses(tmp_path):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    recorder = DualFormRecorder(model, optimizer, ["0"], tmp_path, chunk_rows=200)
    train(model, optimizer, recorder, 100)
    record = load_record(tmp_path)["0"]
    x, y = clusters(torch.Generator().manual_seed(5), 1)
    view = spotlight(record, x[0], k=6)
    # brute force over every stored pattern
    keys = torch.cat([c["x"] for c in record.chunks()])
    labels = torch.cat([c["label"] for c in record.chunks()])
    attention = keys @ x[0]
    assert [t["row"] for t in view.top] == attention.topk(6).indices.tolist()
    assert view.top[0]["share"] == pytest.approx(attention.max().item() / attention.abs().sum().item())
    assert torch.equal(pattern(record, view.top[0]["row"]), keys[view.top[0]["row"]])
    assert sum(view.per_class.values()) == pytest.approx(1.0) and sum(view.per_task.values()) == pytest.approx(1.0)
    assert set(view.per_task) == {0, 1}
    # the nearest cluster's patterns dominate: the top patterns share the query's label
    assert sum(t["label"] == y.item() for t in view.top) >= 5
    assert view.per_class[y.item()] == max(view.per_class.values())
    assert view.top[0]["id"] >= 8 and view.top[0]["step"] == (view.top[0]["id"] // 8)
    early = spotlight(record, x[0], k=3, until_step=50)
    assert all(t["step"] <= 50 for t in early.top) and set(early.per_task) == {0}
    batch = spotlight(record, torch.cat([x, x]), k=6)  # several queries in one pass
    assert len(batch) == 2 and [t["row"] for t in batch[1].top] == [t["row"] for t in view.top]
    by_effect = spotlight(record, x[0], k=3, by="contribution")
    assert len(by_effect.top) == 3 and by_effect.top[0]["score"] >= by_effect.top[-1]["score"]
