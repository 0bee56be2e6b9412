"""`python -m metarl.train`: config errors at start, a short run that learns, logs and resumes."""
import subprocess
import sys

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import metarl.configs
from metarl import cores
from metarl.engine.registry import TASKS, TRAINERS
from metarl.envs import ENV_OPTIONS
from metarl.train import compose_config, run

ENV_DIR = Path(metarl.configs.__file__).parent / "env"


def config(*overrides, env="recall"):
    return compose_config(f"env={env}", *overrides)


def test_default_config_is_the_main_job():
    cfg = compose_config()
    assert cfg.env.name == "procgen" and cfg.agent.name == "srwm" and cfg.agent.options.d_head == 16
    assert cfg.agent.num_layers == 2 and cfg.agent.num_heads == 8 and cfg.agent.d_ff == 512
    assert cfg.env.games == ["starpilot"] and cfg.impala.unroll_length == 20 and cfg.impala.batch_size == 16
    assert cfg.agent.options_by_core.srwm == {"input_softmax": True, "norm": "none", "beta_init": 0.0}
    assert cfg.optim.name == "rmsprop" and cfg.optim.lr == 6e-4 and cfg.optim.eps == 0.01 and cfg.optim.alpha == 0.99
    assert cfg.optim.schedule == "linear" and cfg.optim.final_lr_ratio == 0 and cfg.optim.grad_clip == 40


def test_env_presets_set_the_optimiser_and_the_command_line_wins():
    assert compose_config("env=recall").optim.lr == 3e-3
    assert compose_config("env=glyphs").optim.betas == [0.9, 0.995]
    assert compose_config("env=procgen", "optim=adam").optim.name == "adam"
    assert compose_config("env=cartpole", "optim.lr=5e-4").optim.lr == 5e-4


@pytest.mark.parametrize("overrides, message", [
    (["agent.nmae=3"], "nmae"),                # a wrong key names itself
    (["optim.steps=many"], "steps"),            # a wrong type names the field
    (["env.lr=1e-3"], "lr"),                    # the optimiser lives in optim, not env
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
              "env.length=12", "optim.lr=3e-3", "env.eval_every=60", "progress=false"]
    metrics = run(config(*common, "optim.steps=120"), tmp_path / "a")
    assert metrics["eval/valid/accuracy"] > 0.9  # chance is 1/8
    events = EventAccumulator(str(tmp_path / "a")).Reload()
    assert {"losses/total", "eval/valid/accuracy", "charts/tokens_per_s", "charts/learning_rate",
            "test/valid/accuracy"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/valid/accuracy")] == [60, 120]
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0

    checkpoint = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert checkpoint["counters"]["step"] == 120 and checkpoint["config"]["agent"]["name"] == "srwm"
    metrics = run(config(*common, "optim.steps=130", f"resume={tmp_path / 'a' / 'checkpoint.pt'}"), tmp_path / "b")
    assert metrics["step"] == 130  # continued from 120, not from 0
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["counters"]["step"] == 130


def test_missing_resume_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        run(config("resume=nowhere.pt"), tmp_path)


def test_command_line_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "metarl.train", "env=recall", "agent=lstm", "optim.steps=3", "env.eval_every=3",
         "progress=false", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recall/lstm" in result.stdout and (tmp_path / "checkpoint.pt").exists()


ENVS = sorted(p.relative_to(ENV_DIR).with_suffix("").as_posix() for p in ENV_DIR.rglob("*.yaml"))
AGENTS = sorted(p.stem for p in (ENV_DIR.parent / "agent").glob("*.yaml"))


@pytest.mark.parametrize("env", ENVS)
def test_every_env_config_composes_and_has_a_trainer(env):
    cfg = compose_config(f"env={env}")
    assert cfg.env.kind in TRAINERS
    if cfg.env.kind == "rl":
        assert cfg.env.type in ENV_OPTIONS and cfg.optim.name == "rmsprop"
    elif cfg.env.kind == "society":  # societies of agents: their own family registry (metarl.society.trainer)
        from metarl.society.trainer import FAMILIES
        assert cfg.env.family in FAMILIES
    else:
        assert cfg.env.family in TASKS and cfg.optim.steps > 0


@pytest.mark.parametrize("agent", AGENTS)
def test_every_agent_config_builds_its_core(agent):
    cfg = compose_config("env=recall", f"agent={agent}")
    if agent == "protonet":  # the few-shot baseline, not a core
        assert cfg.agent.name == "protonet"
        return
    core = cores.from_config(cfg.agent)
    y, _ = core(torch.randn(2, 3, cfg.agent.d_model))
    assert y.shape == (2, 3, cfg.agent.d_model)
