"""Structured (dataclass) configs for ``python -m metarl.train``; the YAML files in ``metarl.configs``
extend these schemas, so a wrong key or a wrong type fails at start with the field's name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class AgentConfig:
    """The sequence core (``metarl.cores.make``) and its size."""

    name: str = "srwm"  # core: lstm | lt | delta | recdelta | srwm | transformer (ff: no memory, RL only)
    d_model: int = 128  # residual width
    num_layers: int = 2  # number of [mixer + feed-forward] blocks
    num_heads: int = 8  # heads of the mixer
    ff: str = "dense"  # feed-forward: dense | moe | pkm | none
    d_ff: Optional[int] = None  # feed-forward width (default 4·d_model)
    dropout: float = 0.0  # dropout on the sublayer outputs
    ff_options: Dict[str, Any] = field(default_factory=dict)  # extra feed-forward arguments (σ-MoE experts...)
    options: Dict[str, Any] = field(default_factory=dict)  # extra mixer arguments (SRWM d_head, beta_init...)
    encoder_hidden: int = 64  # RL: width of the MLP encoder for vector observations
    truncate_grad_each_step: bool = False  # RL: detach the core state at every step (reference implementation)


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
class FormalEnvConfig:
    """Formal languages, character prediction (metarl.supervised.formal): train on Bin0, test on Bin1."""

    name: str = "formal"  # run name
    kind: str = "supervised"  # which trainer runs it
    family: str = "formal"  # task family (metarl.supervised.trainer.make_task)
    language: str = "parity"  # parity | aa_star | abab_star | counter2 | counter3 | shuffle2 | dyck1 | reset_dyck1
    train_lengths: List[int] = field(default_factory=lambda: [1, 50])  # Bin0: string lengths to train on (inclusive)
    test_lengths: List[int] = field(default_factory=lambda: [51, 100])  # Bin1: string lengths to test on (inclusive)
    batch_size: int = 32  # strings per update (and per evaluation batch)
    steps: int = 3000  # updates
    lr: float = 1e-3  # Adam learning rate
    grad_clip: float = 1.0  # global gradient-norm clip (0: none)
    eval_every: int = 500  # updates between Bin0 evaluations (Bin1 is evaluated once, at the end)
    eval_batches: int = 8  # batches per bin


@dataclass
class ChomskyEnvConfig:
    """Chomsky-hierarchy length generalisation (metarl.supervised.chomsky): outputs read at appended empty tokens."""

    name: str = "chomsky"  # run name
    kind: str = "supervised"  # which trainer runs it
    family: str = "chomsky"  # task family (metarl.supervised.trainer.make_task)
    task: str = "reverse_string"  # one of the 15 tasks (metarl.supervised.chomsky.TASKS)
    train_lengths: List[int] = field(default_factory=lambda: [1, 40])  # input lengths to train on (inclusive)
    test_lengths: List[int] = field(default_factory=lambda: [41, 500])  # input lengths to test on (inclusive)
    test_length_step: int = 10  # test every k-th length of test_lengths (1: all 460, as in the paper; slow on a CPU)
    test_batch_size: int = 8  # sequences per test length (a length-500 batch holds up to 1500 tokens per sequence)
    batch_size: int = 32  # sequences per update (one length per batch)
    steps: int = 2000  # updates
    lr: float = 1e-3  # Adam learning rate
    grad_clip: float = 1.0  # global gradient-norm clip (0: none)
    eval_every: int = 500  # updates between in-distribution evaluations (the test lengths only at the end)
    eval_batch_size: int = 16  # sequences per train length in the in-distribution evaluation


@dataclass
class CTLPPEnvConfig:
    """CTL++ (metarl.supervised.ctlpp): chains of bijections, IID and OOD (never-seen group pattern) splits."""

    name: str = "ctlpp"  # run name
    kind: str = "supervised"  # which trainer runs it
    family: str = "ctlpp"  # task family (metarl.supervised.trainer.make_task)
    variant: str = "r"  # r (train within groups) | a (train across groups) | s (shared group o)
    num_symbols: int = 8  # symbols the functions act on (chance accuracy 1/num_symbols)
    num_functions: int = 32  # random bijections
    chain_lengths: List[int] = field(default_factory=lambda: [2, 6])  # functions per chain (inclusive)
    overlap: int = 8  # variant s: functions in the shared group o
    test_size: int = 1000  # samples in each of the IID and OOD test splits
    data_seed: int = 0  # seed of the functions, groups and test splits
    batch_size: int = 64  # chains per update (and per evaluation batch)
    steps: int = 3000  # updates
    lr: float = 1e-3  # Adam learning rate
    grad_clip: float = 1.0  # global gradient-norm clip (0: none)
    eval_every: int = 500  # updates between IID evaluations (OOD is evaluated once, at the end)


@dataclass
class ProcgenEnvConfig:
    """procgen games through gym3 (64x64x3 frames, 15 actions); several games = multi-task."""

    name: str = "procgen"  # run name
    kind: str = "rl"  # which trainer runs it
    type: str = "procgen"  # env factory (metarl.envs.make_env)
    games: List[str] = field(default_factory=lambda: ["coinrun"])  # one or more of the 16 games
    distribution_mode: str = "easy"  # easy | hard | extreme | memory | exploration
    num_levels: int = 200  # training levels (0 = all levels)
    start_level: int = 0  # first training level; unseen levels for evaluation follow the training range


@dataclass
class GymEnvConfig:
    """Any gymnasium env with discrete actions, vectorised."""

    name: str = "gym"  # run name
    kind: str = "rl"  # which trainer runs it
    type: str = "gym"  # env factory (metarl.envs.make_env)
    id: str = "CartPole-v1"  # gymnasium env id


@dataclass
class MemoryEnvConfig:
    """A cue at the first step, the rewarded action chosen ``delay`` steps later (needs memory)."""

    name: str = "memory"  # run name
    kind: str = "rl"  # which trainer runs it
    type: str = "memory"  # env factory (metarl.envs.make_env)
    num_cues: int = 4  # cues = actions; a memoryless policy gets 1/num_cues
    delay: int = 5  # blank steps between the cue and the query


@dataclass
class FewShotEnvConfig:
    """Episodic N-way K-shot classification as a sequence (metarl.fewshot); one schema for every dataset."""

    name: str = "glyphs"  # run name
    kind: str = "fewshot"  # which trainer runs it
    dataset: str = "glyphs"  # glyphs (generated, no download) | omniglot | miniimagenet | fc100
    root: Optional[str] = None  # dataset folder (not for glyphs); a wrong folder fails naming the layouts expected
    image_size: int = 28  # images are resized to image_size x image_size at load (paper: 28, 84, 32)
    rotations: bool = True  # omniglot: rotations by 90, 180, 270 degrees as new classes (x4, Vinyals et al.)
    glyph_classes: int = 600  # glyphs: generated classes, split 64/16/20 % into train/val/test
    glyph_samples: int = 20  # glyphs: images per class
    glyph_seed: int = 0  # glyphs: seed of the generator (the dataset is a function of the glyph_* fields)
    protocol: str = "sync"  # sync: support with labels, queries with a dummy label | delayed: previous label fed
    ways: int = 5  # N: classes per episode
    shots: int = 1  # K: images per class in the support set (delayed: in the sequence)
    queries: int = 1  # sync: query images per class, each classified from the support set alone
    second_dataset: Optional[str] = None  # delayed: a second dataset whose episodes are concatenated in random order
    second_root: Optional[str] = None  # delayed: folder of second_dataset
    max_trim: int = 0  # delayed: drop a random 0..max_trim last steps of each episode
    backbone: str = "conv4"  # conv4 | res12
    backbone_channels: List[int] = field(default_factory=lambda: [64, 64, 64, 64])  # widths of the 4 backbone blocks
    vision_dropout: float = 0.0  # dropout in the backbone
    batch_size: int = 32  # episodes per update
    steps: int = 1000  # updates
    lr: float = 1e-3  # Adam learning rate (the peak with the noam schedule)
    lr_schedule: str = "constant"  # constant | noam (linear warm-up over warmup_steps, then 1/sqrt(step) decay)
    warmup_steps: int = 5000  # noam: warm-up updates
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.995])  # Adam betas (SRWM paper)
    adam_eps: float = 1e-9  # Adam epsilon (SRWM paper)
    grad_clip: float = 0.0  # global gradient-norm clip (0: none)
    eval_every: int = 100  # updates between validations; the best validation accuracy selects the model
    eval_episodes: int = 500  # validation episodes (the same ones at every validation)
    test_episodes: int = 1000  # test episodes for the selected model at the end (0: no test)


@dataclass
class ImpalaConfig:
    """IMPALA / V-trace learner (defaults from the SRWM paper's procgen runs)."""

    total_frames: int = 300_000  # env frames to learn from
    unroll_length: int = 50  # steps per rollout
    batch_size: int = 32  # env rollouts (rows) per update; a multiple of runner.envs_per_actor
    lr: float = 6e-4  # RMSProp learning rate, decayed linearly to 0 over total_frames
    rmsprop_alpha: float = 0.99  # RMSProp smoothing constant
    rmsprop_eps: float = 0.01  # RMSProp epsilon
    rmsprop_momentum: float = 0.0  # RMSProp momentum
    grad_norm_clip: float = 40.0  # global gradient-norm clip
    entropy_cost: float = 0.01  # weight of the entropy bonus
    baseline_cost: float = 0.5  # weight of the value loss
    gamma: float = 0.99  # discount
    reward_clip: bool = True  # clip rewards to [-1, 1] for learning
    eval_episodes: int = 10  # episodes per task for the final evaluation (0: none)
    eval_envs: int = 8  # parallel envs for the evaluation


@dataclass
class RunnerConfig:
    """Where actors and learner run."""

    name: str = "local"  # local (threads in one process) | ray
    num_actors: int = 1  # actor threads / Ray actors
    envs_per_actor: int = 16  # envs stepped together by one actor
    synchronous: bool = False  # local: act and learn in turn (reproducible, slower) instead of overlapping
    address: Optional[str] = None  # ray: cluster to join (else RAY_ADDRESS, else a local instance is started)
    num_cpus: Optional[int] = None  # ray: CPUs of a local instance (default: all)
    actor_cpus: Optional[float] = None  # ray: CPUs per actor (default: what the learner leaves, split evenly)
    actor_gpus: float = 0.0  # ray: GPUs per actor
    learner_cpus: float = 1.0  # ray: CPUs kept for the learner (the driver process)
    dashboard: bool = False  # ray: start the dashboard of a local instance (bound to 127.0.0.1)
    start_timeout_s: float = 60.0  # ray: seconds for the actors to start before the run stops with a message
    rollout_timeout_s: float = 300.0  # ray: seconds without any rollout before the run stops with a message


@dataclass
class TrainConfig:
    """Top level of ``python -m metarl.train``."""

    env: Any = MISSING  # the task (a config group: env=recall, ...)
    agent: AgentConfig = field(default_factory=AgentConfig)  # the core (a config group: agent=srwm, ...)
    impala: ImpalaConfig = field(default_factory=ImpalaConfig)  # RL learner settings
    runner: RunnerConfig = field(default_factory=RunnerConfig)  # RL runner (a config group: runner=local, ...)
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
    cs.store(group="env", name="formal_schema", node=FormalEnvConfig)
    cs.store(group="env", name="chomsky_schema", node=ChomskyEnvConfig)
    cs.store(group="env", name="ctlpp_schema", node=CTLPPEnvConfig)
    cs.store(group="env", name="procgen_schema", node=ProcgenEnvConfig)
    cs.store(group="env", name="gym_schema", node=GymEnvConfig)
    cs.store(group="env", name="memory_schema", node=MemoryEnvConfig)
    cs.store(group="env", name="fewshot_schema", node=FewShotEnvConfig)
    cs.store(group="runner", name="runner_schema", node=RunnerConfig)
