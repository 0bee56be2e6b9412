"""What every trainer shares: the supervised loop, optimisers and schedules, logging, checkpoints,
interrupts and the registries of trainers and tasks."""
from .checkpoint import load_checkpoint, read_checkpoint, rng_state, save_checkpoint, set_rng_state
from .interrupt import StopRequest
from .logging import THROUGHPUT, MetricLogger, plot_curves, read_metrics
from .loop import StepOutput, Task, TaskConfig, best_filename, move_to, train
from .optim import OptimConfig, Schedule, clip_gradients, make_optimizer, parameter_groups
from .registry import TASKS, TRAINERS, lookup, register_task, register_trainer, store_schema

__all__ = [
    "train", "Task", "TaskConfig", "StepOutput", "move_to", "best_filename",
    "OptimConfig", "make_optimizer", "Schedule", "clip_gradients", "parameter_groups",
    "MetricLogger", "plot_curves", "read_metrics", "THROUGHPUT",
    "save_checkpoint", "load_checkpoint", "read_checkpoint", "rng_state", "set_rng_state",
    "StopRequest", "TASKS", "TRAINERS", "register_task", "register_trainer", "store_schema", "lookup",
]
