"""Learning on glyphs, 5-way 1-shot: SRWM, DeltaNet and ProtoNet reach a test accuracy that a model
ignoring the support set cannot (chance is 20%). Tiny models, fixed seed, a few hundred updates.

The sequence cores first sit at chance for 150-300 updates, then learn to bind images to the labels fed
with them; 500 updates of 32 episodes gave 46-60% test accuracy over seeds 0, 1, 2 for both cores."""
import pytest

from metarl.train import compose_config, run

SMALL = ["env.backbone_channels=[16,16,16,16]", "env.batch_size=32", "optim.lr=1e-3", "env.eval_episodes=100",
         "env.test_episodes=500", "progress=false", "threads=1", "seed=0"]
CORE = ["agent.d_model=64", "agent.num_layers=1", "agent.num_heads=4", "agent.d_ff=128"]


@pytest.mark.parametrize("agent, overrides", [
    ("srwm", [*CORE, "optim.steps=500", "env.eval_every=500"]),
    ("delta", [*CORE, "optim.steps=500", "env.eval_every=500"]),
    ("protonet", ["optim.steps=60", "env.eval_every=60"]),
])
def test_five_way_one_shot_on_glyphs(tmp_path, agent, overrides):
    cfg = compose_config("env=glyphs", f"agent={agent}", *SMALL, *overrides)
    metrics = run(cfg, tmp_path)
    assert metrics["test/test/accuracy"] - 2 * metrics["test/test/ci95"] > 0.35, metrics
