"""Registries that replace if/elif chains on names: trainers (by ``env.kind``), engine tasks (by
``env.family``) and config schemas (Hydra ConfigStore entries of the ``env`` group).

A new task is its own module plus one YAML::

    @dataclass
    class MyTaskConfig(TaskConfig):          # metarl.engine.loop.TaskConfig: name, kind, family, ...
        family: str = "mytask"
        ...

    @register_task("mytask", MyTaskConfig)   # builder(cfg) -> metarl.engine.loop.Task
    def build(cfg): return MyTask(cfg)

and ``python -m metarl.train env=mytask`` finds it (the YAML, or ``env=mytask_schema`` without one).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from ..errors import ConfigError

TRAINERS: Dict[str, Callable] = {}  # env.kind -> train(cfg, run_dir) -> metrics dict
TASKS: Dict[str, Callable] = {}  # env.family -> build(cfg) -> Task


def store_schema(name: str, node, group: Optional[str] = "env") -> None:
    """Put a config dataclass in Hydra's ConfigStore as ``<group>/<name>`` (YAMLs extend it by that name)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=group, name=name, node=node)


def register_trainer(kind: str):
    """Decorator: ``fn(cfg, run_dir) -> metrics`` trains every env whose ``env.kind == kind``."""

    def wrap(fn):
        TRAINERS[kind] = fn
        return fn

    return wrap


def register_task(family: str, config_class=None):
    """Decorator: ``build(cfg) -> Task`` for ``env.family == family``; stores ``config_class`` (when given)
    as the env schema ``<family>_schema``."""

    def wrap(build):
        TASKS[family] = build
        if config_class is not None:
            store_schema(f"{family}_schema", config_class)
        return build

    return wrap


def lookup(table: Dict[str, Callable], field: str, name: str):
    """``table[name]``, or a ConfigError naming ``field`` and the known names."""
    if name not in table:
        raise ConfigError(f"{field}={name!r} is not known; choose one of: {', '.join(sorted(table))}")
    return table[name]
