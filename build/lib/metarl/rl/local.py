"""``runner=local``: IMPALA in one process. Actor threads step their envs with the newest weights they
have and put rollouts in a bounded queue; the main thread learns from them. Torch ops and the envs
release the GIL, so acting and learning overlap on the CPU cores."""
from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .evaluate import evaluate
from .impala import Actor, Learner, clone_for_acting, collate
from .setup import build_agent, make_rl_env, resume_learner, rollouts_per_update, save_learner


class WeightStore:
    """The newest published weights and their version (thread-safe)."""

    def __init__(self, weights: dict, version: int = 0):
        self._lock = threading.Lock()
        self._weights, self.version = weights, version

    def publish(self, weights: dict) -> None:
        with self._lock:
            self._weights, self.version = weights, self.version + 1

    def newest(self):
        with self._lock:
            return self._weights, self.version


class ActorThread(threading.Thread):
    def __init__(self, index: int, actor: Actor, store: WeightStore, rollouts: queue.Queue, stop: threading.Event):
        super().__init__(name=f"actor-{index}", daemon=True)
        self.actor, self.store, self.rollouts, self.stop = actor, store, rollouts, stop
        self.error = None

    def run(self):
        torch.set_num_threads(1)  # OpenMP thread count is per thread: the actor leaves the other cores to the learner
        try:
            while not self.stop.is_set():
                self.actor.set_weights(*self.store.newest())
                rollout = self.actor.unroll()
                while not self.stop.is_set():
                    try:
                        self.rollouts.put(rollout, timeout=0.5)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # reported by the learner loop, which stops the run
            self.error = err


class EpisodeStats:
    """Recent episode returns per task, for the progress bar and tensorboard."""

    def __init__(self, window: int = 20):
        self.recent = defaultdict(lambda: deque(maxlen=window))
        self.count = 0

    def add(self, records, writer: SummaryWriter, frames: int):
        for r in records:
            self.recent[r["task"]].append(r["return"])
            self.count += 1
            writer.add_scalar("charts/episodic_return", r["return"], frames)
            writer.add_scalar("charts/episodic_length", r["length"], frames)
            writer.add_scalar(f"charts/episodic_return/{r['task']}", r["return"], frames)

    def summary(self) -> dict:
        return {task: sum(v) / len(v) for task, v in self.recent.items() if v}


def train_impala_local(cfg: DictConfig, run_dir: Path) -> dict:
    impala, runner = cfg.impala, cfg.runner
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    per_update = rollouts_per_update(cfg)
    envs = [make_rl_env(cfg.env, runner.envs_per_actor, seed=cfg.seed * 1000 + i) for i in range(runner.num_actors)]
    agent = build_agent(cfg, envs[0])
    learner = Learner(agent, impala, device=cfg.device)
    resume_learner(cfg, learner)
    store = WeightStore(learner.weights())
    rollouts = queue.Queue(maxsize=max(2, 2 * impala.batch_size // runner.envs_per_actor))
    stop = threading.Event()
    threads = [ActorThread(i, Actor(env, clone_for_acting(agent), impala.unroll_length, seed=cfg.seed * 1000 + i),
                           store, rollouts, stop) for i, env in enumerate(envs)]
    if not runner.synchronous:
        for t in threads:
            t.start()

    writer = SummaryWriter(str(run_dir))
    stats = EpisodeStats()
    bar = tqdm(total=impala.total_frames, initial=learner.frames, unit="frames", disable=not cfg.progress,
               desc=f"{cfg.env.name}/{cfg.agent.name}")
    start_time, start_frames, last_checkpoint = time.time(), learner.frames, time.time()
    metrics = {}
    try:
        while learner.frames < impala.total_frames:
            batch = []
            if runner.synchronous:  # lockstep, reproducible: every actor unrolls with the newest weights
                while len(batch) < per_update:
                    actor = threads[len(batch) % len(threads)].actor
                    actor.set_weights(*store.newest())
                    batch.append(actor.unroll())
            while len(batch) < per_update:
                try:
                    batch.append(rollouts.get(timeout=1.0))
                except queue.Empty:
                    dead = [t for t in threads if t.error is not None or not t.is_alive()]
                    if dead:
                        raise RuntimeError(f"{dead[0].name} died: {dead[0].error!r}; the learner state is "
                                           f"saved in {run_dir}/checkpoint.pt") from dead[0].error
            batch = collate(batch)
            metrics = learner.learn(batch)
            store.publish(learner.weights())
            stats.add(batch["episodes"], writer, learner.frames)
            sps = (learner.frames - start_frames) / max(time.time() - start_time, 1e-9)
            metrics["charts/sps"] = sps
            for key, value in metrics.items():
                writer.add_scalar(key, value, learner.frames)
            bar.update(batch["action"].numel())
            bar.set_postfix_str(f"{sps:.0f} fps " + " ".join(f"{k}={v:.2f}" for k, v in stats.summary().items()))
            if time.time() - last_checkpoint > 60 * cfg.checkpoint_minutes:
                save_learner(run_dir, learner, cfg)
                last_checkpoint = time.time()
    except BaseException:
        save_learner(run_dir, learner, cfg)
        raise
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(timeout=10)
        bar.close()
    save_learner(run_dir, learner, cfg)
    for env in envs:
        env.close()
    result = {"frames": learner.frames, "updates": learner.updates, "sps": metrics.get("charts/sps", 0.0),
              "recent_return": stats.summary()}
    if impala.eval_episodes > 0:
        result["evaluation"] = final_evaluation(cfg, learner.agent, writer)
    writer.close()
    return result


def final_evaluation(cfg: DictConfig, agent, writer: SummaryWriter) -> dict:
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
                writer.add_scalar(f"eval/{split}_{policy}_return/{task}", r["mean"], 0)
    print(f"\n{'split':6} {'task':14} {'trained':>18} {'random':>18}")
    for key, value in report.items():
        split, policy, task = key.split("/")
        if policy == "trained":
            other = report[f"{split}/random/{task}"]
            print(f"{split:6} {task:14} {value['mean']:9.2f} ± {value['std']:<6.2f} {other['mean']:9.2f} ± {other['std']:<6.2f}")
    return report
