"""``runner=ray`` for the engine's tasks: data-parallel training on Ray Train (``TorchTrainer``).

The driver (``python -m metarl.train ... runner=ray``) starts or joins Ray, checks that the cluster can
host ``runner.num_workers`` workers of the asked size, and hands them to a ``TorchTrainer``: one worker per
device, gloo on CPUs, NCCL on GPUs (``runner.use_gpu``). Each worker builds the task from the config and
runs the engine loop with :class:`metarl.engine.parallel.TorchDistributed`: the global batch
(``env.batch_size``) is split across the workers, gradients are averaged, and rank 0 logs, evaluates,
checkpoints and tests in the run folder exactly as one process would (same metric names, same files).

Fault tolerance: every periodic checkpoint (``checkpoint_minutes``) is also reported to Ray Train; when a
worker dies, Ray Train restarts the group (``runner.max_failures`` times) and every worker resumes from the
last reported checkpoint, with the step counter, optimiser, schedule and RNG states continuing.
``runner.storage_path`` is where Ray Train keeps those checkpoints (default: ``<run folder>/ray_train``; on
a cluster of several machines, a path every node can reach).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, ResourceError

log = logging.getLogger(__name__)


def init_ray(runner: DictConfig):
    """Start or join Ray as the config says (``runner.address``, else ``RAY_ADDRESS``, else a local instance
    with ``runner.num_cpus`` CPUs, dashboard only if ``runner.dashboard``, bound to 127.0.0.1); returns ray."""
    import ray

    if ray.is_initialized():
        return ray
    address = runner.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=runner.num_cpus, include_dashboard=bool(runner.dashboard), dashboard_host="127.0.0.1",
                 log_to_driver=True)
    return ray


def worker_resources(runner: DictConfig, cluster: dict) -> dict:
    """Resources of one training worker: ``runner.worker_cpus`` (default: the cluster's CPUs split evenly,
    at most 1) and one GPU each with ``runner.use_gpu``; a ResourceError when the cluster cannot host them."""
    workers = runner.num_workers
    if workers < 1:
        raise ConfigError(f"runner.num_workers={workers} must be at least 1")
    cpus_total, gpus_total = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    per_worker = runner.worker_cpus
    if per_worker is None:
        per_worker = max(round(min(1.0, cpus_total / workers), 2), 0.01) if cpus_total > 0 else 0.0
    gpus = 1.0 if runner.use_gpu else 0.0
    if per_worker <= 0 or workers * per_worker > cpus_total + 1e-9 or workers * gpus > gpus_total + 1e-9:
        raise ResourceError(
            f"runner=ray asks for {workers} training workers x {per_worker} CPU + {gpus:g} GPU "
            f"({workers * per_worker:g} CPU, {workers * gpus:g} GPU in all), but the cluster has {cpus_total:g} CPU "
            f"and {gpus_total:g} GPU. Lower runner.num_workers or runner.worker_cpus, set runner.use_gpu=false, "
            "or add nodes.")
    resources = {"CPU": per_worker}
    if gpus:
        resources["GPU"] = gpus
    return resources


def check_batch_split(cfg: DictConfig) -> None:
    batch, workers = cfg.env.batch_size, cfg.runner.num_workers
    if batch % workers:
        raise ConfigError(f"env.batch_size={batch} must be a multiple of runner.num_workers={workers} (the global "
                          "batch is split evenly across the workers)")


def train_on_ray(cfg: DictConfig, run_dir: Path, build_task: Callable) -> dict:
    """Train the engine task ``build_task(cfg)`` data-parallel on Ray Train; returns rank 0's final metrics
    (scalars). ``build_task`` must be importable by the workers (a module-level function)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    runner = cfg.runner
    check_batch_split(cfg)
    ray = init_ray(runner)
    resources = worker_resources(runner, ray.cluster_resources())
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = Path(runner.storage_path) if runner.storage_path else run_dir / "ray_train"
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"cfg": OmegaConf.to_container(cfg, resolve=True), "run_dir": str(run_dir),
                           "build_task": build_task, "threads": max(1, int(resources["CPU"]))},
        scaling_config=ScalingConfig(num_workers=runner.num_workers, use_gpu=bool(runner.use_gpu),
                                     resources_per_worker=resources),
        run_config=RunConfig(name="train", storage_path=str(storage.resolve()),
                             failure_config=FailureConfig(max_failures=runner.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        torch_config=TorchConfig(backend="nccl" if runner.use_gpu else "gloo"),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    metrics = dict(result.metrics or {})
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith("_")}


def _worker(config: dict) -> None:
    """The body of one Ray Train worker: the engine loop with this worker's share of every batch."""
    import ray.train

    from .loop import train
    from .parallel import TorchDistributed

    torch.set_num_threads(config["threads"])
    cfg = OmegaConf.create(config["cfg"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    restored = ray.train.get_checkpoint()
    scratch = Path(tempfile.mkdtemp(prefix=f"metarl-rank{rank}-"))
    if restored is not None:  # a restart after a failure: continue from the last reported checkpoint
        with restored.as_directory() as folder:
            shutil.copy(Path(folder) / "checkpoint.pt", scratch / "restored.pt")
        cfg.resume = str(scratch / "restored.pt")
        log.warning("rank %d resumes from the checkpoint Ray Train restored", rank)
    if torch.cuda.is_available() and cfg.runner.use_gpu:
        cfg.device = str(ray.train.torch.get_device())

    def report(path: Optional[Path], metrics: dict) -> None:
        """Every worker reports (Ray Train expects all to); rank 0 attaches the checkpoint file."""
        if path is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy(path, Path(folder) / "checkpoint.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    try:
        task = config["build_task"](cfg)
        run_dir = Path(config["run_dir"])
        parallel = TorchDistributed(on_checkpoint=lambda path, step: report(path, {"step": step}))
        final = train(task, cfg, run_dir, parallel=parallel)
        # the last report carries the final checkpoint, so the driver's Result has rank 0's final metrics
        scalars = {k: v for k, v in final.items() if isinstance(v, (int, float))}
        report(run_dir / "checkpoint.pt" if parallel.is_main else None, scalars)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
