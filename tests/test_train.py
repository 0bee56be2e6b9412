"""`python -m metarl.train`: config errors at start, a short run that learns, logs and resumes."""
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metarl.train import compose_config, run


def config(*overrides, env="recall"):
    return compose_config(f"env={env}", *overrides)


def test_default_config_is_the_main_job():
    cfg = compose_config()
    assert cfg.env.name == "procgen" and cfg.agent.name == "srwm" and cfg.agent.options.d_head == 16
    assert cfg.agent.num_layers == 2 and cfg.agent.num_heads == 8 and cfg.agent.d_ff == 512
    assert cfg.impala.lr == 6e-4 and cfg.impala.unroll_length == 50 and cfg.impala.rmsprop_eps == 0.01


@pytest.mark.parametrize("overrides, message", [
    (["agent.nmae=3"], "nmae"),                # a wrong key names itself
    (["env.steps=many"], "steps"),              # a wrong type names the field
    (["agent=srwn"], "srwn"),                   # an unknown config group option
])
def test_bad_overrides_fail_at_start(overrides, message):
    with pytest.raises(Exception, match=message):
        config(*overrides)


def test_unknown_core_value_is_named(tmp_path):
    cfg = config("agent.name=bogus")
    with pytest.raises(ValueError, match="agent.name='bogus'.*srwm"):
        run(cfg, tmp_path)


def test_short_run_learns_logs_and_resumes(tmp_path):
    common = ["agent.d_model=32", "agent.num_heads=2", "agent.d_ff=64", "agent.options.d_head=16",
              "env.length=12", "env.lr=3e-3", "env.eval_every=60", "progress=false"]
    metrics = run(config(*common, "env.steps=120"), tmp_path / "a")
    assert metrics["eval/accuracy"] > 0.9  # chance is 1/8
    events = EventAccumulator(str(tmp_path / "a")).Reload()
    assert {"losses/train", "eval/accuracy", "charts/sps"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/accuracy")] == [60, 120]

    checkpoint = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 120 and checkpoint["config"]["agent"]["name"] == "srwm"
    metrics = run(config(*common, "env.steps=130", f"resume={tmp_path / 'a' / 'checkpoint.pt'}"), tmp_path / "b")
    assert metrics["step"] == 130  # continued from 120, not from 0
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 130


def test_missing_resume_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        run(config("resume=nowhere.pt"), tmp_path)


def test_command_line_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "metarl.train", "env=recall", "agent=lstm", "env.steps=3", "env.eval_every=3",
         "progress=false", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recall/lstm" in result.stdout and (tmp_path / "checkpoint.pt").exists()
