"""Evaluation without bias toward short episodes: every slot plays a fixed quota of complete episodes."""
import numpy as np
import pytest

from metarl.envs.base import BatchedEnv, EpisodeTracker
from metarl.rl.evaluate import evaluate, summarise


class TwoLengths(BatchedEnv):
    """Slot 0's episodes last 1 step (return 0), slot 1's last 10 steps (return 10): 'the first episodes to
    finish' would be almost all from slot 0."""

    def __init__(self):
        self.num_envs, self.obs_shape, self.obs_dtype, self.num_actions = 2, (1,), np.float32, 2
        self.task_names, self.task_ids = ["game"], np.zeros(2, dtype=np.int64)
        self.tracker = EpisodeTracker(self.task_names, self.task_ids)
        self.t = np.zeros(2, dtype=np.int64)

    def reset(self, seed=None):
        self.t[:] = 0
        self.tracker.reset()
        return np.zeros((2, 1), np.float32)

    def step(self, actions):
        self.t += 1
        reward = np.array([0.0, 1.0])
        done = np.array([True, self.t[1] % 10 == 0])
        return np.zeros((2, 1), np.float32), reward, done, self.tracker.update(reward, done)

    def close(self):
        pass


def test_each_slot_plays_its_quota():
    result = evaluate(TwoLengths(), None, episodes=6)["game"]
    assert result["episodes"] == 6 and sorted(result["returns"]) == [0, 0, 0, 10, 10, 10]
    assert result["mean"] == pytest.approx(5.0)
    assert result["stderr"] == pytest.approx(np.std([0, 0, 0, 10, 10, 10], ddof=1) / 6 ** 0.5)


def test_summary_of_few_episodes():
    assert summarise([3.0])["stderr"] == 0.0 and summarise([1.0, 3.0])["std"] == pytest.approx(2 ** 0.5)
