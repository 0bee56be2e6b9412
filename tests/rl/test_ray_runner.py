"""runner=ray with a real local Ray instance (num_cpus=2): a short run, an actor killed mid-run, and a
resource request the cluster cannot meet."""
import pytest
import ray
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from metarl.rl.ray_runner import actor_resources, train_impala_ray
from metarl.train import compose_config


def config(*overrides):
    return compose_config(
        "progress=false", "threads=1", "env=cartpole", "agent=lstm", "agent.d_model=32", "runner=ray",
        "runner.num_actors=2", "runner.envs_per_actor=4", "impala.batch_size=8", "impala.eval_episodes=0",
        *overrides)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_short_run_with_two_actors_survives_a_killed_actor(local_ray, tmp_path):
    killed = {}

    def kill_one(learner, state):
        if learner.updates == 3 and not killed:
            killed["pid"] = ray.get(state["workers"][0].pid.remote())
            ray.kill(state["workers"][0])

    result = train_impala_ray(config("impala.total_frames=3000"), tmp_path, on_update=kill_one)
    assert killed and result["frames"] >= 3000
    assert result["actor_restarts"] >= 1
    events = EventAccumulator(str(tmp_path)).Reload()
    assert events.Scalars("charts/actor_restarts")[-1].value >= 1
    assert {"charts/frames_per_s", "losses/policy", "charts/episodic_return/CartPole-v1"} <= set(events.Tags()["scalars"])
    assert (tmp_path / "checkpoint.pt").exists()


def test_requests_beyond_the_cluster_fail_fast_with_a_message():
    cfg = config("runner.num_actors=2", "runner.actor_cpus=1")
    with pytest.raises(RuntimeError, match=r"asks for 2 actors x 1\.0 CPU.*has 2 CPU"):
        actor_resources(cfg.runner, {"CPU": 2.0})
    # the default sizes fractional CPUs from what the learner leaves
    assert actor_resources(config("runner.num_actors=3").runner, {"CPU": 2.0})["num_cpus"] == pytest.approx(0.33)
