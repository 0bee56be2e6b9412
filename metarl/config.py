"""Structured (dataclass) configs for ``python -m metarl.train``; the YAML files in ``metarl.configs``
extend these schemas, so a wrong key or a wrong type fails at start with the field's name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class AgentConfig:
    """The sequence core (``metarl.cores.make``) and its size."""

    name: str = "srwm"  # core: lstm | lt | delta | recdelta | srwm | transformer
    d_model: int = 128  # residual width
    num_layers: int = 2  # number of [mixer + feed-forward] blocks
    num_heads: int = 8  # heads of the mixer
    ff: str = "dense"  # feed-forward: dense | moe | pkm | none
    d_ff: Optional[int] = None  # feed-forward width (default 4·d_model)
    dropout: float = 0.0  # dropout on the sublayer outputs
    ff_options: Dict[str, Any] = field(default_factory=dict)  # extra feed-forward arguments (σ-MoE experts...)
    options: Dict[str, Any] = field(default_factory=dict)  # extra mixer arguments (SRWM d_head, beta_init...)


@dataclass
class RecallEnvConfig:
    """Supervised demo: recall the cue shown at the first step after ``length - 1`` distractors."""

    name: str = "recall"  # task name
    kind: str = "supervised"  # which trainer runs it
    num_cues: int = 8  # cue tokens (chance accuracy is 1/num_cues)
    num_distractors: int = 8  # distractor tokens
    length: int = 32  # sequence length
    batch_size: int = 32  # sequences per update
    steps: int = 300  # updates
    lr: float = 3e-3  # Adam learning rate
    eval_every: int = 100  # updates between evaluations
    eval_batches: int = 8  # batches per evaluation


@dataclass
class TrainConfig:
    """Top level of ``python -m metarl.train``."""

    env: Any = MISSING  # the task (a config group: env=recall, ...)
    agent: AgentConfig = field(default_factory=AgentConfig)  # the core (a config group: agent=srwm, ...)
    seed: int = 0  # random seed of torch and the data
    device: str = "cpu"  # torch device
    threads: Optional[int] = None  # torch intra-op threads (default: torch's choice)
    resume: Optional[str] = None  # checkpoint file to continue from (counters, optimiser and schedule too)
    checkpoint_minutes: float = 5.0  # minutes between checkpoints (and one at the end)
    progress: bool = True  # show a progress bar


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="agent", name="agent_schema", node=AgentConfig)
    cs.store(group="env", name="recall_schema", node=RecallEnvConfig)
