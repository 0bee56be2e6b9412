"""IMPALA end to end, learning for real: CartPole, the memory env, and procgen with two games."""
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metarl.engine.logging import read_metrics
from metarl.train import compose_config, run

SMALL = ["agent.d_model=64", "agent.num_heads=4", "agent.num_layers=1", "agent.d_ff=128"]


def config(*overrides):
    return compose_config("progress=false", "threads=1", *overrides)


def train_return(tmp_path, *overrides):
    result = run(config(*overrides), tmp_path)
    (task, stats), = [(k, v) for k, v in result["evaluation"].items() if k.startswith("train/trained/")]
    return stats["mean"], result


@pytest.mark.parametrize("agent", ["lstm", "srwm"])
def test_cartpole_is_solved(tmp_path, agent):
    mean, _ = train_return(tmp_path, "env=cartpole", f"agent={agent}", *SMALL, "runner.schedule=lockstep",
                           "impala.total_frames=200000", "impala.eval_episodes=20")
    assert mean >= 195, f"{agent}: mean return {mean:.1f} over 20 episodes"


@pytest.mark.parametrize("agent, solves", [("srwm", True), ("lstm", True), ("mlp", False)])
def test_memory_env_needs_memory(tmp_path, agent, solves):
    mean, _ = train_return(tmp_path, "env=memory", f"agent={agent}", "runner.schedule=lockstep")
    if solves:
        assert mean >= 0.8, f"{agent} should remember the cue: mean return {mean:.2f}"
    else:
        assert mean <= 0.5, f"a memoryless agent cannot beat chance (0.25) by much: {mean:.2f}"


def test_procgen_two_games_log_per_game_returns(tmp_path):
    """Threads (actor and learner overlapping), real procgen, tensorboard files read back."""
    result = run(config("env=procgen", "env.games=[leaper,bigfish]", "env.num_levels=1", "agent=srwm",
                        "runner.envs_per_actor=4", "impala.batch_size=4", "impala.unroll_length=25",
                        "impala.total_frames=1000", "impala.eval_episodes=0"), tmp_path)
    assert result["frames"] >= 1000
    tags = set(EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"])
    assert {"charts/episodic_return/leaper", "charts/episodic_return/bigfish", "charts/frames_per_s",
            "charts/learning_rate", "losses/total", "losses/policy", "losses/baseline", "losses/entropy"} <= tags
    rows = read_metrics(tmp_path)
    assert rows[-1]["step"] == result["frames"] and "charts/frames_per_s" in rows[-1]
    assert (tmp_path / "learning_curve.png").stat().st_size > 0 and (tmp_path / "curves.png").is_file()


def test_pipeline_schedule_is_reproducible_from_the_seed(tmp_path):
    """runner.schedule=pipeline overlaps acting and learning and still gives the same run twice: the same
    weights after the updates and the same logged losses (real procgen, SRWM with resets in the batch)."""
    common = ["env=procgen", "env.games=[starpilot]", "env.num_levels=3", "agent=srwm", *SMALL,
              "runner.envs_per_actor=4", "impala.batch_size=8", "runner.num_actors=2", "impala.unroll_length=16",
              "impala.total_frames=1536", "impala.eval_episodes=0", "runner.schedule=pipeline"]
    periodic = ["impala.eval_every_frames=512", "impala.eval_interval_episodes=1", "impala.eval_envs=2"]
    runs = [run(config(*common), tmp_path / "a"),  # b also evaluates during training: that changes nothing
            run(config(*common, *periodic), tmp_path / "b")]
    assert runs[0]["updates"] == runs[1]["updates"] == 12
    assert [r["step"] for r in read_metrics(tmp_path / "b") if "eval/train_levels/return" in r] == [512, 1024, 1536]
    weights = [torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["model"] for name in ("a", "b")]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), f"{key} differs between two runs of one seed"
    losses = [[row["losses/total"] for row in read_metrics(tmp_path / name) if "losses/total" in row]
              for name in ("a", "b")]
    assert losses[0] == losses[1] and len(losses[0]) >= 2
    lockstep = run(config(*common[:-1], "runner.schedule=lockstep"), tmp_path / "c")  # lag 0: another run
    other = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)["model"]
    assert lockstep["updates"] == 12 and any(not torch.equal(weights[0][k], other[k]) for k in other)


def test_periodic_evaluation_keeps_the_best_model_of_each_selection_metric(tmp_path):
    """impala.eval_every_frames: eval/<split>_levels/return during training, best-<set>-<metric>.pt per
    selection metric, tested on the unseen levels at the end; selection.json read back by the report."""
    from metarl.engine.selection import read_run, selection_table

    result = run(config("env=procgen", "env.games=[starpilot]", "env.num_levels=3", "agent=srwm", *SMALL,
                        "runner.envs_per_actor=4", "impala.batch_size=4", "impala.unroll_length=16",
                        "impala.total_frames=768", "runner.schedule=lockstep", "impala.eval_every_frames=256",
                        "impala.eval_interval_episodes=2", "impala.eval_envs=2", "impala.eval_episodes=2",
                        "impala.selection=[train_levels/return,test_levels/return/starpilot]"), tmp_path)
    rows = [r for r in read_metrics(tmp_path) if "eval/train_levels/return" in r]
    assert [r["step"] for r in rows] == [256, 512, 768]
    assert all({"eval/test_levels/return", "eval/train_levels/return/starpilot"} <= set(r) for r in rows)
    for metric, key in (("train_levels/return", "eval/train_levels/return"),
                        ("test_levels/return/starpilot", "eval/test_levels/return/starpilot")):
        best_row = max(rows, key=lambda r: r[key])  # the first of equal values is kept
        payload = torch.load(tmp_path / f"best-{metric.replace('/', '-')}.pt", weights_only=True)
        assert payload["counters"]["frames"] == result["selected"][metric]["step"] == best_row["step"]
        assert result["selected"][metric]["value"] == best_row[key]
    record = read_run(tmp_path)
    assert record.kind == "rl" and [c.step for c in record.checkpoints] == [256, 512, 768]
    assert set(record.selected) == {"train_levels/return", "test_levels/return/starpilot", "last"}
    assert set(record.selected["train_levels/return"].test) == {"test_levels/trained_return/starpilot"}
    assert selection_table([record])["rows"] == ["train_levels/return", "test_levels/return/starpilot", "last"]
    with pytest.raises(Exception, match="impala.selection"):
        run(config("env=cartpole", "impala.eval_every_frames=100", "impala.selection=[test_levels/return]"),
            tmp_path / "bad")


def test_resume_keeps_the_best_models_of_the_periodic_evaluation(tmp_path):
    common = ["env=procgen", "env.games=[starpilot]", "env.num_levels=3", "agent=srwm", *SMALL,
              "runner.envs_per_actor=4", "impala.batch_size=4", "impala.unroll_length=16", "runner.schedule=lockstep",
              "impala.eval_every_frames=256", "impala.eval_interval_episodes=1", "impala.eval_envs=2"]
    run(config(*common, "impala.total_frames=512", "impala.eval_episodes=0"), tmp_path / "a")
    saved = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["best"]
    first = [r for r in read_metrics(tmp_path / "a") if "eval/train_levels/return" in r]
    best_first = max(first, key=lambda r: r["eval/train_levels/return"])
    assert saved == {"train_levels/return": best_first["eval/train_levels/return"],
                     "train_levels/return@frames": best_first["step"]}
    result = run(config(*common, "impala.total_frames=768", "impala.eval_episodes=1",
                        f"resume={tmp_path / 'a' / 'checkpoint.pt'}"), tmp_path / "b")
    later = [r for r in read_metrics(tmp_path / "b") if "eval/train_levels/return" in r]
    assert [r["step"] for r in later] == [768]
    chosen = result["selected"]["train_levels/return"]
    best = max(first + later, key=lambda r: r["eval/train_levels/return"])  # over both runs
    assert chosen["step"] == best["step"] and chosen["value"] == best["eval/train_levels/return"]
    assert (tmp_path / "b" / "best-train_levels-return.pt").is_file()


def test_resume_continues_counters_and_optimiser(tmp_path):
    common = ["env=cartpole", "agent=lstm", *SMALL, "impala.eval_episodes=0", "runner.schedule=lockstep"]
    first = run(config(*common, "impala.total_frames=1000"), tmp_path / "a")
    checkpoint = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert checkpoint["counters"]["frames"] == first["frames"] and checkpoint["optimizer"]["state"]
    second = run(config(*common, "impala.total_frames=2000", f"resume={tmp_path / 'a' / 'checkpoint.pt'}"),
                 tmp_path / "b")
    assert second["updates"] == first["updates"] + (second["frames"] - first["frames"]) // 320


def test_bad_values_fail_at_start(tmp_path):
    with pytest.raises(ValueError, match="memory"):
        run(config("env=procgen", "env.games=[bigfish]", "env.distribution_mode=memory"), tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        run(config("env=cartpole", "impala.batch_size=10"), tmp_path)
    with pytest.raises(ValueError, match="runner.schedule"):
        run(config("env=cartpole", "runner.schedule=sometimes"), tmp_path)
