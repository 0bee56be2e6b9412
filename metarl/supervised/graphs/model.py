"""Encode-process-decode over CLRS trajectories (Veličković et al. 2022; Ibarz et al. 2022).

At each algorithm step t (one processor call per hint frame transition)::

    node, edge, graph <- sum of a linear encoder per input and per hint (hint t: the truth under teacher
                         forcing, else the model's own soft prediction of it)
    hidden            <- processor(node, edge, graph, adj, hidden)          metarl.layers.graph_processors
    hidden            <- memory core over steps, nodes as the batch axis    (env.memory; none: skipped)
    predictions       <- a decoder per hint (of step t + 1) and per output, by type, from [node, hidden],
                         the edge features (plus the triplet edge latents, as CLRS) and the graph features

Outputs are read at each trajectory's last step (shorter trajectories in a batch keep their last values).
:class:`EncodeProcessDecode` is one algorithm's model; :class:`Generalist` (Ibarz et al. 2022) shares one
processor and memory core between several algorithms, each with its own encoders and decoders
(:class:`AlgorithmHeads`); both run :func:`unroll`.
Representations ("soft" form: what the encoders read and the decoders' softmax gives): scalar and mask
``[..]``; mask_one ``[B, N]`` over nodes; categorical ``[.., C]``; pointer ``[B, N, N]`` (row i: over the
node i points to), encoded as an edge feature as CLRS does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...layers.graph_processors import NEG, make_processor
from .samplers import Trajectory
from .specs import Feature, stage


# ---------------------------------------------------------------- batches
@dataclass
class GraphBatch:
    """Trajectories of one algorithm, padded to N nodes and T hint frames.

    inputs/outputs: {name: [B, ...]}; hints: {name: [B, T, ...]} (after its length, a trajectory repeats its
    last frame); lengths [B]: hint frames; mask [B, N]: real nodes; algorithm: the SPECS name (which
    encoders and decoders of a generalist read it; "" when not given). Padding: -1 for pointers and
    categoricals, NaN for scalars (no target), 0 otherwise."""

    inputs: Dict[str, torch.Tensor]
    hints: Dict[str, torch.Tensor]
    outputs: Dict[str, torch.Tensor]
    lengths: torch.Tensor
    mask: torch.Tensor
    algorithm: str = ""

    def to(self, device) -> "GraphBatch":
        move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return GraphBatch(move(self.inputs), move(self.hints), move(self.outputs), self.lengths.to(device),
                          self.mask.to(device), self.algorithm)

    def __len__(self) -> int:
        return len(self.lengths)


def _pad(value: np.ndarray, feature: Feature, n: int, lead: int) -> np.ndarray:
    """Pad the node axes (after ``lead`` leading axes) of one value to n nodes."""
    fill = -1 if feature.type in ("pointer", "categorical") else (np.nan if feature.type == "scalar" else 0)
    axes = {"node": 1, "edge": 2, "graph": 0}[feature.location]
    if axes == 0:
        return value
    widths = [(0, 0)] * lead + [(0, n - value.shape[lead + a]) for a in range(axes)]
    return np.pad(value, widths, constant_values=fill)


def collate(trajectories: List[Trajectory], spec: Dict[str, Feature], algorithm: str = "") -> GraphBatch:
    """Stack trajectories (any sizes and lengths) of the algorithm ``spec`` describes (named ``algorithm``)
    into one padded GraphBatch."""
    sizes = [len(t.inputs["pos"]) for t in trajectories]
    n, T = max(sizes), max(t.length for t in trajectories)

    def stack(name, lead):
        f = spec[name]
        values = []
        for t in trajectories:
            v = {"input": t.inputs, "hint": t.hints, "output": t.outputs}[f.stage][name]
            if lead:  # repeat the last frame up to T
                v = np.concatenate([v, np.repeat(v[-1:], T - len(v), axis=0)])
            values.append(_pad(v, f, n, lead))
        dtype = torch.long if f.type in ("pointer", "categorical") else torch.float32
        return torch.as_tensor(np.stack(values)).to(dtype)

    return GraphBatch({k: stack(k, 0) for k in stage(spec, "input")}, {k: stack(k, 1) for k in stage(spec, "hint")},
                      {k: stack(k, 0) for k in stage(spec, "output")},
                      torch.tensor([t.length for t in trajectories]),
                      torch.arange(n)[None, :] < torch.tensor(sizes)[:, None], algorithm)


def soft_truth(feature: Feature, value: torch.Tensor, n: int) -> torch.Tensor:
    """The ground truth in the soft form the encoders read (one-hot for pointers and categoricals)."""
    if feature.type == "pointer":
        return F.one_hot(value.clamp_min(0), n).float() * (value >= 0)[..., None]
    if feature.type == "categorical":
        return F.one_hot(value.clamp_min(0), feature.num_classes).float() * (value >= 0)[..., None]
    return torch.nan_to_num(value.float(), nan=0.0)


# ---------------------------------------------------------------- encoders and decoders
class Encoder(nn.Module):
    """A feature's soft form -> its contribution to the node, edge or graph features (pointers: edges)."""

    def __init__(self, feature: Feature, d: int):
        super().__init__()
        self.feature = feature
        self.target = "edge" if feature.type == "pointer" else feature.location
        self.linear = nn.Linear(feature.num_classes if feature.type == "categorical" else 1, d)

    def forward(self, soft: torch.Tensor) -> torch.Tensor:
        return self.linear(soft if self.feature.type == "categorical" else soft[..., None])


class Decoder(nn.Module):
    """Logits of one feature from node features z [B, N, 2D], edge features [B, N, N, D] and graph [B, D].

    node: a linear map of z_i (mask_one: one logit per node, softmax over nodes); pointer (CLRS):
    logit_ij = w · max(P_1 z_i, P_2 z_j + P_3 e_ij); edge: a linear map of relu(A z_i + B z_j + C e_ij);
    graph: a linear map of [max_i z_i, g]."""

    def __init__(self, feature: Feature, d: int):
        super().__init__()
        self.feature, t = feature, feature.type
        out = feature.num_classes if t == "categorical" else 1
        if feature.location == "node" and t == "pointer":
            self.p1, self.p2, self.p3, self.head = nn.Linear(2 * d, d), nn.Linear(2 * d, d), nn.Linear(d, d), nn.Linear(d, 1)
        elif feature.location == "node":
            self.head = nn.Linear(2 * d, out)
        elif feature.location == "edge":
            self.a, self.b, self.c, self.head = nn.Linear(2 * d, d), nn.Linear(2 * d, d), nn.Linear(d, d), nn.Linear(d, out)
        else:
            self.head = nn.Linear(3 * d, out)

    def forward(self, z: torch.Tensor, edge: torch.Tensor, graph: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f = self.feature
        if f.location == "node" and f.type == "pointer":
            pairs = torch.maximum(self.p1(z)[:, :, None], self.p2(z)[:, None, :] + self.p3(edge))
            return self.head(pairs).squeeze(-1).masked_fill(~mask[:, None, :], NEG)
        if f.location == "node":
            out = self.head(z)
            return out.squeeze(-1).masked_fill(~mask, NEG) if f.type == "mask_one" else \
                (out if f.type == "categorical" else out.squeeze(-1))
        if f.location == "edge":
            out = self.head(torch.relu(self.a(z)[:, :, None] + self.b(z)[:, None, :] + self.c(edge)))
            return out if f.type == "categorical" else out.squeeze(-1)
        pooled = z.masked_fill(~mask[..., None], NEG).max(dim=1).values
        out = self.head(torch.cat([pooled, graph], dim=-1))
        return out if f.type == "categorical" else out.squeeze(-1)


def soft_prediction(feature: Feature, logits: torch.Tensor) -> torch.Tensor:
    """Decoder logits -> the soft form fed back as the next step's hint input."""
    if feature.type == "scalar":
        return logits
    if feature.type == "mask":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)  # mask_one, pointer: over nodes; categorical: over classes


class AlgorithmHeads(nn.Module):
    """The algorithm-specific part of encode-process-decode: a linear encoder per input and hint and a decoder
    per hint and output of one algorithm's ``spec``, all of width ``d``. hint_mode ``none``: no hint encoders
    or decoders."""

    def __init__(self, spec: Dict[str, Feature], d: int = 128, hint_mode: str = "teacher_forcing"):
        super().__init__()
        self.spec, self.d, self.hint_mode = spec, d, hint_mode
        self.input_names, self.output_names = list(stage(spec, "input")), list(stage(spec, "output"))
        self.hint_names = [] if hint_mode == "none" else list(stage(spec, "hint"))
        self.encoders = nn.ModuleDict({k: Encoder(spec[k], d) for k in self.input_names + self.hint_names})
        self.decoders = nn.ModuleDict({k: Decoder(spec[k], d) for k in self.output_names + self.hint_names})

    def encode(self, values: Dict[str, torch.Tensor], B: int, N: int, device) -> Tuple[torch.Tensor, ...]:
        """Sum of the encoders of ``values`` (soft forms) -> node [B, N, d], edge [B, N, N, d], graph [B, d]."""
        parts = {"node": torch.zeros(B, N, self.d, device=device), "edge": torch.zeros(B, N, N, self.d, device=device),
                 "graph": torch.zeros(B, self.d, device=device)}
        for name, soft in values.items():
            encoder = self.encoders[name]
            parts[encoder.target] = parts[encoder.target] + encoder(soft)
        return parts["node"], parts["edge"], parts["graph"]


def unroll(heads: AlgorithmHeads, processor: nn.Module, memory: Optional[nn.Module], batch: GraphBatch,
           full_graph: bool = True, teacher: bool = False) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Run ``heads``'s encoders, ``processor`` (and the ``memory`` core) and ``heads``'s decoders over the
    algorithm steps of ``batch`` (the module docstring). teacher: the next step reads the true hints, else
    the soft predictions. Returns (output logits {name: [B, ...]}, hint logits {name: [B, T - 1, ...]}:
    step t + 1 predicted at t)."""
    spec, d, mask = heads.spec, heads.d, batch.mask
    B, N = mask.shape
    device = mask.device
    T = int(batch.lengths.max())
    inputs = {k: soft_truth(spec[k], batch.inputs[k], N) for k in heads.input_names}
    if full_graph:
        adj = mask[:, :, None] & mask[:, None, :]
    else:
        adj = (batch.inputs["adj"] > 0) & mask[:, :, None] & mask[:, None, :]
    current = {k: soft_truth(spec[k], batch.hints[k][:, 0], N) for k in heads.hint_names}
    hidden = torch.zeros(B, N, d, device=device)
    state = memory.initial_state(B * N, device) if memory is not None else None
    outputs: Dict[str, torch.Tensor] = {}
    hint_logits: Dict[str, List[torch.Tensor]] = {k: [] for k in heads.hint_names}
    for t in range(T - 1):
        node, edge, graph = heads.encode({**inputs, **current}, B, N, device)
        new = processor(node, edge, graph, adj, hidden, mask)
        if memory is not None:
            y, state = memory(new.reshape(B * N, 1, d), state)
            new = y.reshape(B, N, d) * mask[..., None]
        active = (t < batch.lengths - 1).view(B, *[1] * (hidden.dim() - 1))
        hidden = torch.where(active, new, hidden)
        z = torch.cat([node, hidden], dim=-1)
        if processor.last_edges is not None:  # triplet edge latents join the decoders' edge features
            edge = edge + processor.last_edges
        for name in heads.output_names:
            logits = heads.decoders[name](z, edge, graph, mask)
            act = active.view(B, *[1] * (logits.dim() - 1))
            outputs[name] = logits if name not in outputs else torch.where(act, logits, outputs[name])
        for name in heads.hint_names:
            logits = heads.decoders[name](z, edge, graph, mask)
            hint_logits[name].append(logits)
            current[name] = soft_truth(spec[name], batch.hints[name][:, t + 1], N) if teacher else \
                soft_prediction(spec[name], logits)
    return outputs, {k: torch.stack(v, dim=1) for k, v in hint_logits.items() if v}


class EncodeProcessDecode(AlgorithmHeads):
    """The model of the module docstring for one algorithm's ``spec``.

    processor: ``mpnn | gmpnn | triplet_mpnn | triplet_gmpnn``; memory: an optional metarl core of width
    ``d`` run over the algorithm steps with the nodes as its batch axis; hint_mode: ``teacher_forcing``
    (training reads the true hints), ``predicted`` (reads its own) or ``none`` (no hint inputs or
    predictions); evaluation always reads its own predictions. full_graph: message passing over every pair
    of real nodes (CLRS's MPNN) instead of the ``adj`` input."""

    def __init__(self, spec: Dict[str, Feature], d: int = 128, processor: str = "triplet_gmpnn",
                 memory: Optional[nn.Module] = None, hint_mode: str = "teacher_forcing", d_triplet: int = 8,
                 full_graph: bool = True):
        super().__init__(spec, d, hint_mode)
        self.full_graph = full_graph
        self.processor = make_processor(processor, d, d_triplet)
        self.memory = memory

    def spec_for(self, batch: GraphBatch) -> Dict[str, Feature]:
        """The spec of ``batch``'s algorithm (this model's one)."""
        return self.spec

    def forward(self, batch: GraphBatch) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """(output logits {name: [B, ...]}, hint logits {name: [B, T - 1, ...]}: step t + 1 predicted at t)."""
        return unroll(self, self.processor, self.memory, batch, self.full_graph,
                      teacher=self.training and self.hint_mode == "teacher_forcing")


class Generalist(nn.Module):
    """Ibarz et al. 2022's generalist: one processor (and memory core) shared by every algorithm, the
    encoders and decoders per algorithm (:class:`AlgorithmHeads`, ``heads[algorithm]``). ``model(batch)``
    runs the heads of ``batch.algorithm``; the other arguments are those of :class:`EncodeProcessDecode`."""

    def __init__(self, specs: Dict[str, Dict[str, Feature]], d: int = 128, processor: str = "triplet_gmpnn",
                 memory: Optional[nn.Module] = None, hint_mode: str = "teacher_forcing", d_triplet: int = 8,
                 full_graph: bool = True):
        super().__init__()
        self.d, self.hint_mode, self.full_graph = d, hint_mode, full_graph
        self.heads = nn.ModuleDict({name: AlgorithmHeads(spec, d, hint_mode) for name, spec in specs.items()})
        self.processor = make_processor(processor, d, d_triplet)
        self.memory = memory

    def spec_for(self, batch: GraphBatch) -> Dict[str, Feature]:
        return self.heads[batch.algorithm].spec

    def forward(self, batch: GraphBatch) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        if batch.algorithm not in self.heads:
            raise KeyError(f"batch.algorithm={batch.algorithm!r}: this generalist knows {', '.join(self.heads)}")
        return unroll(self.heads[batch.algorithm], self.processor, self.memory, batch, self.full_graph,
                      teacher=self.training and self.hint_mode == "teacher_forcing")


# ---------------------------------------------------------------- losses and scores
def feature_loss(feature: Feature, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean loss over the valid entries of one feature. valid: bool, broadcastable to the entries (for
    mask_one: one flag per example and step)."""
    t = feature.type
    if t == "mask_one":
        per = -(target * torch.log_softmax(logits, -1)).sum(-1)
        keep = valid & (target.sum(-1) > 0)
    elif t in ("pointer", "categorical"):
        keep = valid & (target >= 0)
        per = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.clamp_min(0).reshape(-1),
                              reduction="none").view(target.shape)
    else:
        keep = valid & ~torch.isnan(target)
        clean = torch.nan_to_num(target, nan=0.0)
        per = (logits - clean) ** 2 if t == "scalar" else \
            F.binary_cross_entropy_with_logits(logits, clean, reduction="none")
    keep = keep.expand_as(per)
    return (per * keep).sum() / keep.sum().clamp_min(1)


def valid_entries(feature: Feature, mask: torch.Tensor, target_shape) -> torch.Tensor:
    """Bool [B, ...] (leading axes of target_shape beyond B broadcast): which entries are real nodes/pairs."""
    if feature.type == "mask_one" or feature.location == "graph":
        return torch.ones(mask.shape[0], dtype=torch.bool, device=mask.device)
    if feature.location == "node":
        return mask
    return mask[:, :, None] & mask[:, None, :]


def counts(feature: Feature, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> Dict[str, float]:
    """Sufficient statistics of the CLRS score of one output: hits/total (accuracy), tp/fp/fn (mask F1),
    squared error/total (scalar MSE)."""
    valid = valid_entries(feature, mask, target.shape)
    t = feature.type
    if t == "mask_one":
        return {"hits": (logits.argmax(-1) == target.argmax(-1)).sum().item(), "total": len(target)}
    if t in ("pointer", "categorical"):
        keep = valid & (target >= 0)
        return {"hits": ((logits.argmax(-1) == target) & keep).sum().item(), "total": keep.sum().item()}
    keep = valid & ~torch.isnan(target)
    if t == "mask":
        pred, truth = (logits > 0) & keep, (target > 0.5) & keep
        return {"tp": (pred & truth).sum().item(), "fp": (pred & ~truth).sum().item(),
                "fn": (~pred & truth).sum().item()}
    return {"sq": ((logits - torch.nan_to_num(target)) ** 2 * keep).sum().item(), "total": keep.sum().item()}


def score(feature: Feature, c: Dict[str, float]) -> Tuple[str, float]:
    """(metric name, value) from accumulated counts: accuracy, f1 (CLRS: 1 when nothing is true or
    predicted) or mse."""
    if feature.type == "mask":
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        if tp + fp + fn == 0:
            return "f1", 1.0
        return "f1", 2 * tp / max(2 * tp + fp + fn, 1)
    if feature.type == "scalar":
        return "mse", c["sq"] / max(c["total"], 1)
    return "accuracy", c["hits"] / max(c["total"], 1)
