"""The shared config groups of ``python -m metarl.train`` as structured (dataclass) configs: ``agent``,
``optim``, ``impala``, ``runner`` and the top level. Each env and task owns its ``env`` dataclass beside
its code and registers it (``metarl.engine.registry``); ``register_configs`` imports them. The YAML files
in ``metarl.configs`` extend these schemas, so a wrong key or a wrong type fails at start naming the field.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from .engine.optim import OptimConfig
from .engine.registry import store_schema

#: modules that register an env schema and a trainer or task when imported
BUILTIN_MODULES = ("metarl.envs", "metarl.rl.trainer", "metarl.supervised", "metarl.fewshot.task",
                   "metarl.society.trainer")


@dataclass
class AgentConfig:
    """The model: the sequence core (``metarl.cores.from_config``) and its size."""

    name: str = "srwm"  # core: lstm | lt | delta | recdelta | srwm | transformer | mlp (ff: alias of mlp)
    d_model: int = 128  # residual width
    num_layers: int = 2  # number of [mixer + feed-forward] blocks
    num_heads: int = 8  # heads of the mixer
    ff: str = "dense"  # feed-forward: dense | moe | pkm | none
    d_ff: Optional[int] = None  # feed-forward width (default 4·d_model)
    dropout: float = 0.0  # dropout on the sublayer outputs
    ff_options: Dict[str, Any] = field(default_factory=dict)  # extra feed-forward arguments (σ-MoE experts...)
    options: Dict[str, Any] = field(default_factory=dict)  # extra mixer arguments (SRWM d_head, beta_init...)
    # options an env preset recommends for a core; applied when agent.name matches, under agent.options, which win
    options_by_core: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    encoder_hidden: int = 64  # RL: width of the MLP encoder for vector observations
    truncate_grad_each_step: bool = False  # RL: detach the core state at every step (reference implementation)


@dataclass
class ImpalaConfig:
    """IMPALA / V-trace learner (defaults from the SRWM paper's procgen runs; the optimiser is ``optim``)."""

    total_frames: int = 300_000  # env frames to learn from (the optim schedule runs over these)
    unroll_length: int = 50  # steps per rollout
    batch_size: int = 32  # env rollouts (rows) per update; a multiple of runner.envs_per_actor
    entropy_cost: float = 0.01  # weight of the entropy bonus
    baseline_cost: float = 0.5  # weight of the value loss
    gamma: float = 0.99  # discount
    reward_clip: bool = True  # clip rewards to [-1, 1] for learning
    eval_episodes: int = 10  # episodes per task for the final evaluation (0: none)
    eval_envs: int = 8  # parallel envs for the evaluation
    eval_every_frames: int = 0  # evaluate the trained policy every this many frames (0: only the final evaluation)
    eval_interval_episodes: int = 16  # episodes per task and split at each of those evaluations
    # metrics of those evaluations to select on (max), each keeping best-<set>-<metric>.pt and tested at the end:
    # train_levels/return (mean over tasks), test_levels/return, or per task <set>/return/<task>
    selection: List[str] = field(default_factory=lambda: ["train_levels/return"])
    amp: str = "auto"  # bf16 autocast of the encoder: auto (on where the CPU has bf16 kernels, and on CUDA) | on | off


@dataclass
class RunnerConfig:
    """Where actors and learner run."""

    name: str = "local"  # local (threads in one process) | ray
    num_actors: int = 1  # actor threads / Ray actors
    envs_per_actor: int = 16  # envs stepped together by one actor
    schedule: str = "async"  # local: async (actor threads, fastest, not reproducible) | pipeline (act one batch ahead, reproducible) | lockstep (act, then learn)
    address: Optional[str] = None  # ray: cluster to join (else RAY_ADDRESS, else a local instance is started)
    num_cpus: Optional[int] = None  # ray: CPUs of a local instance (default: all)
    actor_cpus: Optional[float] = None  # ray: CPUs per actor (default: what the learner leaves, split evenly)
    actor_gpus: float = 0.0  # ray: GPUs per actor
    learner_cpus: float = 1.0  # ray: CPUs kept for the learner (the driver process)
    dashboard: bool = False  # ray: start the dashboard of a local instance (bound to 127.0.0.1)
    start_timeout_s: float = 60.0  # ray: seconds for the actors to start before the run stops with a message
    rollout_timeout_s: float = 300.0  # ray: seconds without any rollout before the run stops with a message
    num_workers: int = 2  # ray, engine tasks (supervised, few-shot, LM, ...): data-parallel training workers (Ray Train)
    use_gpu: bool = False  # ray, engine tasks: one GPU per worker (NCCL); else CPUs (gloo)
    worker_cpus: Optional[float] = None  # ray, engine tasks: CPUs per worker (default: the cluster's CPUs split evenly, at most 1)
    max_failures: int = 2  # ray, engine tasks: worker-group restarts from the last checkpoint before the run fails
    storage_path: Optional[str] = None  # ray, engine tasks: where Ray Train keeps checkpoints (default: <run folder>/ray_train; on several machines a path all nodes reach)


@dataclass
class TrainConfig:
    """Top level of ``python -m metarl.train``."""

    env: Any = MISSING  # the task or environment (a config group: env=recall, env=procgen, ...)
    agent: AgentConfig = field(default_factory=AgentConfig)  # the model (a config group: agent=srwm, ...)
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimisation (a config group: optim=adam, ...)
    impala: ImpalaConfig = field(default_factory=ImpalaConfig)  # RL learner settings
    runner: RunnerConfig = field(default_factory=RunnerConfig)  # where it runs (a config group: runner=local, ...)
    seed: int = 0  # random seed of torch and the data
    device: str = "cpu"  # torch device
    threads: Optional[int] = None  # torch intra-op threads (default: torch's choice)
    resume: Optional[str] = None  # checkpoint file to continue from (counters, optimiser, RNG states too)
    checkpoint_minutes: float = 5.0  # minutes between checkpoints (and one at the end, and on Ctrl-C / SIGTERM)
    log_every: int = 10  # updates between logged training metrics (averaged over them)
    progress: bool = True  # show a progress bar


def register_configs() -> None:
    """Store the shared schemas and import the modules that register env schemas, tasks and trainers."""
    store_schema("train_schema", TrainConfig, group=None)
    store_schema("agent_schema", AgentConfig, group="agent")
    store_schema("optim_schema", OptimConfig, group="optim")
    store_schema("runner_schema", RunnerConfig, group="runner")
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
