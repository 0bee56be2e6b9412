"""The dual form of linear layers trained by gradient descent (Irie, Csordás & Schmidhuber, ICML 2022).

A linear layer ``y = W x + b`` trained by SGD from ``(W_0, b_0)`` on inputs ``x_{s,n}`` (step s, row n of
that step's batch) with output gradients ``g_{s,n} = dL_s / dy_{s,n}`` has, after T steps::

    W_T = W_0 + Σ_{s,n} e_{s,n} x_{s,n}ᵀ          b_T = b_0 + Σ_{s,n} e_{s,n}          e_{s,n} = -c_s g_{s,n}

so its output on a new input ``x`` is unnormalised dot attention over every training pattern it saw::

    W_T x + b_T = W_0 x + b_0 + Σ_{s,n} e_{s,n} (x_{s,n}ᵀ x) + Σ_{s,n} e_{s,n}

keys ``x_{s,n}``, values ``e_{s,n}`` and the query ``x``. The coefficient ``c_s`` of step s is what the
optimiser makes of that step's gradient:

- SGD: ``c_s = lr_s``.
- SGD with momentum μ and dampening d (torch's ``buf_t = μ buf_{t-1} + (1 - d) g_t``, ``buf_1 = g_1``): step
  s's gradient enters every later update, ``c_s = γ_s Σ_{t=s..T} lr_t μ^{t-s}`` with ``γ_1 = 1`` and
  ``γ_s = 1 - d`` after; with Nesterov ``c_s = lr_s + μ γ_s Σ_{t=s..T} lr_t μ^{t-s}``. So ``c_s`` depends on the
  learning rates after s: the record keeps the raw gradients and the per-step learning rates, and the
  coefficients are computed when the record is read (for the weights "at step T", any T).
- A gradient rescaled by a scalar before the update (gradient-norm clipping) is exact too: the recorder
  measures the scale at each step (``p.grad`` against ``Σ g xᵀ``).
- Adam, AdamW, RMSProp, ... and weight decay are refused: their update is not a sum of the raw gradient
  outer products ``g xᵀ`` (Adam divides elementwise by a running RMS, weight decay shrinks ``W_0`` and every
  earlier term), so the layer is no longer ``W_0`` plus attention over its training inputs.

Recording (torch hooks: a forward hook on each chosen ``nn.Linear`` and a tensor hook on its output for
the gradient; an optimiser step pre-hook closes each step)::

    recorder = DualFormRecorder(model, optimizer, ["fc1", "head"], "records/run1")
    for x, y in batches:
        optimizer.zero_grad()
        recorder.annotate(labels=y, task=0)          # optional: label / task / example id of each row
        F.cross_entropy(model(x), y).backward()
        optimizer.step()                             # the recorder files this step's inputs and errors
    recorder.close()

    record = load_record("records/run1")             # {layer name: LayerRecord}
    dual_output(record["head"], x)                   # == model.head(x), from W_0 and the record alone
    spotlight(record["head"], x, k=5)                # the 5 training patterns x attends to most

The record is written to disk in chunks of about ``chunk_rows`` rows, so memory stays bounded; reading
streams the chunks too.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError, MissingPathError

FORMAT = "metarl-dual-record"
#: the relative mismatch between ``p.grad`` and ``scale · Σ g xᵀ`` above which a step is refused
GRAD_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}


# ----------------------------------------------------------------------------------------------- recording


def _check_optimizer(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], layer: str) -> dict:
    """The SGD settings of the group holding ``params``; a ConfigError for anything the dual form cannot hold."""
    if type(optimizer) is not torch.optim.SGD:
        raise ConfigError(
            f"dual form of {layer!r}: {type(optimizer).__name__} is not supported. Its update is not a sum of the "
            "gradient outer products g xᵀ (Adam-type optimisers divide each entry by a running RMS of the "
            "gradient), so the trained weights are not W_0 plus attention over the training inputs; train with "
            "torch.optim.SGD (momentum allowed, weight_decay=0) to record the dual form")
    settings = []
    for p in params:
        group = next((g for g in optimizer.param_groups if any(q is p for q in g["params"])), None)
        if group is None:
            raise ConfigError(f"dual form of {layer!r}: a parameter of the layer is not in the optimiser; pass the "
                              "optimiser that trains the layer")
        if group.get("weight_decay", 0):
            raise ConfigError(
                f"dual form of {layer!r}: weight_decay={group['weight_decay']} is not supported. Weight decay "
                "shrinks W_0 and every earlier update at each step, so the weights are not W_0 plus attention over "
                "the training inputs; set weight_decay=0 for the layer's parameter group")
        if optimizer.state.get(p, {}).get("momentum_buffer") is not None:
            raise ConfigError(f"dual form of {layer!r}: the optimiser already holds a momentum buffer (it has taken "
                              "steps): the earlier gradients are not in the record. Start recording before the "
                              "first step, with a fresh optimiser")
        settings.append({"momentum": float(group.get("momentum", 0.0)), "dampening": float(group.get("dampening", 0.0)),
                         "nesterov": bool(group.get("nesterov", False)), "maximize": bool(group.get("maximize", False))})
    if any(s != settings[0] for s in settings[1:]):
        raise ConfigError(f"dual form of {layer!r}: weight and bias are in groups with different momentum settings; "
                          "put them in groups with the same momentum, dampening and nesterov")
    return settings[0]


def _group_lr(optimizer: torch.optim.Optimizer, p: nn.Parameter) -> float:
    for group in optimizer.param_groups:
        if any(q is p for q in group["params"]):
            return float(group["lr"])
    raise ConfigError("dual form: a recorded parameter left the optimiser")


class _LayerBuffer:
    """What one layer collects between two optimiser steps, and the rows waiting to be written."""

    def __init__(self, name: str, layer: nn.Linear):
        self.name, self.layer = name, layer
        self.calls: List[list] = []  # [x [N, in], grad [N, out] or None, labels, task, ids] per forward call
        self.rows: Dict[str, List[torch.Tensor]] = {k: [] for k in ("x", "g", "step", "label", "task", "id")}
        self.steps: Dict[str, List[float]] = {k: [] for k in ("steps", "lr_w", "lr_b", "scale_w", "scale_b")}
        self.bias_grads: List[torch.Tensor] = []  # Σ_n g_{s,n} per step [out]
        self.num_rows = 0


class DualFormRecorder:
    """Record, for chosen ``nn.Linear`` layers of ``model``, each training step's inputs and output gradients.

    model: any module; optimizer: the ``torch.optim.SGD`` that trains it (others are refused, see the module
    docstring); layers: names of linear submodules (``model.named_modules()``), or None for every
    ``nn.Linear``; directory: where the record goes (created; an existing record there is refused);
    chunk_rows: rows (patterns) held in memory per layer before a chunk is written; dtype: the stored dtype
    (default: the layer's own).

    Each forward call of a layer while gradients are enabled stores its input; the gradient of its output
    arrives through a tensor hook. ``optimizer.step()`` (a step pre-hook) files the step: it checks that the
    layer's ``.grad`` is a scalar multiple of ``Σ g xᵀ`` (1, or the clipping factor) and refuses a step where it
    is not (a weight regulariser in the loss, a weight shared with another module, gradients not zeroed).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, layers: Optional[Sequence[str]] = None,
                 directory: Union[str, Path] = "dual_record", chunk_rows: int = 4096,
                 dtype: Optional[torch.dtype] = None):
        modules = dict(model.named_modules())
        if layers is None:
            layers = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        if not layers:
            raise ConfigError("dual form: the model has no nn.Linear layer to record")
        for name in layers:
            if not isinstance(modules.get(name), nn.Linear):
                known = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
                raise ConfigError(f"dual form: {name!r} is not an nn.Linear of the model; linear layers: {known}")
        self.directory = Path(directory)
        if (self.directory / "meta.json").exists():
            raise ConfigError(f"dual form: {self.directory} already holds a record; choose another directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.optimizer, self.chunk_rows, self.dtype = optimizer, int(chunk_rows), dtype
        self.buffers = {name: _LayerBuffer(name, modules[name]) for name in layers}
        self.settings = {}
        self.step = 0
        self.files: Dict[str, List[str]] = {name: [] for name in layers}
        self._annotation: dict = {}
        self._handles = []
        initial = {}
        for name, buf in self.buffers.items():
            params = [buf.layer.weight] + ([buf.layer.bias] if buf.layer.bias is not None else [])
            self.settings[name] = _check_optimizer(optimizer, params, name)
            initial[name + ".weight"] = buf.layer.weight.detach().clone()
            if buf.layer.bias is not None:
                initial[name + ".bias"] = buf.layer.bias.detach().clone()
            self._handles.append(buf.layer.register_forward_hook(self._forward_hook(buf)))
        torch.save(initial, self.directory / "initial.pt")
        self._handles.append(optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._file_step()))
        self._closed = False

    # annotations of the rows of the coming step
    def annotate(self, labels: Optional[torch.Tensor] = None, task: Optional[int] = None,
                 ids: Optional[torch.Tensor] = None) -> None:
        """Labels, task and example ids of the rows of the next forward calls (until the step is filed).

        labels, ids: one per example (``[B]``, broadcast over the other leading axes of the layer's input, e.g.
        the time axis) or one per row (the layer input's leading shape); task: one integer for the step."""
        self._annotation = {"labels": labels, "task": task, "ids": ids}

    def _forward_hook(self, buf: _LayerBuffer):
        def hook(module, inputs, output):
            if not (torch.is_grad_enabled() and output.requires_grad):
                return  # evaluation, or a frozen part of the graph: not a training pattern
            x = inputs[0].detach()
            lead = x.shape[:-1]
            call = [x.reshape(-1, x.shape[-1]), None,
                    self._per_row(self._annotation.get("labels"), lead),
                    self._annotation.get("task"),
                    self._per_row(self._annotation.get("ids"), lead)]
            buf.calls.append(call)

            def grad_hook(grad):
                g = grad.detach().reshape(-1, grad.shape[-1])
                call[1] = g if call[1] is None else call[1] + g  # a call whose output is used twice
            output.register_hook(grad_hook)
        return hook

    @staticmethod
    def _per_row(values, lead: torch.Size) -> Optional[torch.Tensor]:
        if values is None:
            return None
        values = torch.as_tensor(values).detach().to("cpu", torch.long)
        if values.shape == lead:
            return values.reshape(-1)
        if values.dim() == 1 and len(lead) >= 1 and values.shape[0] == lead[0]:
            return values.view(-1, *([1] * (len(lead) - 1))).expand(lead).reshape(-1)
        return None  # another batch (a different forward call): unlabelled

    def _file_step(self) -> None:
        self.step += 1
        for name, buf in self.buffers.items():
            calls = [c for c in buf.calls if c[1] is not None]
            buf.calls = []
            layer = buf.layer
            if layer.weight.grad is None:
                if calls:
                    raise ConfigError(f"dual form of {name!r}: the layer's output got a gradient but its weight has "
                                      "none; do not set the weight's .grad to None between backward and step")
                continue
            if not calls and layer.weight.grad.abs().max() > 0:
                raise ConfigError(f"dual form of {name!r}: the weight has a gradient at step {self.step} but no "
                                  "recorded forward call produced it (was it computed under another module, or "
                                  "before the recorder was made?)")
            if calls:
                X, G = torch.cat([c[0] for c in calls]), torch.cat([c[1] for c in calls])
            else:  # a zeroed (not None) gradient: the step still moves momentum, with no new pattern
                X = layer.weight.new_zeros(0, layer.in_features)
                G = layer.weight.new_zeros(0, layer.out_features)
            scale_w = self._scale(name, layer.weight.grad, G.transpose(0, 1).to(X.dtype) @ X, "weight")
            lr_w = _group_lr(self.optimizer, layer.weight)
            lr_b, scale_b = 0.0, 0.0
            bias_grad = G.sum(0)
            if layer.bias is not None and layer.bias.grad is not None:
                scale_b = self._scale(name, layer.bias.grad, bias_grad, "bias")
                lr_b = _group_lr(self.optimizer, layer.bias)
            n = X.shape[0]
            dtype = self.dtype or X.dtype
            fill = lambda v: torch.full((n,), -1 if v is None else int(v), dtype=torch.long)  # noqa: E731
            rows = buf.rows
            rows["x"].append(X.to("cpu", dtype))
            rows["g"].append(G.to("cpu", dtype))
            rows["step"].append(torch.full((n,), self.step, dtype=torch.long))
            rows["label"].append(torch.cat([c[2] if c[2] is not None else fill(None)[: len(c[0])] for c in calls]))
            rows["task"].append(torch.cat([fill(c[3])[: len(c[0])] for c in calls]))
            rows["id"].append(torch.cat([c[4] if c[4] is not None else fill(None)[: len(c[0])] for c in calls]))
            for key, value in (("steps", self.step), ("lr_w", lr_w), ("lr_b", lr_b), ("scale_w", scale_w),
                               ("scale_b", scale_b)):
                buf.steps[key].append(value)
            buf.bias_grads.append(bias_grad.to("cpu", dtype))
            buf.num_rows += n
        self._annotation = {}
        self._write_chunk()

    def _scale(self, name: str, grad: torch.Tensor, rebuilt: torch.Tensor, what: str) -> float:
        """c with grad = c · rebuilt (1 without clipping), or a ConfigError when grad is no such multiple."""
        grad, rebuilt = grad.detach().to(rebuilt.dtype), rebuilt.to(grad.device)
        norm2 = rebuilt.pow(2).sum()
        if norm2 == 0:
            scale = 1.0 if grad.abs().max() == 0 else math.nan
        else:
            scale = ((grad * rebuilt).sum() / norm2).item()
        residual = (grad - scale * rebuilt).norm() / grad.norm().clamp_min(1e-300)
        if not math.isfinite(scale) or residual > GRAD_TOLERANCE.get(grad.dtype, 1e-4):
            raise ConfigError(
                f"dual form of {name!r}: at step {self.step} the {what}'s gradient is not (a multiple of) Σ g xᵀ over "
                f"the layer's recorded calls (relative mismatch {float(residual):.2e}). Something else adds to it: a "
                "weight penalty in the loss (use none), the weight shared with another module, or .grad not zeroed "
                "before backward (call optimizer.zero_grad() each step)")
        return scale

    def _write_chunk(self, force: bool = False) -> None:
        """Write each layer's rows once it holds ``chunk_rows`` of them (all that is left when ``force``): the
        rows to ``<layer index>_<chunk>.pt``, the small per-step table (learning rates, scales, bias
        gradients) to ``<layer index>_<chunk>.steps.pt``, so reading the steps never loads the rows."""
        for index, (name, buf) in enumerate(self.buffers.items()):
            if not buf.steps["steps"] or (buf.num_rows < self.chunk_rows and not force):
                continue
            number = len(self.files[name])
            rows = {k: torch.cat(v) for k, v in buf.rows.items()}
            steps = {k: torch.tensor(v, dtype=torch.long if k == "steps" else torch.float64)
                     for k, v in buf.steps.items()}
            steps["bias_grad"] = torch.stack(buf.bias_grads)  # [steps of the chunk, out]
            for suffix, payload in ((".pt", rows), (".steps.pt", steps)):
                path = self.directory / f"{index}_{number:05d}{suffix}"
                tmp = path.with_name(path.name + ".tmp")
                torch.save(payload, tmp)
                os.replace(tmp, path)
            self.files[name].append(f"{index}_{number:05d}")
            buf.rows = {k: [] for k in buf.rows}
            buf.steps = {k: [] for k in buf.steps}
            buf.bias_grads, buf.num_rows = [], 0
            self._write_meta()

    def _write_meta(self) -> None:
        meta = {"format": FORMAT, "steps": self.step,
                "layers": {name: {"in_features": buf.layer.in_features, "out_features": buf.layer.out_features,
                                  "bias": buf.layer.bias is not None, "chunks": self.files[name], **self.settings[name]}
                           for name, buf in self.buffers.items()}}
        (self.directory / "meta.json").write_text(json.dumps(meta, indent=1))

    def close(self) -> None:
        """Write what is left, remove the hooks. The record is complete only after this."""
        if self._closed:
            return
        self._write_chunk(force=True)
        self._write_meta()
        for handle in self._handles:
            handle.remove()
        self._closed = True

    def __enter__(self) -> "DualFormRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class LayerRecord:
    """The record of one layer: initial weights, optimiser settings, per-step learning rates and clip scales,
    and the chunk files with the rows (streamed: ``chunks()``)."""

    name: str
    directory: Path
    files: List[Path]
    weight0: torch.Tensor  # [out, in]
    bias0: Optional[torch.Tensor]  # [out] or None
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    maximize: bool = False
    steps: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # recorded steps [S]
    lr_w: torch.Tensor = None  # [S]
    lr_b: torch.Tensor = None
    scale_w: torch.Tensor = None  # gradient scale applied before the update (clipping), [S]
    scale_b: torch.Tensor = None
    bias_grad: torch.Tensor = None  # Σ_n g_{s,n} per recorded step [S, out]

    @property
    def num_steps(self) -> int:
        return int(self.steps[-1]) if len(self.steps) else 0

    def coefficients(self, until_step: Optional[int] = None, bias: bool = False) -> torch.Tensor:
        """c_s for the recorded steps (float64 [S]): ``W_T = W_0 - Σ_s c_s Σ_n g_{s,n} x_{s,n}ᵀ`` for T =
        ``until_step`` (default: the last recorded step); steps after T get 0."""
        T = self.num_steps if until_step is None else int(until_step)
        lr = (self.lr_b if bias else self.lr_w).clone()
        scale = self.scale_b if bias else self.scale_w
        live = self.steps <= T
        lr = torch.where(live, lr, torch.zeros_like(lr))
        mu, d = self.momentum, self.dampening
        if mu == 0:
            coef = lr
        else:
            # optimiser steps with no gradient for this layer leave the buffer alone and skip the update,
            # so the recurrence runs over the steps the layer took part in (the recorded ones)
            tail = torch.zeros_like(lr)  # tail_s = Σ_{t>=s} lr_t μ^{t-s}
            running = 0.0
            for i in range(len(lr) - 1, -1, -1):
                running = float(lr[i]) + mu * running
                tail[i] = running
            gamma = torch.full_like(lr, 1.0 - d)
            if len(gamma):
                gamma[0] = 1.0
            coef = lr + mu * gamma * tail if self.nesterov else gamma * tail
            coef = torch.where(live, coef, torch.zeros_like(coef))
        coef = coef * scale
        return -coef if self.maximize else coef

    def step_index(self, steps: torch.Tensor) -> torch.Tensor:
        """Positions of training steps ``steps`` in ``self.steps`` (sorted, unique)."""
        return torch.searchsorted(self.steps, steps)

    def chunks(self) -> Iterator[dict]:
        """The chunk payloads of this layer in step order: x [n, in], g [n, out], step, label, task, id [n]."""
        for path in self.files:
            yield torch.load(path, map_location="cpu", weights_only=True)

    def weights(self, until_step: Optional[int] = None) -> tuple:
        """(W_T, b_T) rebuilt in float64 from W_0 and the record (the primal weights the dual form equals)."""
        coef, coef_b = self.coefficients(until_step), self.coefficients(until_step, bias=True)
        W = self.weight0.double().clone()
        for chunk in self.chunks():
            c = coef[self.step_index(chunk["step"])]
            W -= (chunk["g"].double() * c[:, None]).transpose(0, 1) @ chunk["x"].double()
        b = None
        if self.bias0 is not None:
            b = self.bias0.double() - self._bias_sum(coef_b)
        return W, b

    def _bias_sum(self, coef_b: torch.Tensor) -> torch.Tensor:
        """Σ_s c_s Σ_n g_{s,n} (the bias's part of the dual form: every key contributes e_{s,n} · 1)."""
        if self.bias_grad is None or not len(self.bias_grad):
            return torch.zeros(self.weight0.shape[0], dtype=torch.float64)
        return (coef_b[:, None] * self.bias_grad.double()).sum(0)


def load_record(directory: Union[str, Path]) -> Dict[str, LayerRecord]:
    """{layer name: LayerRecord} of a record written by :class:`DualFormRecorder` (after ``close()``)."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise MissingPathError(f"{directory} holds no dual-form record (no meta.json); pass the directory given to "
                               "DualFormRecorder, after recorder.close()")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise MissingPathError(f"{meta_path} is not a dual-form record")
    initial = torch.load(directory / "initial.pt", map_location="cpu", weights_only=True)
    records = {}
    for name, info in meta["layers"].items():
        files = [directory / f"{stem}.pt" for stem in info["chunks"]]
        tables = [torch.load(directory / f"{stem}.steps.pt", map_location="cpu", weights_only=True)
                  for stem in info["chunks"]]
        cat = lambda k, dt: torch.cat([t[k] for t in tables]) if tables else torch.zeros(0, dtype=dt)  # noqa: E731
        records[name] = LayerRecord(
            name, directory, files, initial[name + ".weight"], initial.get(name + ".bias"),
            info["momentum"], info["dampening"], info["nesterov"], info["maximize"],
            cat("steps", torch.long), cat("lr_w", torch.float64), cat("lr_b", torch.float64),
            cat("scale_w", torch.float64), cat("scale_b", torch.float64),
            cat("bias_grad", torch.float64) if tables else None)
    return records


# ----------------------------------------------------------------------------------------------- the dual view


def _queries(record: LayerRecord, x: torch.Tensor) -> tuple:
    x = torch.as_tensor(x)
    if x.shape[-1] != record.weight0.shape[1]:
        raise ConfigError(f"dual form of {record.name!r}: inputs have {x.shape[-1]} features, the layer "
                          f"{record.weight0.shape[1]}")
    return x.reshape(-1, x.shape[-1]).double(), x.shape[:-1]


def dual_output(record: LayerRecord, x: torch.Tensor, until_step: Optional[int] = None) -> torch.Tensor:
    """The layer's output on ``x [..., in]`` after step ``until_step`` (default: the last), from the dual form:
    ``W_0 x + b_0 + Σ_{s,n} e_{s,n} (x_{s,n}ᵀ x) + Σ_{s,n} e_{s,n}`` with ``e_{s,n} = -c_s g_{s,n}`` (the last
    term only with a bias). Float64 ``[..., out]``; streams the record chunk by chunk."""
    q, lead = _queries(record, x)
    coef = record.coefficients(until_step)
    y = q @ record.weight0.double().transpose(0, 1)
    for chunk in record.chunks():
        e = -coef[record.step_index(chunk["step"])][:, None] * chunk["g"].double()  # values [n, out]
        attention = chunk["x"].double() @ q.transpose(0, 1)  # keys · queries [n, M]
        y += attention.transpose(0, 1) @ e
    if record.bias0 is not None:
        y += record.bias0.double() - record._bias_sum(record.coefficients(until_step, bias=True))
    return y.reshape(*lead, -1)


@dataclass
class Spotlight:
    """The training patterns a query attends to most (one query)."""

    top: List[dict]  # k dicts: step, row (index in the record), label, task, id, attention, share
    total: float  # Σ |attention| over every pattern seen up to the step
    per_class: Dict[int, float]  # label -> share of Σ |attention| (-1: unlabelled)
    per_task: Dict[int, float]  # task -> share of Σ |attention| (-1: none given)


def spotlight(record: LayerRecord, x: torch.Tensor, k: int = 5, until_step: Optional[int] = None,
              by: str = "attention") -> Union[Spotlight, List[Spotlight]]:
    """The ``k`` training patterns with the largest attention ``x_{s,n}ᵀ x`` from query ``x [in]`` (the layer's
    input for a test example), among those seen up to ``until_step``, with their step, label, task, example
    id and share of the total ``Σ |x_{s,n}ᵀ x|``; and the attention mass per class and per task.
    ``x [M, in]``: a list of M results, from one pass over the record.

    by: ``attention`` (the dot product, the paper's score) or ``contribution`` (``|x_{s,n}ᵀ x| · ||e_{s,n}||``,
    how much the pattern moves this output)."""
    if by not in ("attention", "contribution"):
        raise ConfigError(f"spotlight: by={by!r}; choose attention or contribution")
    q, lead = _queries(record, x)
    M = q.shape[0]
    T = record.num_steps if until_step is None else int(until_step)
    coef = record.coefficients(until_step)
    fields = ("step", "row", "label", "task", "id", "attention", "score")
    best = {f: torch.zeros(0, M, dtype=torch.float64) for f in fields}
    total = torch.zeros(M, dtype=torch.float64)
    per_class: Dict[int, torch.Tensor] = {}
    per_task: Dict[int, torch.Tensor] = {}
    offset = 0
    for chunk in record.chunks():
        n = len(chunk["step"])
        live = chunk["step"] <= T
        attention = (chunk["x"].double() @ q.transpose(0, 1)).masked_fill(~live[:, None], 0.0)  # [n, M]
        mass = attention.abs()
        total += mass.sum(0)
        for key, table in (("label", per_class), ("task", per_task)):
            groups = chunk[key]
            for value in groups[live].unique().tolist():
                table[value] = table.get(value, 0.0) + mass[groups == value].sum(0)
        if by == "attention":
            score = attention.clone()
        else:
            c = coef[record.step_index(chunk["step"])]
            score = mass * (c[:, None] * chunk["g"].double()).norm(dim=1, keepdim=True)
        score.masked_fill_(~live[:, None], -math.inf)
        kk = min(k, int(live.sum()))
        if kk:
            values, rows = score.topk(kk, dim=0)  # [kk, M]
            found = {"score": values, "attention": attention.gather(0, rows), "row": (rows + offset).double(),
                     **{f: chunk[f][rows].double() for f in ("step", "label", "task", "id")}}
            merged = {f: torch.cat([best[f], found[f]]) for f in fields}
            order = merged["score"].topk(min(k, len(merged["score"])), dim=0).indices
            best = {f: merged[f].gather(0, order) for f in fields}
        offset += n
    results = []
    for m in range(M):
        t = total[m].item()
        top = [{f: (best[f][i, m].item() if f in ("attention", "score") else int(best[f][i, m].item()))
                for f in fields} for i in range(len(best["score"]))]
        for item in top:
            item["share"] = abs(item["attention"]) / t if t > 0 else 0.0
        share = lambda table: {key: (v[m].item() / t if t > 0 else 0.0) for key, v in sorted(table.items())}  # noqa
        results.append(Spotlight(top, t, share(per_class), share(per_task)))
    return results if len(lead) else results[0]


def pattern(record: LayerRecord, row: int) -> torch.Tensor:
    """The stored input (key) of row ``row`` of the record (as numbered by :func:`spotlight`)."""
    offset = 0
    for chunk in record.chunks():
        n = len(chunk["step"])
        if row < offset + n:
            return chunk["x"][row - offset]
        offset += n
    raise IndexError(f"row {row} is past the {offset} rows of {record.name!r}")
