"""The supervised training loop every engine task runs on (few-shot, formal, chomsky, ctlpp, recall, ...).

A task supplies data, model, loss and metrics (:class:`Task`); :func:`train` supplies the rest, top to
bottom::

    model, optimizer, schedule <- task.build_model(), cfg.optim
    resume from cfg.resume (model, optimiser, counters, best values, RNG states, carried state)
    for step in steps+1 .. optim.steps:
        batch  <- task.train_batch(step, generator seeded with (seed, step))    # resume sees the same stream
        out    <- task.loss(model, batch, state)       # StepOutput(loss, count, metrics, state)
        guard against a non-finite loss (checkpoint_nonfinite.pt, then a one-line error)
        lr <- schedule(step); backward; clip; optimiser step; state <- detach(out.state) if carried
        every log_every: losses/total, train/<metric>, charts/learning_rate, charts/<unit>_per_s
        every env.eval_every: eval/<set>/<metric> for task.eval_sets; best-<set>-<metric>.pt per selection metric
        every checkpoint_minutes, on Ctrl-C / SIGTERM and at the end: checkpoint.pt
    test/<set>/<metric> for task.test_sets on the model chosen by each selection metric (or the last model);
        selection.json: which update each selection metric chose and its test scalars
    curves.png of the loss and the evaluation metrics

Evaluation runs under ``torch.no_grad`` in eval mode and leaves the global RNG as it found it, so a run
with more evaluations trains exactly like one with fewer.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from ..cores import detach_state, map_state
from ..errors import ConfigError, Interrupted, NonFiniteLossError
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .interrupt import StopRequest
from .logging import THROUGHPUT, MetricLogger, plot_curves
from .optim import Schedule, clip_gradients, make_optimizer
from .parallel import NullLogger, SingleProcess
from .selection import higher_is_better


@dataclass
class TaskConfig:
    """Fields every engine task's ``env`` config has (a task's dataclass extends this one)."""

    name: str = "task"  # run name
    kind: str = "supervised"  # which trainer runs it (supervised and fewshot: this loop)
    family: str = "task"  # which registered task (metarl.engine.registry.TASKS)
    batch_size: int = 32  # examples (sequences, episodes) per update
    eval_every: int = 500  # updates between evaluations of task.eval_sets (and one at the last update)
    eval_test_sets: bool = False  # also evaluate the test sets at every evaluation (eval/<test set>/...: for model-selection analysis, never selected on)
    # metrics to keep a best checkpoint for, "<eval set>/<metric>" (max, or min for losses, nll, bpc, perplexity,
    # error); null: the task's own choice. The first is the primary one (test/<set>/<metric> without a suffix)
    selection: Optional[List[str]] = None


@dataclass
class StepOutput:
    """What ``Task.loss`` returns: the scalar loss to minimise (the aux losses of the model included),
    ``count`` units of throughput in the batch, scalar ``metrics`` to average and log as ``train/<name>``
    and ``losses/<name>``-style parts (keys with a "/" are logged as given), and the core state to carry
    to the next batch (when ``Task.carry_state``)."""

    loss: torch.Tensor
    count: int
    metrics: Dict[str, float] = field(default_factory=dict)
    state: Any = None


class Task:
    """The task side of the loop. Subclasses set the attributes and implement the methods.

    throughput_unit: ``examples | tokens | episodes`` (the ``charts/<unit>_per_s`` metric)
    eval_sets: sets evaluated every ``env.eval_every`` updates (``eval/<set>/<metric>``)
    test_sets: sets evaluated once at the end on the selected model(s) (``test/<set>/<metric>``)
    selection: ``{"<set>/<metric>": "max" | "min"}``: the best checkpoint is kept for each (several at
        once; the first is the primary one); empty: the last model is tested
    carry_state: the core state of one batch is the initial state of the next (truncated BPTT: detached)
    """

    throughput_unit = "examples"
    eval_sets: List[str] = []
    test_sets: List[str] = []
    selection: Dict[str, str] = {}
    carry_state = False

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def train_batch(self, step: int, generator: torch.Generator) -> Any:
        """The batch of update ``step`` (from 1), drawn from ``generator`` (seeded as a function of seed and step)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, state: Any) -> StepOutput:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, name: str, progress: bool = False) -> Dict[str, Any]:
        """Metrics of evaluation set ``name``: scalars are logged; other values (tables) are only returned."""
        raise NotImplementedError

    def prepare(self, run_dir: Path) -> None:
        """Called once before training, on the main worker only: write the task's own files (a data
        manifest, a tokeniser) to ``run_dir``. Default: nothing."""

    def pictures(self, run_dir: Path) -> List[Path]:
        """Called once at the end, on the main worker only, with the tested model in place: draw the task's
        PNGs (reconstructions, samples) into ``run_dir`` and return their paths. Default: none."""
        return []


def move_to(batch: Any, device) -> Any:
    """A batch (tensor, object with ``.to``, dataclass, dict, list or tuple of those) on ``device``."""
    if isinstance(batch, torch.Tensor) or hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    if is_dataclass(batch):
        return replace(batch, **{k: move_to(v, device) for k, v in vars(batch).items()})
    return batch


def best_filename(metric: str) -> str:
    """The checkpoint kept for a selection metric: ``"val/accuracy"`` -> ``best-val-accuracy.pt``."""
    return "best-" + metric.replace("/", "-") + ".pt"


def _evaluate(task: Task, model: nn.Module, names: List[str], progress: bool) -> Dict[str, Dict[str, Any]]:
    """{set: metrics} in eval mode, without gradients, leaving the global RNG states untouched."""
    saved, was_training = rng_state(), model.training
    model.eval()
    try:
        with torch.no_grad():
            return {name: task.evaluate(model, name, progress) for name in names}
    finally:
        model.train(was_training)
        set_rng_state(saved)


def _scalars(prefix: str, results: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
    return {f"{prefix}/{s}/{k}": v for s, metrics in results.items() for k, v in metrics.items()
            if isinstance(v, (int, float))}


def _improved(mode: str, value: float, best: Optional[float]) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train(task: Task, cfg: DictConfig, run_dir: Path, parallel: Optional[SingleProcess] = None) -> Dict[str, Any]:
    """Train ``task`` as ``cfg`` says (``optim``, ``env.eval_every``, ``seed``, ``device``, ``resume``,
    ``checkpoint_minutes``, ``log_every``, ``progress``); returns the last and final metrics.
    ``parallel``: one worker of a data-parallel group (:mod:`metarl.engine.parallel`; default one process)."""
    run_dir = Path(run_dir)
    parallel = parallel or SingleProcess()
    main = parallel.is_main
    optim, device = cfg.optim, cfg.device
    if cfg.env.get("selection") is not None:  # env.selection: the metrics the user selects on
        task.selection = {m: "max" if higher_is_better(m) else "min" for m in cfg.env.selection}
    for metric, mode in task.selection.items():
        if mode not in ("max", "min") or metric.split("/")[0] not in task.eval_sets:
            raise ConfigError(f"selection metric {metric!r} ({mode}): the set must be one of the task's eval sets "
                              f"{task.eval_sets} and the mode max or min")
    torch.manual_seed(cfg.seed)
    model = task.build_model().to(device)
    optimizer = make_optimizer(model, optim)
    schedule = Schedule(optim, total_steps=optim.steps)
    step, best, state = 0, {}, None
    if cfg.resume:
        payload = load_checkpoint(cfg.resume, model, optimizer, restore_rng=True)
        step, best = payload["counters"]["step"], dict(payload["best"])
        if task.carry_state and "state" in payload["extra"] and parallel.world == 1:  # rank 0's rows only
            state = map_state(lambda s: s.to(device), payload["extra"]["state"])
        for metric in task.selection:  # the best models so far travel to the new run folder
            previous = Path(cfg.resume).parent / best_filename(metric)
            if main and previous.is_file() and previous.resolve() != (run_dir / best_filename(metric)).resolve():
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(previous, run_dir / best_filename(metric))

    def save(name: str, with_optimizer: bool = True) -> Path:
        extra = {"state": state} if task.carry_state and state is not None else {}
        return save_checkpoint(run_dir / name, model, optimizer if with_optimizer else None,
                               counters={"step": step}, config=cfg, best=best, extra=extra)

    eval_names = list(task.eval_sets)
    if cfg.env.get("eval_test_sets", False):  # the test sets too, logged beside the others, for selection analysis
        eval_names += [name for name in task.test_sets if name not in eval_names]
    parallel.prepare(model)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        task.prepare(run_dir)
    logger = MetricLogger(run_dir) if main else NullLogger()
    throughput_key = THROUGHPUT[task.throughput_unit]
    generator = torch.Generator()
    window: Dict[str, List[float]] = {}
    last: Dict[str, Any] = {}
    units, train_time, last_checkpoint = 0, 0.0, time.time()
    bar = tqdm(total=optim.steps, initial=step, disable=not (cfg.progress and main), desc=f"{cfg.env.name}/{cfg.agent.name}")
    model.train()
    with StopRequest() as stop:
        while step < optim.steps:
            started = time.time()
            generator.manual_seed(cfg.seed * 1_000_003 + step)  # the data stream is a function of (seed, step)
            batch = move_to(parallel.shard(task, task.train_batch(step + 1, generator), cfg.env.batch_size), device)
            out = task.loss(model, batch, state)
            if parallel.mean(float(torch.isfinite(out.loss))) < 1.0:  # on any worker: all stop together
                path = save("checkpoint_nonfinite.pt") if main else "rank 0's run folder"
                raise NonFiniteLossError(f"non-finite loss ({out.loss.item()}) at update {step + 1}; the state before "
                                         f"it is in {path}. Lower optim.lr, set optim.grad_clip or a warm-up "
                                         "(optim.warmup_steps)")
            lr = schedule.apply(optimizer, step + 1)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            parallel.average_gradients(model)
            grad_norm = clip_gradients(model.parameters(), optim.grad_clip)
            optimizer.step()
            step += 1
            if task.carry_state:
                state = detach_state(out.state)
            train_time += time.time() - started
            units += out.count * parallel.world
            values = {"losses/total": parallel.mean(out.loss.item()), "charts/grad_norm": grad_norm,
                      **{(k if "/" in k else f"train/{k}"): float(v) for k, v in out.metrics.items()}}
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            if step % cfg.log_every == 0 or step == optim.steps:
                averaged = {k: sum(v) / len(v) for k, v in window.items()}
                averaged.update({"charts/learning_rate": lr, throughput_key: units / max(train_time, 1e-9)})
                logger.log(step, averaged)
                last.update(averaged)
                window = {}
            if main and task.eval_sets and (step % cfg.env.eval_every == 0 or step == optim.steps):
                results = _evaluate(task, model, eval_names, progress=False)
                scalars = _scalars("eval", results)
                missing = [m for m in task.selection if f"eval/{m}" not in scalars]
                if missing:
                    raise ConfigError(f"selection metric(s) {missing} not measured; the evaluation gives "
                                      f"{sorted(k[len('eval/'):] for k in scalars)} (env.selection)")
                improved = [m for m, mode in task.selection.items()
                            if _improved(mode, scalars[f"eval/{m}"], best.get(m))]
                for metric in improved:
                    best[metric], best[f"{metric}@step"] = scalars[f"eval/{metric}"], step
                for metric in improved:  # after all updates: each file holds every best-so-far value
                    save(best_filename(metric), with_optimizer=False)
                scalars.update({f"eval/{m}/best": best[m] for m in task.selection})
                logger.log(step, scalars)
                last.update(scalars)
            shown = {"loss": f"{out.loss.item():.3f}"}
            shown.update({k.split("/", 1)[1]: f"{v:.3f}" for k, v in last.items()
                          if k.startswith("eval/") and k.count("/") == 2})
            bar.set_postfix(shown, refresh=False)
            bar.update(1)
            if stop.requested:
                path = save("checkpoint.pt")
                logger.close()
                bar.close()
                raise Interrupted(f"{stop.signal_name} at update {step}: checkpoint saved to {path}; continue with "
                                  f"resume={path}", exit_code=stop.exit_code)
            if parallel.agree(time.time() - last_checkpoint > 60 * cfg.checkpoint_minutes):
                path = save("checkpoint.pt") if main else None
                parallel.checkpoint_saved(path, step)
                last_checkpoint = time.time()
    bar.close()
    if not main:
        return {"step": step}
    save("checkpoint.pt")
    final = {"step": step, **last, **{f"best/{k}": v for k, v in best.items()}}
    if task.test_sets:
        final.update(_final_tests(task, model, cfg, run_dir, logger, step))
    logger.close()
    curves = plot_curves(run_dir, ["losses/total"] + [f"eval/{s}/" for s in task.eval_sets])
    if curves is not None:
        print(f"[metarl] curves: {curves}")
    for path in task.pictures(run_dir):
        print(f"[metarl] picture: {path}")
    return final


def _final_tests(task: Task, model: nn.Module, cfg, run_dir: Path, logger: MetricLogger, step: int) -> dict:
    """test/<set>/<metric> on the model of each selection metric (the primary one without a suffix, the
    others as test/<set>/<metric>/by-<selection set>-<metric>), or on the last model when none; and
    ``selection.json``: per selection metric, the update it chose, its value there and the test scalars
    (read by metarl.engine.selection)."""
    final: Dict[str, Any] = {}
    selections = list(task.selection) or [None]
    chosen: Dict[str, Any] = {}
    for index, metric in enumerate(selections):
        chosen_step, value = step, None
        if metric is not None and (run_dir / best_filename(metric)).is_file():
            payload = load_checkpoint(run_dir / best_filename(metric), model)
            chosen_step, value = payload["counters"]["step"], payload["best"].get(metric)
        results = _evaluate(task, model, task.test_sets, progress=cfg.progress)
        suffix = "" if index == 0 else "/by-" + metric.replace("/", "-")
        scalars = {k + suffix: v for k, v in _scalars("test", results).items()}
        logger.log(step, scalars)
        final.update(scalars)
        chosen[metric or "last"] = {"step": chosen_step, "value": value,  # test scalars as {"<set>/<metric>": v}
                                    "test": {k.split("/", 1)[1]: v for k, v in _scalars("test", results).items()}}
        if index == 0:
            final["test_results"] = results  # with the non-scalar values (e.g. accuracy per length)
    summary = {"selection": dict(task.selection), "primary": selections[0] or "last", "eval_sets": list(task.eval_sets),
               "test_sets": list(task.test_sets), "last_step": step, "selected": chosen}
    tmp = run_dir / "selection.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=float))
    os.replace(tmp, run_dir / "selection.json")
    return final
