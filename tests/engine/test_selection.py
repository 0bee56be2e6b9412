"""Model selection across runs: what the loop records (selection.json, test sets at every evaluation), the
report's table and rank correlations on engine runs and RL runs, and the report script."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from metarl.engine import MetricLogger, Task, TaskConfig, StepOutput, read_metrics, register_task
from metarl.engine.selection import rank_correlations, read_run, selection_table, spearman
from metarl.errors import MissingPathError
from metarl.train import compose_config, run

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "selection_report.py"


@dataclass
class ShiftConfig(TaskConfig):
    """Two Gaussian classes; validation and test sets shifted by different amounts (a test-only task)."""

    name: str = "shift"  # run name
    family: str = "selection_shift"  # registered task
    batch_size: int = 16  # examples per update
    eval_every: int = 5  # updates between evaluations


class ShiftTask(Task):
    eval_sets = ["val"]
    test_sets = ["test"]
    selection = {"val/accuracy": "max", "val/loss": "min"}

    def __init__(self, cfg):
        self.cfg = cfg

    def build_model(self):
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    def _data(self, generator, n, shift=0.0):
        y = torch.randint(0, 2, (n,), generator=generator)
        x = torch.randn(n, 4, generator=generator) + (2 * y[:, None] - 1) * 0.8 + shift
        return x, y

    def train_batch(self, step, generator):
        return self._data(generator, self.cfg.env.batch_size)

    def loss(self, model, batch, state):
        x, y = batch
        return StepOutput(nn.functional.cross_entropy(model(x), y), count=len(y))

    def evaluate(self, model, name, progress=False):
        x, y = self._data(torch.Generator().manual_seed(3), 200, shift={"val": 0.3, "test": 0.6}[name])
        logits = model(x)
        return {"accuracy": (logits.argmax(-1) == y).float().mean().item(),
                "loss": nn.functional.cross_entropy(logits, y).item()}


register_task("selection_shift", ShiftConfig)(ShiftTask)


def test_spearman_matches_the_definition_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)  # scipy.stats.spearmanr
    assert spearman([3, 1, 2, 2, 5, 4], [1, 2, 2, 3, 6, 5]) == pytest.approx(0.6029411764705883)
    assert math.isnan(spearman([1, 2], [2, 1])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.fixture(scope="module")
def engine_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    folders = []
    for seed in (0, 1, 2):
        folder = root / f"seed{seed}"
        run(compose_config("env=selection_shift_schema", "agent=mlp", "progress=false", "optim=sgd", "optim.lr=0.05",
                           "optim.steps=30", f"seed={seed}", "env.eval_test_sets=true"), folder)
        folders.append(folder)
    return folders


def test_the_loop_records_each_selection_and_the_test_sets_at_every_evaluation(engine_runs):
    folder = engine_runs[0]
    summary = json.loads((folder / "selection.json").read_text())
    assert summary["primary"] == "val/accuracy" and summary["test_sets"] == ["test"]
    rows = read_metrics(folder)
    evals = [r for r in rows if "eval/val/accuracy" in r]
    assert [r["step"] for r in evals] == [5, 10, 15, 20, 25, 30]
    assert all("eval/test/accuracy" in r for r in evals)  # env.eval_test_sets
    for metric, file in (("val/accuracy", "best-val-accuracy.pt"), ("val/loss", "best-val-loss.pt")):
        saved = torch.load(folder / file, weights_only=True)
        info = summary["selected"][metric]
        assert info["step"] == saved["counters"]["step"] and info["value"] == saved["best"][metric]
        at_step = next(r for r in evals if r["step"] == info["step"])
        assert info["test"]["test/accuracy"] == pytest.approx(at_step["eval/test/accuracy"])  # same model, same set
    final = {k: v for r in rows for k, v in r.items() if k.startswith("test/")}
    assert final["test/test/accuracy"] == pytest.approx(summary["selected"]["val/accuracy"]["test"]["test/accuracy"])
    assert final["test/test/loss/by-val-loss"] == pytest.approx(summary["selected"]["val/loss"]["test"]["test/loss"])


def test_env_selection_chooses_the_metrics_for_any_engine_task(tmp_path):
    """env.selection overrides the task's own selection (directions from the metric names); an unmeasured
    metric stops the run with a message naming the metrics there are."""
    common = ["env=selection_shift_schema", "agent=mlp", "progress=false", "optim=sgd", "optim.lr=0.05",
              "optim.steps=10"]
    run(compose_config(*common, "env.selection=[val/loss]"), tmp_path / "a")
    summary = json.loads((tmp_path / "a" / "selection.json").read_text())
    assert summary["selection"] == {"val/loss": "min"} and summary["primary"] == "val/loss"
    assert (tmp_path / "a" / "best-val-loss.pt").is_file() and not (tmp_path / "a" / "best-val-accuracy.pt").exists()
    with pytest.raises(Exception, match="val/accuracy.*val/loss"):
        run(compose_config(*common, "env.selection=[val/f1]"), tmp_path / "b")


def test_table_and_correlations_over_engine_runs(engine_runs):
    runs = [read_run(f) for f in engine_runs]
    assert all(len(r.checkpoints) == 6 and r.checkpoints[0].test for r in runs)
    table = selection_table(runs)
    assert table["rows"] == ["val/accuracy", "val/loss"] and "test/accuracy" in table["columns"]
    cell = table["cells"]["val/accuracy"]["test/accuracy"]
    values = [r.selected["val/accuracy"].test["test/accuracy"] for r in runs]
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(sum(values) / 3)
    assert set(table["effect"]["test/accuracy"]) >= {"spread", "seed_std", "paired_t", "moves"}
    correlations = rank_correlations(runs)
    rho = correlations["val/accuracy"]["test/accuracy"]
    assert rho["n"] == 18  # 6 checkpoints x 3 runs
    # a shifted copy of the same distribution: validation ranks the checkpoints like test does
    assert rho["spearman"] > 0.5
    assert correlations["val/loss"]["test/loss"]["spearman"] > 0.5


def test_rl_runs_compare_training_levels_with_unseen_levels(tmp_path):
    folders = []
    for i, (train, test) in enumerate([(1.0, 0.5), (2.0, 1.5), (3.0, 1.0), (4.0, 2.5)]):
        folder = tmp_path / f"rl{i}"
        logger = MetricLogger(folder)  # what metarl.rl.monitor.final_evaluation logs
        logger.log(1000, {"charts/episodic_return/bigfish": train, "losses/total": 0.1})
        logger.log(2000, {"test/train_levels/trained_return/bigfish": train, "test/test_levels/trained_return/bigfish": test,
                          "test/train_levels/random_return/bigfish": 0.3, "test/test_levels/random_return/bigfish": 0.3})
        logger.close()
        folders.append(folder)
    runs = [read_run(f) for f in folders]
    assert {r.kind for r in runs} == {"rl"}
    rho = rank_correlations(runs)["train_levels/trained_return/bigfish"]["test_levels/trained_return/bigfish"]
    assert rho["n"] == 4 and rho["spearman"] == pytest.approx(0.8)
    table = selection_table(runs)
    assert table["rows"] == ["last"]
    assert table["cells"]["last"]["test_levels/trained_return/bigfish"]["mean"] == pytest.approx(1.375)


def test_report_script_writes_markdown_json_and_png(engine_runs, tmp_path):
    out = tmp_path / "report" / "selection"
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, engine_runs), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| selected by |" in done.stdout and "Spearman" in done.stdout
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["table"]["rows"] == ["val/accuracy", "val/loss"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    with pytest.raises(MissingPathError, match="metrics.jsonl"):  # the script prints it and exits 2
        read_run(tmp_path / "nothing")
