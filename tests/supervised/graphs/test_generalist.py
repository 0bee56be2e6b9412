"""env=clrs/multi: one processor shared by several algorithms, per-algorithm metrics; env=clrs/<algorithm> presets."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from metarl.errors import ConfigError
from metarl.supervised.graphs import SPECS, EncodeProcessDecode, Generalist, collate, expand_algorithms, sample
from metarl.supervised.graphs.task import GeneralistTask
from metarl.train import compose_config
from tests.supervised.helpers import config, train

THREE = "env.algorithms=[bfs,minimum,binary_search]"
SMALL = ("env.hidden=16", "env.batch_size=4", "env.val_examples=4", "env.test_examples=4", "env.test_size=8",
         "env.train_sizes=[4,7]")


def test_generalist_trains_with_per_algorithm_metrics():
    metrics = train("clrs/multi", THREE, *SMALL, "optim.steps=6", "env.eval_every=3", "log_every=1")
    algorithms = ["bfs", "minimum", "binary_search"]
    for algorithm in algorithms:
        assert 0.0 <= metrics[f"test/test/{algorithm}/score"] <= 1.0
        assert f"eval/val/{algorithm}/score" in metrics and f"losses/{algorithm}" in metrics
    assert "test/test/bfs/pi_accuracy" in metrics and "test/test/minimum/min_accuracy" in metrics
    assert metrics["test/test/score"] == pytest.approx(np.mean([metrics[f"test/test/{a}/score"] for a in algorithms]))
    assert metrics["best/val/score@step"] in (3, 6)  # selected on the mean score


def test_one_processor_is_shared_and_each_algorithm_has_its_heads():
    task = GeneralistTask(config("clrs/multi", THREE, *SMALL, "env.memory=lstm"))
    torch.manual_seed(0)
    model = task.build_model()
    assert list(model.heads) == ["bfs", "minimum", "binary_search"]
    assert sum(p.numel() for p in model.processor.parameters()) == \
        sum(p.numel() for p in EncodeProcessDecode(SPECS["bfs"], 16).processor.parameters())
    batch = task.train_batch(1, torch.Generator().manual_seed(0))  # round robin: update 1 trains bfs
    assert batch.algorithm == "bfs"
    task.loss(model, batch, None).loss.backward()
    assert all(p.grad is not None for p in model.processor.parameters())
    assert all(p.grad is not None for p in model.memory.parameters())
    assert all(p.grad is None for p in model.heads["minimum"].parameters())


def test_generalist_runs_the_specialist_model_of_each_algorithm():
    """With a specialist's weights in its heads and processor, the generalist predicts what the specialist does."""
    torch.manual_seed(0)
    generalist = Generalist({a: SPECS[a] for a in ("dijkstra", "lcs_length")}, d=16).eval()
    specialist = EncodeProcessDecode(SPECS["lcs_length"], d=16).eval()
    specialist.encoders.load_state_dict(generalist.heads["lcs_length"].encoders.state_dict())
    specialist.decoders.load_state_dict(generalist.heads["lcs_length"].decoders.state_dict())
    specialist.processor.load_state_dict(generalist.processor.state_dict())
    rng = np.random.default_rng(0)
    batch = collate([sample("lcs_length", n, rng) for n in (5, 8)], SPECS["lcs_length"], "lcs_length")
    torch.testing.assert_close(generalist(batch)[0]["b"], specialist(batch)[0]["b"])


def test_schedules():
    task = GeneralistTask(config("clrs/multi", THREE, *SMALL))
    assert [task.algorithm_of(s, torch.Generator()) for s in range(1, 5)] == ["bfs", "minimum", "binary_search", "bfs"]
    task = GeneralistTask(config("clrs/multi", THREE, *SMALL, "env.schedule=random"))
    drawn = {task.algorithm_of(s, torch.Generator().manual_seed(s)) for s in range(30)}
    assert drawn == {"bfs", "minimum", "binary_search"}


def test_algorithm_names_and_categories():
    assert expand_algorithms(["searching", "bfs", "minimum"]) == ["minimum", "binary_search", "bfs"]
    assert GeneralistTask(config("clrs/multi")).algorithms == list(SPECS)  # the default: all 13
    with pytest.raises(ConfigError, match="env.algorithms.*quicksortt"):
        GeneralistTask(config("clrs/multi", "env.algorithms=[bfs,quicksortt]"))
    with pytest.raises(ConfigError, match="env.schedule"):
        GeneralistTask(config("clrs/multi", "env.schedule=sometimes"))


def test_clrs_and_graphs_presets_are_one():
    for algorithm in SPECS:  # env=graphs/<algorithm> is env=clrs/<algorithm> under its earlier name
        clrs, graphs = compose_config(f"env=clrs/{algorithm}"), compose_config(f"env=graphs/{algorithm}")
        assert clrs.env.algorithm == algorithm and clrs.env.family == "graphs" and clrs.env.name == f"clrs_{algorithm}"
        assert {**graphs.env, "name": None} == {**clrs.env, "name": None} and graphs.optim == clrs.optim


def test_clrs_multi_runs_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "metarl.train", "env=clrs/multi", "env.algorithms=[bfs,minimum]", *SMALL,
         "optim.steps=2", "env.eval_every=2", "progress=false", "threads=1", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/test/bfs/score=" in result.stdout and "test/test/minimum/score=" in result.stdout
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "best-val-score.pt").exists()
