"""What the RL runners share around their learning loop: metrics (the engine's vocabulary, tensorboard
and metrics.jsonl), recent returns per game, the progress bar, timed checkpoints, Ctrl-C / SIGTERM, the
final evaluation and the curves PNG. The runners own only how rollouts reach the learner.

With ``impala.eval_every_frames`` the trained policy is also evaluated during training, on the training
and (procgen) the unseen levels: ``eval/<split>_levels/return[/<task>]``. Each metric of
``impala.selection`` keeps its best model (``best-<set>-<metric>.pt``, the engine's names); at the end each
is evaluated on the unseen levels (``test/test_levels/trained_return/<task>/by-<set>-<metric>``) and
``selection.json`` records the choices the way the engine loop does (read by metarl.engine.selection).

    with RunMonitor(cfg, run_dir, learner, desc) as monitor:
        while learner.frames < total_frames:
            metrics = learner.learn(batch)
            monitor.after_update(metrics, batch)       # logs; checkpoints; raises Interrupted on a signal
    return monitor.finish(extra)                     # checkpoint, final evaluation, curves.png
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from ..engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from ..engine.interrupt import StopRequest
from ..engine.logging import MetricLogger, plot_curves, read_metrics
from ..engine.loop import best_filename
from ..errors import ConfigError, Interrupted
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
        impala = cfg.impala
        self.splits = ("train", "test") if cfg.env.type == "procgen" else ("train",)
        self.selection = list(impala.selection) if impala.eval_every_frames > 0 else []
        for metric in self.selection:
            if metric.split("/")[0] not in [f"{s}_levels" for s in self.splits] or "/return" not in metric:
                raise ConfigError(f"impala.selection: {metric!r} is not a metric of the periodic evaluation; use "
                                  + " or ".join(f"{s}_levels/return[/<task>]" for s in self.splits))
        every = impala.eval_every_frames
        self.next_eval = (learner.frames // every + 1) * every if every > 0 else None
        self.best: dict = {}  # selection metric -> (value, frames)
        if cfg.resume and self.selection:  # the best models so far, and their files, carry over to this run
            saved = read_checkpoint(cfg.resume).get("best") or {}
            for metric in self.selection:
                previous = Path(cfg.resume).parent / best_filename(metric)
                if metric in saved and previous.is_file():
                    self.best[metric] = (saved[metric], saved[f"{metric}@frames"])
                    if previous.resolve() != (self.run_dir / best_filename(metric)).resolve():
                        self.run_dir.mkdir(parents=True, exist_ok=True)
                        shutil.copy(previous, self.run_dir / best_filename(metric))

    def __enter__(self) -> "RunMonitor":
        self.stop.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Always leaves a checkpoint (also when the run fails: no progress is lost)."""
        self.stop.__exit__()
        self.bar.close()
        if exc_type is not None and exc_type is not Interrupted:
            path = save_learner(self.run_dir, self.learner, self.cfg, self.best_values())
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
            path = save_learner(self.run_dir, learner, self.cfg, self.best_values())
            self.logger.close()
            raise Interrupted(f"{self.stop.signal_name} at {learner.frames} frames: checkpoint saved to {path}; "
                              f"continue with resume={path}", exit_code=self.stop.exit_code)
        if time.time() - self.last_checkpoint > 60 * self.cfg.checkpoint_minutes:
            save_learner(self.run_dir, learner, self.cfg, self.best_values())
            self.last_checkpoint = time.time()
        if self.next_eval is not None and learner.frames >= self.next_eval:
            self.periodic_evaluation()
            self.next_eval += self.cfg.impala.eval_every_frames

    def periodic_evaluation(self) -> dict:
        """``eval/<split>_levels/return[/<task>]`` of the current policy; keeps the best model of each selection
        metric. Actions are drawn from the evaluation's own generator: training is not changed by it."""
        cfg, learner = self.cfg, self.learner
        acting = clone_for_acting(learner.agent)
        scalars = {}
        for split in self.splits:
            env = make_rl_env(cfg.env, cfg.impala.eval_envs, seed=cfg.seed + 11, split=split)
            result = evaluate(env, acting, cfg.impala.eval_interval_episodes, seed=cfg.seed + 11)
            env.close()
            for task, r in result.items():
                scalars[f"eval/{split}_levels/return/{task}"] = r["mean"]
            scalars[f"eval/{split}_levels/return"] = float(np.mean([r["mean"] for r in result.values()]))
        self.logger.log(learner.frames, scalars)
        for metric in self.selection:
            value = scalars.get(f"eval/{metric}")
            if value is None:
                raise ConfigError(f"impala.selection: {metric!r} was not measured; the tasks are "
                                  f"{sorted({k.rsplit('/', 1)[1] for k in scalars if k.count('/') == 3})}")
            if metric not in self.best or value > self.best[metric][0]:
                self.best[metric] = (value, learner.frames)
                save_checkpoint(self.run_dir / best_filename(metric), learner.agent, None,
                                counters={"step": learner.updates, "frames": learner.frames}, config=cfg,
                                best=self.best_values())
        return scalars

    def best_values(self) -> dict:
        """The best-so-far values as a checkpoint stores them: ``{metric: value, "<metric>@frames": frames}``."""
        values = {}
        for metric, (value, frames) in self.best.items():
            values[metric], values[f"{metric}@frames"] = value, frames
        return values

    def test_selected(self) -> dict:
        """Each selection metric's best model on the unseen levels (the training levels without a split),
        logged as ``test/<split>_levels/trained_return/<task>/by-<set>-<metric>``; writes ``selection.json``."""
        cfg, learner = self.cfg, self.learner
        split = self.splits[-1]
        agent = clone_for_acting(learner.agent)
        chosen = {}
        for metric in self.selection:
            path = self.run_dir / best_filename(metric)
            if not path.is_file():
                continue
            payload = load_checkpoint(path, agent)
            env = make_rl_env(cfg.env, cfg.impala.eval_envs, seed=cfg.seed + 7, split=split)
            result = evaluate(env, agent, cfg.impala.eval_episodes, seed=cfg.seed + 7)
            env.close()
            suffix = "/by-" + metric.replace("/", "-")
            test = {f"{split}_levels/trained_return/{task}": r["mean"] for task, r in result.items()}
            self.logger.log(learner.frames, {f"test/{k}{suffix}": v for k, v in test.items()})
            chosen[metric] = {"step": payload["counters"]["frames"], "value": self.best[metric][0], "test": test}
        if chosen:
            summary = {"selection": {m: "max" for m in self.selection}, "primary": self.selection[0],
                       "eval_sets": [f"{s}_levels" for s in self.splits], "test_sets": [f"{split}_levels"],
                       "last_step": learner.frames, "selected": chosen}
            tmp = self.run_dir / "selection.json.tmp"
            tmp.write_text(json.dumps(summary, indent=1, default=float))
            os.replace(tmp, self.run_dir / "selection.json")
        return chosen

    def finish(self, **extra) -> dict:
        """The final checkpoint, evaluation (``test/<levels>/<policy>_return/<task>``) and curves.png."""
        learner = self.learner
        save_learner(self.run_dir, learner, self.cfg, self.best_values())
        result = {"frames": learner.frames, "updates": learner.updates, "frames_per_s": self.frames_per_s,
                  "recent_return": self.stats.summary(), **extra}
        if self.cfg.impala.eval_episodes > 0:
            result["evaluation"] = final_evaluation(self.cfg, learner.agent, self.logger, learner.frames)
            if self.selection:
                result["selected"] = self.test_selected()
        self.logger.close()
        curves = plot_curves(self.run_dir, ["losses/total", "charts/episodic_return/"])
        if curves is not None:
            print(f"[metarl] curves: {curves}")
        learning_curve = plot_learning_curve(self.run_dir, result.get("evaluation", {}))
        if learning_curve is not None:
            print(f"[metarl] learning curve: {learning_curve}")
        return result


def plot_learning_curve(run_dir: Path, report: dict, window: int = 20) -> Optional[Path]:
    """``learning_curve.png``: the return of each game's finished training episodes against frames (a moving
    mean over ``window`` logged points), with the random policy's mean on the training levels as a dashed
    line (from the final evaluation ``report``, when there is one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir) if (Path(run_dir) / "metrics.jsonl").is_file() else []
    prefix = "charts/episodic_return/"
    games = sorted({k[len(prefix):] for r in rows for k in r if k.startswith(prefix)})
    if not games:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, game in enumerate(games):
        points = [(r["step"], r[prefix + game]) for r in rows if isinstance(r.get(prefix + game), (int, float))]
        frames, returns = np.array(points).T
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid") if len(returns) >= window else returns
        line, = ax.plot(frames[len(frames) - len(smooth):], smooth, label=f"{game} (trained)", color=f"C{i}")
        random = report.get(f"train/random/{game}")
        if random is not None:
            ax.axhline(random["mean"], color=line.get_color(), linestyle="--", label=f"{game} (random policy)")
    ax.set_xlabel("frames")
    ax.set_ylabel(f"episode return (moving mean of {window})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(run_dir) / "learning_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def final_evaluation(cfg: DictConfig, agent, logger: MetricLogger, step: int) -> dict:
    """Mean return per task of the trained and of a random policy, on training and unseen levels (procgen),
    with ``impala.eval_episodes`` complete episodes per task (metarl.rl.evaluate: no bias to short ones)."""
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
                logger.log(step, {f"test/{split}_levels/{policy}_return/{task}": r["mean"],
                                  f"test/{split}_levels/{policy}_return_stderr/{task}": r["stderr"]})
    print(format_report(report))
    return report


def format_report(report: dict) -> str:
    """A table: per split and task, trained and random mean ± standard error (episodes) and the gap in
    standard errors of the difference."""
    lines = [f"\n{'levels':6} {'task':12} {'trained':>22} {'random':>22} {'gap/se':>7}"]
    for key, value in report.items():
        split, policy, task = key.split("/")
        if policy != "trained" or f"{split}/random/{task}" not in report:
            continue
        other = report[f"{split}/random/{task}"]
        se = math.hypot(value["stderr"], other["stderr"])
        gap = (value["mean"] - other["mean"]) / se if se > 0 else float("nan")
        cell = lambda r: f"{r['mean']:7.2f} ± {r['stderr']:<5.2f} ({r['episodes']:3d})"
        lines.append(f"{split:6} {task:12} {cell(value):>22} {cell(other):>22} {gap:7.1f}")
    return "\n".join(lines)
