"""``env=graphs/<algorithm>``: one CLRS algorithm as an engine task.

Train on fresh trajectories every update: each batch has one size drawn from ``train_sizes`` (CLRS: 4, 7,
11, 13, 16). Evaluate ``val`` (``val_examples`` per training size, drawn once) during training and ``test``
(``test_examples`` at ``test_size``, CLRS: 64) at the end, on the model with the best ``val/score``.

Metrics per set: ``<output>_<accuracy|f1|mse>`` for every output (CLRS: accuracy for pointers, mask_one and
categoricals, F1 for masks) and ``score``, their mean (the mse of scalar outputs left out). Training logs
``losses/output`` and ``losses/hint``.
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
from .model import EncodeProcessDecode, GraphBatch, collate, counts, feature_loss, score, valid_entries
from .samplers import SAMPLERS, sample
from .specs import SPECS

HINT_MODES = ("teacher_forcing", "predicted", "none")


@dataclass
class GraphsConfig(TaskConfig):
    """``env=graphs/<algorithm>``: a CLRS algorithm, encode-process-decode (metarl/supervised/graphs)."""

    name: str = "graphs"  # run name
    family: str = "graphs"  # registered task (metarl.engine.registry.TASKS)
    algorithm: str = "bfs"  # one of metarl.supervised.graphs.SPECS (insertion_sort, bfs, dijkstra, ...)
    train_sizes: List[int] = field(default_factory=lambda: [4, 7, 11, 13, 16])  # node counts to train on (one per batch)
    test_size: int = 64  # node count of the test set (out of distribution)
    edge_probability: float = 0.5  # Erdős–Rényi edge probability of the graph algorithms
    batch_size: int = 32  # trajectories per update
    eval_every: int = 100  # updates between evaluations of val
    val_examples: int = 32  # val trajectories per training size (drawn once)
    test_examples: int = 64  # test trajectories at test_size (drawn once)
    processor: str = "triplet_gmpnn"  # mpnn | gmpnn | triplet_mpnn | triplet_gmpnn | none (no message passing: baseline)
    hidden: int = 128  # width of node, edge and graph features and of the processor
    triplet_features: int = 8  # width of the triplet messages
    full_graph: bool = True  # message passing between every pair of nodes (CLRS's MPNN); false: along adj
    memory: str = "none"  # none | a metarl core (lstm, srwm, delta, lt, ...) carrying each node's state over steps
    memory_layers: int = 1  # layers of the memory core
    memory_heads: int = 1  # heads of the memory core
    hint_mode: str = "teacher_forcing"  # teacher_forcing | predicted (own hints fed back) | none (no hints)
    hint_loss_weight: float = 1.0  # weight of the hint loss (0: hints only as inputs)


class GraphAlgorithmTask(Task):
    """The task of the module docstring."""

    throughput_unit = "examples"
    eval_sets = ["val"]
    test_sets = ["test"]
    selection = {"val/score": "max"}

    def __init__(self, cfg: DictConfig):
        self.cfg, self.env = cfg, cfg.env
        check_choice("env.algorithm", self.env.algorithm, sorted(SAMPLERS))
        check_choice("env.processor", self.env.processor, PROCESSORS)
        check_choice("env.hint_mode", self.env.hint_mode, HINT_MODES)
        if self.env.memory != "none":
            check_choice("env.memory", self.env.memory, ["none"] + cores.names())
        if not self.env.train_sizes or min(self.env.train_sizes) < 4 or self.env.test_size < 4:
            raise ConfigError(f"env.train_sizes={list(self.env.train_sizes)} and env.test_size={self.env.test_size}: "
                              "need at least one size, every size >= 4")
        self.spec = SPECS[self.env.algorithm]
        self._sets = None

    def build_model(self) -> nn.Module:
        env = self.env
        memory = None
        if env.memory != "none":
            memory = cores.make(env.memory, d_model=env.hidden, num_layers=env.memory_layers,
                                num_heads=env.memory_heads, ff="none")
        return EncodeProcessDecode(self.spec, env.hidden, env.processor, memory, env.hint_mode,
                                   env.triplet_features, env.full_graph)

    def _trajectories(self, n: int, count: int, rng: np.random.Generator):
        return [sample(self.env.algorithm, n, rng, self.env.edge_probability) for _ in range(count)]

    def train_batch(self, step: int, generator: torch.Generator) -> GraphBatch:
        sizes = list(self.env.train_sizes)
        n = sizes[int(torch.randint(len(sizes), (1,), generator=generator))]
        rng = np.random.default_rng(int(torch.randint(2 ** 62, (1,), generator=generator)))
        return collate(self._trajectories(n, self.env.batch_size, rng), self.spec)

    @property
    def sets(self) -> Dict[str, List[GraphBatch]]:
        """The evaluation sets, drawn once from seed + 10000: val (per training size), test (test_size)."""
        if self._sets is None:
            rng = np.random.default_rng(self.cfg.seed + 10_000)
            size = self.env.batch_size
            val = [collate(self._trajectories(n, self.env.val_examples, rng), self.spec) for n in self.env.train_sizes]
            test = [collate(self._trajectories(self.env.test_size, min(size, self.env.test_examples - i), rng), self.spec)
                    for i in range(0, self.env.test_examples, size)]
            self._sets = {"val": val, "test": test}
        return self._sets

    def loss(self, model: nn.Module, batch: GraphBatch, state) -> StepOutput:
        outputs, hints = model(batch)
        output_loss = sum(feature_loss(model.spec[k], logits, batch.outputs[k],
                                       valid_entries(model.spec[k], batch.mask, batch.outputs[k].shape))
                          for k, logits in outputs.items())
        hint_loss = torch.zeros((), device=batch.mask.device)
        if hints and self.env.hint_loss_weight > 0:
            T = hints[next(iter(hints))].shape[1]
            steps = torch.arange(1, T + 1, device=batch.mask.device)[None, :] < batch.lengths[:, None]  # [B, T-1]
            for k, logits in hints.items():
                f = model.spec[k]
                valid = valid_entries(f, batch.mask, None)
                valid = steps.view(*steps.shape, *[1] * (valid.dim() - 1)) & valid[:, None]
                hint_loss = hint_loss + feature_loss(f, logits, batch.hints[k][:, 1:], valid)
        loss = output_loss + self.env.hint_loss_weight * hint_loss
        metrics = {"losses/output": output_loss.item(), "losses/hint": hint_loss.item()}
        return StepOutput(loss + (model.memory.aux_loss() if model.memory is not None else 0.0), count=len(batch),
                          metrics=metrics)

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict[str, float]:
        return evaluate(model, self.sets[name], self.cfg.device)


@torch.no_grad()
def evaluate(model: EncodeProcessDecode, batches: List[GraphBatch], device="cpu") -> Dict[str, float]:
    """CLRS scores over ``batches`` (see the module docstring)."""
    totals: Dict[str, Dict[str, float]] = {}
    for batch in batches:
        batch = batch.to(device)
        outputs, _ = model(batch)
        for k, logits in outputs.items():
            c = counts(model.spec[k], logits, batch.outputs[k], batch.mask)
            acc = totals.setdefault(k, {})
            for key, value in c.items():
                acc[key] = acc.get(key, 0) + value
    metrics, scores = {}, []
    for k, c in totals.items():
        metric, value = score(model.spec[k], c)
        metrics[f"{k}_{metric}"] = value
        if metric != "mse":
            scores.append(value)
    metrics["score"] = sum(scores) / len(scores) if scores else float("nan")
    return metrics


register_task("graphs", GraphsConfig)(GraphAlgorithmTask)
