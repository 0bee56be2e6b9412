"""What the RL runners share around their learning loop: metrics (the engine's vocabulary, tensorboard
and metrics.jsonl), recent returns per game, the progress bar, timed checkpoints, Ctrl-C / SIGTERM, the
final evaluation and the curves PNG. The runners own only how rollouts reach the learner.

    with RunMonitor(cfg, run_dir, learner, desc) as monitor:
        while learner.frames < total_frames:
            metrics = learner.learn(batch)
            monitor.after_update(metrics, batch)       # logs; checkpoints; raises Interrupted on a signal
    return monitor.finish(extra)                     # checkpoint, final evaluation, curves.png
"""
from __future__ import annotations

import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from ..engine.interrupt import StopRequest
from ..engine.logging import MetricLogger, plot_curves
from ..errors import Interrupted
from .evaluate import evaluate
from .impala import clone_for_acting
from .setup import make_rl_env, save_learner


class EpisodeStats:
    """Recent episode returns per task, for the progress bar."""

    def __init__(self, window: int = 20):
        self.recent = defaultdict(lambda: deque(maxlen=window))
        self.count = 0

    def add(self, records) -> dict:
        """Record finished episodes; returns their metrics (mean return and length per task)."""
        by_task = defaultdict(list)
        for r in records:
            self.recent[r["task"]].append(r["return"])
            by_task[r["task"]].append(r)
            self.count += 1
        metrics = {}
        for task, rs in by_task.items():
            metrics[f"charts/episodic_return/{task}"] = float(np.mean([r["return"] for r in rs]))
            metrics[f"charts/episodic_length/{task}"] = float(np.mean([r["length"] for r in rs]))
        return metrics

    def summary(self) -> dict:
        return {task: sum(v) / len(v) for task, v in self.recent.items() if v}


class RunMonitor:
    def __init__(self, cfg: DictConfig, run_dir: Path, learner, desc: str):
        self.cfg, self.run_dir, self.learner = cfg, Path(run_dir), learner
        self.logger = MetricLogger(run_dir)
        self.stats = EpisodeStats()
        self.bar = tqdm(total=cfg.impala.total_frames, initial=learner.frames, unit="frames",
                        disable=not cfg.progress, desc=desc)
        self.stop = StopRequest()
        self.start_time, self.start_frames, self.last_checkpoint = time.time(), learner.frames, time.time()
        self.frames_per_s = 0.0

    def __enter__(self) -> "RunMonitor":
        self.stop.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Always leaves a checkpoint (also when the run fails: no progress is lost)."""
        self.stop.__exit__()
        self.bar.close()
        if exc_type is not None and exc_type is not Interrupted:
            path = save_learner(self.run_dir, self.learner, self.cfg)
            print(f"[metarl] the run stopped; the learner state is saved in {path}")

    def after_update(self, metrics: dict, rollouts: dict, **extra) -> None:
        learner = self.learner
        self.frames_per_s = (learner.frames - self.start_frames) / max(time.time() - self.start_time, 1e-9)
        values = {**metrics, **self.stats.add(rollouts["episodes"]), "charts/frames_per_s": self.frames_per_s, **extra}
        self.logger.log(learner.frames, values)
        self.bar.update(rollouts["action"].numel())
        self.bar.set_postfix_str(f"{self.frames_per_s:.0f} fps " + " ".join(
            [f"{k}={v}" for k, v in extra.items()] + [f"{k}={v:.2f}" for k, v in self.stats.summary().items()]))
        if self.stop.requested:
            path = save_learner(self.run_dir, learner, self.cfg)
            self.logger.close()
            raise Interrupted(f"{self.stop.signal_name} at {learner.frames} frames: checkpoint saved to {path}; "
                              f"continue with resume={path}", exit_code=self.stop.exit_code)
        if time.time() - self.last_checkpoint > 60 * self.cfg.checkpoint_minutes:
            save_learner(self.run_dir, learner, self.cfg)
            self.last_checkpoint = time.time()

    def finish(self, **extra) -> dict:
        """The final checkpoint, evaluation (``test/<levels>/<policy>_return/<task>``) and curves.png."""
        learner = self.learner
        save_learner(self.run_dir, learner, self.cfg)
        result = {"frames": learner.frames, "updates": learner.updates, "frames_per_s": self.frames_per_s,
                  "recent_return": self.stats.summary(), **extra}
        if self.cfg.impala.eval_episodes > 0:
            result["evaluation"] = final_evaluation(self.cfg, learner.agent, self.logger, learner.frames)
        self.logger.close()
        curves = plot_curves(self.run_dir, ["losses/total", "charts/episodic_return/"])
        if curves is not None:
            print(f"[metarl] curves: {curves}")
        return result


def final_evaluation(cfg: DictConfig, agent, logger: MetricLogger, step: int) -> dict:
    """Mean return per task of the trained and of a random policy, on training and unseen levels."""
    acting = clone_for_acting(agent)
    report = {}
    splits = ("train", "test") if cfg.env.type == "procgen" else ("train",)
    for split in splits:
        for policy in ("trained", "random"):
            env = make_rl_env(cfg.env, cfg.impala.eval_envs, seed=cfg.seed + 7, split=split)
            result = evaluate(env, acting if policy == "trained" else None, cfg.impala.eval_episodes,
                              seed=cfg.seed + 7)
            env.close()
            for task, r in result.items():
                report[f"{split}/{policy}/{task}"] = r
                logger.log(step, {f"test/{split}_levels/{policy}_return/{task}": r["mean"]})
    print(f"\n{'split':6} {'task':14} {'trained':>18} {'random':>18}")
    for key, value in report.items():
        split, policy, task = key.split("/")
        if policy == "trained":
            other = report[f"{split}/random/{task}"]
            print(f"{split:6} {task:14} {value['mean']:9.2f} ± {value['std']:<6.2f} {other['mean']:9.2f} ± {other['std']:<6.2f}")
    return report
