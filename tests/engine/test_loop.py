"""The engine loop with a task defined entirely in this module (config dataclass, data, model, loss,
metric), registered and trained through ``metarl.train``: exact resume, carried state, several selection
metrics, the non-finite guard."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from metarl import cores
from metarl.engine import StepOutput, Task, TaskConfig, read_metrics, register_task
from metarl.errors import NonFiniteLossError
from metarl.train import compose_config, run


@dataclass
class ToyConfig(TaskConfig):
    """Predict the running sum's sign of a random sequence (needs memory); a test-only task."""

    name: str = "toy"  # run name
    family: str = "toy"  # registered task
    length: int = 6  # tokens per segment
    carry: bool = False  # carry the core state across batches (truncated BPTT)
    nan_at: int = 0  # make the loss NaN at this update (0: never)
    batch_size: int = 8  # sequences per update
    eval_every: int = 3  # updates between evaluations


class ToyTask(Task):
    throughput_unit = "tokens"
    eval_sets = ["valid", "noisy"]
    test_sets = ["valid"]
    selection = {"valid/accuracy": "max", "noisy/loss": "min"}

    def __init__(self, cfg):
        self.cfg, self.env = cfg, cfg.env
        self.carry_state = self.env.carry
        self.states_seen = []

    def build_model(self) -> nn.Module:
        model = nn.Module()
        model.embed = nn.Linear(1, 16)
        model.drop = nn.Dropout(0.3)  # draws from the global RNG: exact resume must restore it
        model.core = cores.from_config(self.cfg.agent)
        model.head = nn.Linear(16, 2)
        return model

    def _data(self, generator, n):
        x = torch.randn(n, self.env.length, 1, generator=generator)
        return x, (x.cumsum(1) > 0).long().squeeze(-1)

    def train_batch(self, step, generator):
        return self._data(generator, self.env.batch_size)

    def _forward(self, model, x, state=None):
        h, state = model.core(model.drop(model.embed(x)), state)
        return model.head(h), state

    def loss(self, model, batch, state):
        x, y = batch
        self.states_seen.append(state)
        logits, state = self._forward(model, x, state)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        if self.env.nan_at and len(self.states_seen) == self.env.nan_at:
            loss = loss * float("nan")
        return StepOutput(loss, count=x.numel() // 1, metrics={"accuracy": (logits.argmax(-1) == y).float().mean()},
                          state=state)

    def evaluate(self, model, name, progress=False):
        x, y = self._data(torch.Generator().manual_seed(7), 64)
        if name == "noisy":
            x = x + 0.1 * torch.randn(x.shape)  # uses the global RNG: the loop must put it back
        logits, _ = self._forward(model, x)
        return {"accuracy": (logits.argmax(-1) == y).float().mean().item(),
                "loss": nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()}


register_task("toy", ToyConfig)(ToyTask)

SMALL = ["env=toy_schema", "agent=lstm", "agent.d_model=16", "agent.num_layers=1", "progress=false",
         "optim.lr=1e-2"]


def parameters(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize("carry", [False, True])
def test_resume_is_exact(tmp_path, carry):
    common = [*SMALL, f"env.carry={carry}"]
    run(compose_config(*common, "optim.steps=14"), tmp_path / "full")
    run(compose_config(*common, "optim.steps=7"), tmp_path / "half")
    run(compose_config(*common, "optim.steps=14", f"resume={tmp_path / 'half' / 'checkpoint.pt'}"), tmp_path / "rest")
    full, rest = parameters(tmp_path / "full"), parameters(tmp_path / "rest")
    assert full.keys() == rest.keys()
    for name in full:
        assert torch.equal(full[name], rest[name]), name


def test_carried_state_is_passed_on_detached(tmp_path):
    cfg = compose_config(*SMALL, "env.carry=true", "optim.steps=4")
    task = ToyTask(cfg)
    from metarl.engine import train

    train(task, cfg, tmp_path)
    first, *later = task.states_seen
    assert first is None and all(s is not None for s in later)
    assert all(not t.requires_grad for s in later for t in torch.utils._pytree.tree_leaves(s))
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert "state" in saved["extra"]  # the carried state travels with the checkpoint


def test_learns_logs_and_selects_by_two_metrics(tmp_path):
    metrics = run(compose_config(*SMALL, "optim.steps=60", "env.eval_every=20"), tmp_path)
    assert metrics["test/valid/accuracy"] > 0.8  # a constant guess gets about 0.6
    for name in ("best-valid-accuracy.pt", "best-noisy-loss.pt", "checkpoint.pt", "curves.png", "metrics.jsonl"):
        assert (tmp_path / name).is_file(), name
    best = torch.load(tmp_path / "best-valid-accuracy.pt", weights_only=True)
    evals = [r for r in read_metrics(tmp_path) if "eval/valid/accuracy" in r]
    assert [r["step"] for r in evals] == [20, 40, 60]
    assert best["best"]["valid/accuracy"] == max(r["eval/valid/accuracy"] for r in evals)
    assert best["best"]["noisy/loss"] == min(r["eval/noisy/loss"] for r in evals[:best["counters"]["step"] // 20])
    assert "test/valid/accuracy/by-noisy-loss" in metrics
    rows = read_metrics(tmp_path)
    assert {"losses/total", "train/accuracy", "charts/learning_rate", "charts/tokens_per_s"} <= set(rows[0])
    assert rows[-1]["test/valid/accuracy"] == pytest.approx(metrics["test/valid/accuracy"])


def test_non_finite_loss_stops_with_the_state_before_it(tmp_path):
    with pytest.raises(NonFiniteLossError, match="optim.lr"):
        run(compose_config(*SMALL, "env.nan_at=3", "optim.steps=10"), tmp_path)
    saved = torch.load(tmp_path / "checkpoint_nonfinite.pt", weights_only=True)
    assert saved["counters"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
