"""The cluster-job path for real: scripts/ray_job_example.sh starts a loopback head node, submits
`python -m metarl.train ... runner=ray` with `ray job submit --working-dir .`, and the job succeeds."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ray_job_submit_against_a_local_head_node():
    env = dict(os.environ, PYTHON=sys.executable, NUM_CPUS="2")
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        ["bash", "scripts/ray_job_example.sh", "env=cartpole", "agent=lstm", "agent.d_model=32", "runner=ray",
         "runner.num_actors=1", "runner.envs_per_actor=4", "impala.batch_size=4", "impala.total_frames=1000",
         "impala.eval_episodes=0", "progress=false", "threads=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "succeeded" in output and "cartpole/lstm" in output, output[-4000:]
