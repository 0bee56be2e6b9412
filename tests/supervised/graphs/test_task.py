"""env=graphs/<algorithm>: the model (masking, equivariance, memory cores), the CLRS metrics, a learning test."""
import numpy as np
import pytest
import torch

from metarl.errors import ConfigError
from metarl.supervised.graphs import SPECS, EncodeProcessDecode, collate, sample
from metarl.supervised.graphs.model import counts, score
from metarl.supervised.graphs.specs import Feature
from metarl.supervised.graphs.task import GraphAlgorithmTask, evaluate
from tests.supervised.helpers import config, train

SMALL = ("env.hidden=16", "env.batch_size=4", "env.val_examples=4", "env.test_examples=4", "env.test_size=8")


def batch(algorithm, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [sample(algorithm, n, rng) for n in sizes]


@pytest.mark.parametrize("algorithm", ["bfs", "lcs_length", "binary_search", "dfs"])
def test_padding_and_lengths_change_nothing(algorithm):
    """A trajectory in a padded batch of other sizes and lengths is predicted as when alone."""
    torch.manual_seed(0)
    model = EncodeProcessDecode(SPECS[algorithm], d=16, processor="triplet_gmpnn").eval()
    trajectories = batch(algorithm, [5, 9, 7])
    together, _ = model(collate(trajectories, SPECS[algorithm]))
    for b, t in enumerate(trajectories):
        alone, _ = model(collate([t], SPECS[algorithm]))
        n = len(t.inputs["pos"])
        for name, logits in alone.items():
            got = together[name][b]
            got = got[:n, :n] if got.dim() >= 2 and logits.shape[1:3] == (n, n) else got[:n]
            torch.testing.assert_close(got, logits[0], rtol=1e-4, atol=1e-4)


def test_model_is_equivariant():
    torch.manual_seed(0)
    model = EncodeProcessDecode(SPECS["minimum"], d=16, processor="triplet_gmpnn").eval()
    data = collate(batch("minimum", [8, 8]), SPECS["minimum"])
    perm = torch.randperm(8)
    permuted = collate(batch("minimum", [8, 8]), SPECS["minimum"])
    permuted.inputs = {k: v[:, perm] for k, v in permuted.inputs.items()}
    permuted.hints = {k: v[:, :, perm] for k, v in permuted.hints.items()}
    torch.testing.assert_close(model(permuted)[0]["min"], model(data)[0]["min"][:, perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("memory", ["lstm", "srwm", "delta"])
@pytest.mark.parametrize("hint_mode", ["teacher_forcing", "predicted"])
def test_memory_cores_over_steps(memory, hint_mode):
    """Any core carries each node's memory over the algorithm steps; gradients reach it."""
    task = GraphAlgorithmTask(config("graphs/dijkstra", *SMALL, f"env.memory={memory}", f"env.hint_mode={hint_mode}"))
    torch.manual_seed(0)
    model = task.build_model()
    out = task.loss(model, task.train_batch(1, torch.Generator().manual_seed(0)), None)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.metrics["losses/hint"] > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.memory.parameters() if p.requires_grad)
    assert set(evaluate(model.eval(), task.sets["test"])) == {"pi_accuracy", "score"}


def test_metrics_follow_clrs():
    mask = torch.ones(1, 4, dtype=torch.bool)
    f1 = counts(Feature("output", "node", "mask"), torch.tensor([[1.0, 1.0, -1.0, -1.0]]),
                torch.tensor([[1.0, 0.0, 1.0, 0.0]]), mask)
    assert score(Feature("output", "node", "mask"), f1) == ("f1", pytest.approx(0.5))
    pointer = Feature("output", "node", "pointer")
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, torch.arange(4), torch.tensor([0, 0, 1, 3])] = 5.0
    c = counts(pointer, logits, torch.tensor([[0, 0, 2, -1]]), mask)  # -1: no target
    assert score(pointer, c) == ("accuracy", pytest.approx(2 / 3))


def test_bad_names_fail_at_start():
    with pytest.raises(ConfigError, match="env.algorithm"):
        GraphAlgorithmTask(config("graphs/bfs", "env.algorithm=quicksortt"))
    with pytest.raises(ConfigError, match="env.memory"):
        GraphAlgorithmTask(config("graphs/bfs", "env.memory=lstmm"))


def test_bfs_needs_message_passing():
    """Trained on sizes 4-16, tested at 32: MPNN learns BFS parents; without message passing it cannot."""
    common = ("env.hidden=32", "env.batch_size=16", "optim.steps=150", "optim.lr=3e-3", "env.eval_every=50",
              "env.test_size=32", "env.test_examples=32", "env.val_examples=16", "log_every=50")
    mpnn = train("graphs/bfs", "env.processor=mpnn", *common)["test/test/pi_accuracy"]
    none = train("graphs/bfs", "env.processor=none", *common)["test/test/pi_accuracy"]
    assert mpnn > 0.95 and none < 0.85 and mpnn - none > 0.15, (mpnn, none)


@pytest.mark.parametrize("algorithm", sorted(SPECS))
def test_every_algorithm_trains_through_the_engine(algorithm):
    metrics = train(f"graphs/{algorithm}", *SMALL, "env.train_sizes=[4,7]", "optim.steps=2", "env.eval_every=2",
                    "log_every=1")
    outputs = [k for k, f in SPECS[algorithm].items() if f.stage == "output"]
    assert 0.0 <= metrics["test/test/score"] <= 1.0
    assert all(any(k.startswith(f"test/test/{name}_") for k in metrics) for name in outputs)
