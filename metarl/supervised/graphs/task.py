"""``env=clrs/<algorithm>`` (alias ``env=graphs/<algorithm>``): one CLRS algorithm as an engine task, and
``env=clrs/multi``: the generalist of Ibarz et al. 2022 (one processor for several algorithms).

Train on fresh trajectories every update: each batch has one size drawn from ``train_sizes`` (CLRS: 4, 7,
11, 13, 16). Evaluate ``val`` (``val_examples`` per training size, drawn once) during training and ``test``
(``test_examples`` at ``test_size``, CLRS: 64) at the end, on the model with the best ``val/score``.

Metrics per set: ``<output>_<accuracy|f1|mse>`` for every output (CLRS: accuracy for pointers, mask_one and
categoricals, F1 for masks) and ``score``, their mean (the mse of scalar outputs left out). Training logs
``losses/output`` and ``losses/hint``.

The generalist (:class:`GeneralistTask`, ``env.algorithms``): one batch of one algorithm per update, in turn
(``env.schedule=round_robin``, as the reference's multi-algorithm training) or drawn at random
(``random``); the processor and memory core are shared, the encoders and decoders are the algorithm's own
(:class:`~metarl.supervised.graphs.model.Generalist`). Its metrics are those above per algorithm,
``<set>/<algorithm>/<metric>`` (``eval/val/bfs/score``, ``test/test/dijkstra/pi_accuracy``), and
``<set>/score``, the mean of the algorithms' scores, on which the model is selected; training also logs
``losses/<algorithm>``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from ... import cores
from ...engine import StepOutput, Task, TaskConfig, register_task
from ...errors import ConfigError, check_choice
from ...layers.graph_processors import PROCESSORS
from .model import EncodeProcessDecode, Generalist, GraphBatch, collate, counts, feature_loss, score, valid_entries
from .samplers import SAMPLERS, sample
from .specs import CATEGORIES, SPECS

HINT_MODES = ("teacher_forcing", "predicted", "none")
SCHEDULES = ("round_robin", "random")


@dataclass
class GraphModelConfig(TaskConfig):
    """What the single-algorithm and the generalist tasks share: data sizes, evaluation, the model."""

    name: str = "graphs"  # run name
    family: str = "graphs"  # registered task (metarl.engine.registry.TASKS)
    train_sizes: List[int] = field(default_factory=lambda: [4, 7, 11, 13, 16])  # node counts to train on (one per batch)
    test_size: int = 64  # node count of the test set (out of distribution)
    edge_probability: float = 0.5  # Erdős–Rényi edge probability of the graph algorithms
    batch_size: int = 32  # trajectories per update
    eval_every: int = 100  # updates between evaluations of val
    val_examples: int = 32  # val trajectories per training size (drawn once; per algorithm)
    test_examples: int = 64  # test trajectories at test_size (drawn once; per algorithm)
    processor: str = "triplet_gmpnn"  # mpnn | gmpnn | triplet_mpnn | triplet_gmpnn | none (no message passing: baseline)
    hidden: int = 128  # width of node, edge and graph features and of the processor
    triplet_features: int = 8  # width of the triplet messages
    full_graph: bool = True  # message passing between every pair of nodes (CLRS's MPNN); false: along adj
    memory: str = "none"  # none | a metarl core (lstm, srwm, delta, lt, ...) carrying each node's state over steps
    memory_layers: int = 1  # layers of the memory core
    memory_heads: int = 1  # heads of the memory core
    hint_mode: str = "teacher_forcing"  # teacher_forcing | predicted (own hints fed back) | none (no hints)
    hint_loss_weight: float = 1.0  # weight of the hint loss (0: hints only as inputs)


@dataclass
class GraphsConfig(GraphModelConfig):
    """``env=clrs/<algorithm>``: a CLRS algorithm, encode-process-decode (metarl/supervised/graphs)."""

    algorithm: str = "bfs"  # one of metarl.supervised.graphs.SPECS (insertion_sort, bfs, dijkstra, ...)


@dataclass
class GeneralistConfig(GraphModelConfig):
    """``env=clrs/multi``: one processor trained on several CLRS algorithms (Ibarz et al. 2022)."""

    name: str = "clrs_multi"  # run name
    family: str = "graphs_multi"  # registered task (metarl.engine.registry.TASKS)
    algorithms: List[str] = field(default_factory=lambda: list(SPECS))  # SPECS names or CATEGORIES (sorting, graphs...)
    schedule: str = "round_robin"  # round_robin (one algorithm per update, in turn) | random (one drawn per update)


def _check_model(env) -> None:
    check_choice("env.processor", env.processor, PROCESSORS)
    check_choice("env.hint_mode", env.hint_mode, HINT_MODES)
    if env.memory != "none":
        check_choice("env.memory", env.memory, ["none"] + cores.names())
    if not env.train_sizes or min(env.train_sizes) < 4 or env.test_size < 4:
        raise ConfigError(f"env.train_sizes={list(env.train_sizes)} and env.test_size={env.test_size}: "
                          "need at least one size, every size >= 4")


def _memory(env):
    if env.memory == "none":
        return None
    return cores.make(env.memory, d_model=env.hidden, num_layers=env.memory_layers, num_heads=env.memory_heads,
                      ff="none")


def expand_algorithms(names) -> List[str]:
    """``env.algorithms`` with each category (``CATEGORIES``: sorting, graphs, ...) replaced by its
    algorithms, in order, without repeats; a ConfigError names an unknown one."""
    out: List[str] = []
    for name in names:
        if name not in SPECS and name not in CATEGORIES:
            raise ConfigError(f"env.algorithms: {name!r} is not known; choose algorithms of "
                              f"{', '.join(sorted(SPECS))} or categories of {', '.join(CATEGORIES)}")
        out += [a for a in CATEGORIES.get(name, [name]) if a not in out]
    if not out:
        raise ConfigError("env.algorithms is empty; name at least one algorithm, e.g. env.algorithms=[bfs,minimum]")
    return out


class GraphAlgorithmTask(Task):
    """The single-algorithm task of the module docstring."""

    throughput_unit = "examples"
    eval_sets = ["val"]
    test_sets = ["test"]
    selection = {"val/score": "max"}

    def __init__(self, cfg: DictConfig):
        self.cfg, self.env = cfg, cfg.env
        check_choice("env.algorithm", self.env.algorithm, sorted(SAMPLERS))
        _check_model(self.env)
        self.spec = SPECS[self.env.algorithm]
        self._sets = None

    def build_model(self) -> nn.Module:
        env = self.env
        return EncodeProcessDecode(self.spec, env.hidden, env.processor, _memory(env), env.hint_mode,
                                   env.triplet_features, env.full_graph)

    def _batch(self, algorithm: str, n: int, count: int, rng: np.random.Generator) -> GraphBatch:
        trajectories = [sample(algorithm, n, rng, self.env.edge_probability) for _ in range(count)]
        return collate(trajectories, SPECS[algorithm], algorithm)

    def _draw(self, algorithm: str, generator: torch.Generator) -> GraphBatch:
        """One training batch of ``algorithm``, its size drawn from train_sizes."""
        sizes = list(self.env.train_sizes)
        n = sizes[int(torch.randint(len(sizes), (1,), generator=generator))]
        rng = np.random.default_rng(int(torch.randint(2 ** 62, (1,), generator=generator)))
        return self._batch(algorithm, n, self.env.batch_size, rng)

    def train_batch(self, step: int, generator: torch.Generator) -> GraphBatch:
        return self._draw(self.env.algorithm, generator)

    def _draw_sets(self, algorithm: str, rng: np.random.Generator) -> Dict[str, List[GraphBatch]]:
        """val (one batch per training size) and test (test_examples at test_size, in batches) of ``algorithm``."""
        env, size = self.env, self.env.batch_size
        val = [self._batch(algorithm, n, env.val_examples, rng) for n in env.train_sizes]
        test = [self._batch(algorithm, env.test_size, min(size, env.test_examples - i), rng)
                for i in range(0, env.test_examples, size)]
        return {"val": val, "test": test}

    @property
    def sets(self) -> Dict[str, List[GraphBatch]]:
        """The evaluation sets, drawn once from seed + 10000: val (per training size), test (test_size)."""
        if self._sets is None:
            self._sets = self._draw_sets(self.env.algorithm, np.random.default_rng(self.cfg.seed + 10_000))
        return self._sets

    def loss(self, model: nn.Module, batch: GraphBatch, state) -> StepOutput:
        outputs, hints = model(batch)
        output_loss, hint_loss = trajectory_loss(model.spec_for(batch), outputs, hints, batch)
        loss = output_loss + self.env.hint_loss_weight * hint_loss
        metrics = {"losses/output": output_loss.item(), "losses/hint": hint_loss.item()}
        return StepOutput(loss + (model.memory.aux_loss() if model.memory is not None else 0.0), count=len(batch),
                          metrics=metrics)

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict[str, float]:
        return evaluate(model, self.sets[name], self.cfg.device)


class GeneralistTask(GraphAlgorithmTask):
    """The generalist of the module docstring (``env=clrs/multi``)."""

    def __init__(self, cfg: DictConfig):
        self.cfg, self.env = cfg, cfg.env
        self.algorithms = expand_algorithms(self.env.algorithms)
        check_choice("env.schedule", self.env.schedule, SCHEDULES)
        _check_model(self.env)
        self._sets = None

    def build_model(self) -> nn.Module:
        env = self.env
        return Generalist({a: SPECS[a] for a in self.algorithms}, env.hidden, env.processor, _memory(env),
                          env.hint_mode, env.triplet_features, env.full_graph)

    def algorithm_of(self, step: int, generator: torch.Generator) -> str:
        """The algorithm trained at update ``step`` (from 1)."""
        if self.env.schedule == "round_robin":
            return self.algorithms[(step - 1) % len(self.algorithms)]
        return self.algorithms[int(torch.randint(len(self.algorithms), (1,), generator=generator))]

    def train_batch(self, step: int, generator: torch.Generator) -> GraphBatch:
        return self._draw(self.algorithm_of(step, generator), generator)

    @property
    def sets(self) -> Dict[str, Dict[str, List[GraphBatch]]]:
        """{set: {algorithm: batches}}, each algorithm's drawn as the single task draws it (same seed)."""
        if self._sets is None:
            per = {a: self._draw_sets(a, np.random.default_rng(self.cfg.seed + 10_000)) for a in self.algorithms}
            self._sets = {name: {a: per[a][name] for a in self.algorithms} for name in ("val", "test")}
        return self._sets

    def loss(self, model: nn.Module, batch: GraphBatch, state) -> StepOutput:
        out = super().loss(model, batch, state)
        out.metrics[f"losses/{batch.algorithm}"] = out.loss.item()
        return out

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict[str, float]:
        metrics: Dict[str, float] = {}
        for algorithm, batches in self.sets[name].items():
            metrics.update({f"{algorithm}/{k}": v for k, v in evaluate(model, batches, self.cfg.device).items()})
        metrics["score"] = sum(metrics[f"{a}/score"] for a in self.algorithms) / len(self.algorithms)
        return metrics


def trajectory_loss(spec, outputs: Dict[str, torch.Tensor], hints: Dict[str, torch.Tensor],
                    batch: GraphBatch):
    """(output loss, hint loss) of a model's logits on ``batch``: the sum over features of each one's mean loss
    over its valid entries (hints: the steps of each trajectory's own length)."""
    output_loss = sum(feature_loss(spec[k], logits, batch.outputs[k],
                                   valid_entries(spec[k], batch.mask, batch.outputs[k].shape))
                      for k, logits in outputs.items())
    hint_loss = torch.zeros((), device=batch.mask.device)
    if hints:
        T = hints[next(iter(hints))].shape[1]
        steps = torch.arange(1, T + 1, device=batch.mask.device)[None, :] < batch.lengths[:, None]  # [B, T-1]
        for k, logits in hints.items():
            f = spec[k]
            valid = valid_entries(f, batch.mask, None)
            valid = steps.view(*steps.shape, *[1] * (valid.dim() - 1)) & valid[:, None]
            hint_loss = hint_loss + feature_loss(f, logits, batch.hints[k][:, 1:], valid)
    return output_loss, hint_loss


@torch.no_grad()
def evaluate(model: nn.Module, batches: List[GraphBatch], device="cpu") -> Dict[str, float]:
    """CLRS scores over ``batches`` of one algorithm (see the module docstring)."""
    totals: Dict[str, Dict[str, float]] = {}
    for batch in batches:
        batch = batch.to(device)
        spec = model.spec_for(batch)
        outputs, _ = model(batch)
        for k, logits in outputs.items():
            c = counts(spec[k], logits, batch.outputs[k], batch.mask)
            acc = totals.setdefault(k, {})
            for key, value in c.items():
                acc[key] = acc.get(key, 0) + value
    metrics, scores = {}, []
    for k, c in totals.items():
        metric, value = score(spec[k], c)
        metrics[f"{k}_{metric}"] = value
        if metric != "mse":
            scores.append(value)
    metrics["score"] = sum(scores) / len(scores) if scores else float("nan")
    return metrics


register_task("graphs", GraphsConfig)(GraphAlgorithmTask)
register_task("graphs_multi", GeneralistConfig)(GeneralistTask)
