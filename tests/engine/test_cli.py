"""``python -m metarl.train`` as a new user meets it: errors they cause print one line naming the thing and
exit 2 without a traceback; Ctrl-C / SIGTERM save a checkpoint that resumes."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from metarl.engine.interrupt import StopRequest


def train(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "metarl.train", "progress=false", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, named", [
    (["env=omniglot", "env.root=/nonexistent/omniglot"], "/nonexistent/omniglot"),  # a missing dataset root
    (["env=procgen", "env.games=[coinrn]"], "coinrn"),                                # an unknown game
    (["env=recall", "optim.steps=many"], "optim.steps"),                               # a bad type
    (["env=recall", "agent=srwn"], "srwn"),                                            # an unknown agent config
    (["env=recall", "agent.name=srwn"], "srwn"),                                       # an unknown core name
    (["env=recall", "optim.schedule=sometimes"], "optim.schedule"),                    # a value outside the choices
])
def test_user_errors_exit_2_with_one_message(tmp_path, args, named):
    result = train(*args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert named in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]


def test_corrupt_resume_file(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x00" * 100)
    result = train("env=recall", f"resume={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "is not a metarl checkpoint" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "metarl.train", "env=recall", "agent=lstm", "agent.d_model=16",
                             "optim.steps=1000000", "log_every=1", "progress=false", f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "slow"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-3000:]
    assert f"checkpoint saved to {run_dir / 'checkpoint.pt'}" in stderr and "Traceback" not in stderr
    step = torch.load(run_dir / "checkpoint.pt", weights_only=True)["counters"]["step"]
    assert step >= 1
    result = train("env=recall", "agent=lstm", "agent.d_model=16", f"optim.steps={step + 2}",
                   f"resume={run_dir / 'checkpoint.pt'}", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["counters"]["step"] == step + 2


def test_second_ctrl_c_exits_at_once():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.requested and stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
