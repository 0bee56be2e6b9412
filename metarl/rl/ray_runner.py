"""``runner=ray``: IMPALA with actors as Ray actors and the learner in the driver process.

- With no address, ``ray.init()`` starts a local instance (dashboard off unless ``runner.dashboard``, and
  then bound to 127.0.0.1); ``runner.address`` or ``RAY_ADDRESS`` joins an existing cluster.
- Weights are put in the object store once per update with a version number; every unroll request
  carries the newest reference, so actors pick up new weights without the learner waiting on them.
- Each actor has at most one unroll in flight, so at most ``num_actors`` rollouts wait for the learner
  (back-pressure: memory does not grow).
- Resources are sized from the cluster before anything starts; a request that cannot be met, or actors
  that do not start within ``runner.start_timeout_s``, stop the run with a message saying what was asked
  and what the cluster has.
- A crashed actor (killed process, env exception) is replaced and training goes on; restarts are logged
  and counted (``charts/actor_restarts``). Checkpoints are written atomically.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from ..engine.ray_train import init_ray
from ..errors import ResourceError
from .impala import Learner, collate
from .monitor import RunMonitor
from .setup import build_agent, make_rl_env, resume_learner, rollouts_per_update

log = logging.getLogger(__name__)


class RolloutWorker:
    """The body of a Ray actor: a batched env and an acting copy of the agent (see impala.Actor)."""

    def __init__(self, cfg_dict: dict, index: int, seed: int):
        from .impala import Actor, clone_for_acting

        torch.set_num_threads(1)
        cfg = OmegaConf.create(cfg_dict)
        env = make_rl_env(cfg.env, cfg.runner.envs_per_actor, seed=seed)
        self.actor = Actor(env, clone_for_acting(build_agent(cfg, env)), cfg.impala.unroll_length, seed=seed)
        self.index = index

    def ready(self) -> int:
        return self.index

    def pid(self) -> int:
        return os.getpid()

    def unroll(self, weights: dict, version: int) -> dict:
        self.actor.set_weights(weights, version)
        return self.actor.unroll()


def actor_resources(runner: DictConfig, cluster: dict) -> dict:
    """CPU/GPU per actor: the configured values, or the CPUs left after the learner split evenly (fractional)."""
    cpus_total, gpus_total = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    learner_cpus = runner.learner_cpus
    if runner.actor_cpus is not None:
        per_actor = runner.actor_cpus
    else:
        per_actor = min(1.0, max(cpus_total - learner_cpus, 0.0) / max(runner.num_actors, 1))
        per_actor = max(round(per_actor, 2), 0.01) if cpus_total > learner_cpus else 0.0
    asked_cpus = runner.num_actors * per_actor + learner_cpus
    asked_gpus = runner.num_actors * runner.actor_gpus
    if per_actor <= 0 or asked_cpus > cpus_total + 1e-9 or asked_gpus > gpus_total + 1e-9:
        raise ResourceError(
            f"runner=ray asks for {runner.num_actors} actors x {per_actor} CPU + {runner.actor_gpus} GPU and "
            f"{learner_cpus} CPU for the learner ({asked_cpus:g} CPU, {asked_gpus:g} GPU in all), but the cluster "
            f"has {cpus_total:g} CPU and {gpus_total:g} GPU. Lower runner.num_actors, runner.actor_cpus or "
            f"runner.learner_cpus, or add nodes.")
    return {"num_cpus": per_actor, "num_gpus": runner.actor_gpus}


def train_impala_ray(cfg: DictConfig, run_dir: Path, on_update: Optional[Callable] = None) -> dict:
    """Train with Ray actors; ``on_update(learner, runner_state)`` is called after every update (tests)."""
    impala, runner = cfg.impala, cfg.runner
    torch.manual_seed(cfg.seed)
    per_update = rollouts_per_update(cfg)
    ray = init_ray(runner)
    resources = actor_resources(runner, ray.cluster_resources())
    remote_worker = ray.remote(**resources)(RolloutWorker)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)

    probe = make_rl_env(cfg.env, 1, seed=cfg.seed)
    learner = Learner(build_agent(cfg, probe), impala, cfg.optim, device=cfg.device)
    probe.close()
    resume_learner(cfg, learner)

    def start(index: int, generation: int):
        return remote_worker.remote(cfg_dict, index, cfg.seed * 1000 + index + 7919 * generation)

    workers = [start(i, 0) for i in range(runner.num_actors)]
    ready, pending = ray.wait([w.ready.remote() for w in workers], num_returns=len(workers),
                              timeout=runner.start_timeout_s)
    if pending:
        raise ResourceError(f"only {len(ready)} of {runner.num_actors} Ray actors started within "
                            f"{runner.start_timeout_s} s (each asks {resources}); the cluster has "
                            f"{ray.available_resources()} available. Lower runner.num_actors or runner.actor_cpus.")

    state = {"restarts": 0, "workers": workers, "version": 0}
    weights_ref = ray.put(learner.weights())
    in_flight = {w.unroll.remote(weights_ref, 0): i for i, w in enumerate(workers)}
    batch = []
    try:
        with RunMonitor(cfg, run_dir, learner, desc=f"{cfg.env.name}/{cfg.agent.name} (ray)") as monitor:
            while learner.frames < impala.total_frames:
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=runner.rollout_timeout_s)
                if not done:
                    raise ResourceError(f"no rollout arrived for {runner.rollout_timeout_s} s from "
                                        f"{len(in_flight)} Ray actors; the cluster has {ray.available_resources()} "
                                        "free. Raise runner.rollout_timeout_s or lower runner.num_actors")
                ref = done[0]
                index = in_flight.pop(ref)
                try:
                    rollout = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
                    state["restarts"] += 1
                    log.warning("Ray actor %d failed (%s); starting a replacement (restart %d)",
                                index, type(err).__name__, state["restarts"])
                    ray.kill(state["workers"][index], no_restart=True)
                    state["workers"][index] = start(index, state["restarts"])
                    in_flight[state["workers"][index].unroll.remote(weights_ref, state["version"])] = index
                    continue
                in_flight[state["workers"][index].unroll.remote(weights_ref, state["version"])] = index
                batch.append(rollout)
                if len(batch) < per_update:
                    continue
                batch, rollouts = [], collate(batch)
                metrics = learner.learn(rollouts)
                state["version"] += 1
                weights_ref = ray.put(learner.weights())
                monitor.after_update(metrics, rollouts, **{"charts/actor_restarts": state["restarts"]})
                if on_update is not None:
                    on_update(learner, state)
    finally:
        for w in state["workers"]:
            ray.kill(w, no_restart=True)
    return monitor.finish(actor_restarts=state["restarts"])
