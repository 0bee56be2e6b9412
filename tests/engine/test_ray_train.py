"""runner=ray for engine tasks on a real local Ray (2 CPUs): data-parallel Ray Train workers give the
one-process update, a killed worker is replaced and the run resumes from its last checkpoint, and requests
the cluster cannot host fail at start."""
import json
import os
import signal
import threading
import time

import pytest
import ray
import torch

from metarl.engine.ray_train import worker_resources
from metarl.errors import ConfigError, ResourceError
from metarl.train import compose_config, run

SMALL = ["env=recall", "env.length=12", "env.batch_size=8", "env.eval_batches=1", "agent=lt", "agent.d_model=16",
         "agent.num_heads=2", "agent.num_layers=1", "agent.d_ff=32", "optim=sgd", "optim.lr=0.5",
         "progress=false", "threads=1"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def weights(folder):
    return torch.load(folder / "checkpoint.pt", weights_only=True)["model"]


def test_two_workers_make_the_one_process_update(local_ray, tmp_path):
    overrides = [*SMALL, "optim.steps=3", "env.eval_every=3"]
    run(compose_config(*overrides), tmp_path / "one")
    result = run(compose_config(*overrides, "runner=ray", "runner.num_workers=2", "runner.worker_cpus=0.5"),
                 tmp_path / "two")
    assert result["step"] == 3 and "eval/valid/accuracy" in result
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-5, atol=1e-6), key
    # the update is not trivially equal: half the batch (one worker's share alone) gives other weights
    run(compose_config(*[o.replace("env.batch_size=8", "env.batch_size=4") for o in overrides]), tmp_path / "half")
    half = weights(tmp_path / "half")
    assert any(not torch.allclose(one[k], half[k], rtol=1e-5, atol=1e-6) for k in one)
    # rank 0 alone wrote the run folder, with the one-process metric names
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert {"losses/total", "charts/learning_rate", "charts/tokens_per_s"} <= set().union(*rows)
    assert sum("losses/total" in r for r in rows) == sum(
        "losses/total" in json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines())


def ray_train_worker_pids():
    """The processes of the running Ray Train workers (their process title is ``ray::RayTrainWorker...``)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::RayTrainWorker"):
                    pids.append(int(entry))
        except (OSError, ValueError):
            continue
    return sorted(pids)


def test_a_killed_worker_is_replaced_and_the_run_continues_from_its_checkpoint(local_ray, tmp_path):
    folder = tmp_path / "run"
    killed = {}

    def kill_one_worker_after_a_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline:
            metrics = folder / "metrics.jsonl"
            if (folder / "checkpoint.pt").is_file() and metrics.is_file() and len(metrics.read_text().splitlines()) >= 6:
                pids = ray_train_worker_pids()
                if len(pids) == 2:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed["pid"] = pids[-1]
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_worker_after_a_checkpoint, daemon=True)
    killer.start()
    result = run(compose_config(*SMALL, "optim.steps=24", "env.eval_every=24", "log_every=1", "checkpoint_minutes=0",
                                "runner=ray", "runner.num_workers=2", "runner.worker_cpus=0.5", "runner.max_failures=1"),
                 folder)
    killer.join(timeout=5)
    assert killed, "the test did not find the workers to kill"
    assert result["step"] == 24
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    # the restarted group went on from the restored checkpoint: the counter continued and reached the end
    assert steps[-1] == 24 and max(steps) == 24
    assert any(later <= earlier for earlier, later in zip(steps, steps[1:])), "no restart seen in the log"
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["counters"]["step"] == 24


def test_requests_beyond_the_cluster_fail_fast():
    runner = compose_config(*SMALL, "runner=ray", "runner.num_workers=3", "runner.worker_cpus=1").runner
    with pytest.raises(ResourceError, match="num_workers"):
        worker_resources(runner, {"CPU": 2.0})
    gpu = compose_config(*SMALL, "runner=ray", "runner.use_gpu=true").runner
    with pytest.raises(ResourceError, match="GPU"):
        worker_resources(gpu, {"CPU": 2.0})
    assert worker_resources(compose_config(*SMALL, "runner=ray").runner, {"CPU": 2.0}) == {"CPU": 1.0}
    with pytest.raises(ConfigError, match="multiple of runner.num_workers"):
        run(compose_config(*SMALL, "env.batch_size=7", "runner=ray", "runner.num_workers=2"), "/tmp/unused-metarl-run")
