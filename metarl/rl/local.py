"""``runner=local``: IMPALA in one process. Acting threads step the envs and the main thread learns from
their rollouts; torch ops and the envs release the GIL, so acting and learning overlap on the CPU cores.
``runner.schedule`` chooses how they meet (:func:`train_impala_local`): ``async`` actor threads with a bounded
queue, ``pipeline`` (one batch ahead, reproducible) or ``lockstep``."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from omegaconf import DictConfig

from metarl.errors import check_choice

from .impala import Actor, Learner, clone_for_acting, collate
from .monitor import RunMonitor
from .setup import build_agent, make_rl_env, resume_learner, rollouts_per_update


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


SCHEDULES = ("async", "pipeline", "lockstep")


def act_in_turn(threads: list, store: WeightStore, count: int) -> list:
    """``count`` rollouts, the actors unrolling one after another with the newest published weights."""
    batch = []
    while len(batch) < count:
        actor = threads[len(batch) % len(threads)].actor
        actor.set_weights(*store.newest())
        batch.append(actor.unroll())
    return batch


def _one_torch_thread():
    torch.set_num_threads(1)  # as ActorThread: the acting thread leaves the other cores to the learner


def train_impala_local(cfg: DictConfig, run_dir: Path) -> dict:
    """IMPALA in one process. ``runner.schedule``:

    - ``async``: actor threads unroll with whatever weights are newest and queue rollouts; the fastest, not
      reproducible (the policy lag depends on thread timing);
    - ``pipeline``: one acting thread unrolls the next batch with the weights of update k while the learner
      makes update k+1 from the current batch: acting and learning overlap with a policy lag of exactly one
      update (V-trace corrects it), so a run is reproducible from its seed;
    - ``lockstep``: act, then learn, in turn (lag 0, reproducible, slowest).
    """
    impala, runner = cfg.impala, cfg.runner
    check_choice("runner.schedule", runner.schedule, SCHEDULES)
    torch.manual_seed(cfg.seed)
    per_update = rollouts_per_update(cfg)
    envs = [make_rl_env(cfg.env, runner.envs_per_actor, seed=cfg.seed * 1000 + i) for i in range(runner.num_actors)]
    agent = build_agent(cfg, envs[0])
    learner = Learner(agent, impala, cfg.optim, device=cfg.device)
    resume_learner(cfg, learner)
    store = WeightStore(learner.weights())
    rollouts = queue.Queue(maxsize=max(2, 2 * impala.batch_size // runner.envs_per_actor))
    stop = threading.Event()
    threads = [ActorThread(i, Actor(env, clone_for_acting(agent), impala.unroll_length, seed=cfg.seed * 1000 + i),
                           store, rollouts, stop) for i, env in enumerate(envs)]
    acting = None  # pipeline: the thread that unrolls the next batch
    if runner.schedule == "async":
        for t in threads:
            t.start()
    elif runner.schedule == "pipeline":
        acting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="acting", initializer=_one_torch_thread)
    try:
        with RunMonitor(cfg, run_dir, learner, desc=f"{cfg.env.name}/{cfg.agent.name}") as monitor:
            upcoming = acting.submit(act_in_turn, threads, store, per_update) if acting else None
            while learner.frames < impala.total_frames:
                if runner.schedule == "lockstep":
                    batch = act_in_turn(threads, store, per_update)
                elif runner.schedule == "pipeline":
                    batch = upcoming.result()  # acted with the weights published before the last update
                    upcoming = acting.submit(act_in_turn, threads, store, per_update)
                else:
                    batch = []
                    while len(batch) < per_update:
                        try:
                            batch.append(rollouts.get(timeout=1.0))
                        except queue.Empty:
                            dead = [t for t in threads if t.error is not None or not t.is_alive()]
                            if dead:
                                raise RuntimeError(f"{dead[0].name} died: {dead[0].error!r}") from dead[0].error
                batch = collate(batch)
                metrics = learner.learn(batch)
                store.publish(learner.weights())
                monitor.after_update(metrics, batch)
    finally:
        stop.set()
        if acting is not None:
            acting.shutdown(wait=True, cancel_futures=True)
        for t in threads:
            if t.is_alive():
                t.join(timeout=10)
        for env in envs:
            env.close()
    return monitor.finish()
