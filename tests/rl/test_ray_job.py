"""The cluster-job path for real: scripts/ray_job_example.sh starts a loopback head node, builds a wheel of
the checkout, ships the installed package with the runtime env's `py_modules` and the checkout as the
working dir, submits `python -m metarl.train ... runner=ray` (an IMPALA job, and a few-shot job on Ray
Train), and the job succeeds running the shipped package (not this checkout, not the editable install)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


JOBS = {  # an IMPALA job (Ray actors) and a few-shot job (data-parallel Ray Train workers)
    "rl": (["env=cartpole", "agent=lstm", "agent.d_model=32", "runner=ray", "runner.num_actors=1",
            "runner.envs_per_actor=4", "impala.batch_size=4", "impala.total_frames=1000", "impala.eval_episodes=0"],
           "cartpole/lstm"),
    "fewshot": (["env=glyphs", "agent=srwm", "agent.num_layers=1", "env.glyph_classes=40", "env.batch_size=4",
                 "optim.steps=4", "env.eval_every=4", "env.eval_episodes=8", "env.test_episodes=8", "runner=ray",
                 "runner.num_workers=2", "runner.worker_cpus=0.5"],
                "glyphs/srwm"),
}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_ray_job_submit_against_a_local_head_node(job):
    arguments, name = JOBS[job]
    env = dict(os.environ, PYTHON=sys.executable, NUM_CPUS="2")
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        ["bash", "scripts/ray_job_example.sh", *arguments, "progress=false", "threads=1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stderr + result.stdout  # the job's own log (and why it failed) is on stdout: keep it last
    assert result.returncode == 0, output[-4000:]
    assert "succeeded" in output and name in output, output[-4000:]

    # The job imported metarl from the package Ray unpacked from py_modules (the script's probe also fails
    # the job if any metarl module came from elsewhere) ...
    shipped = re.search(r"\[metarl\] package imported from (\S+)", output)
    assert shipped, output[-4000:]
    package = Path(shipped.group(1))
    assert package.name == "metarl" and package.parent.parent.name == "py_modules_files", package
    assert ROOT not in package.parents, package
    # ... and ran in the shipped working dir, where Hydra wrote runs/ray-job.
    run_dir = re.search(r"\[metarl\] logs and checkpoint in (\S+)", output)
    assert run_dir, output[-4000:]
    assert Path(run_dir.group(1)).parts[-2:] == ("runs", "ray-job"), run_dir.group(1)
    assert "working_dir_files" in run_dir.group(1), run_dir.group(1)
