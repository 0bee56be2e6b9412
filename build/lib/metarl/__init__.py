"""metarl: memory-based meta-learning and RL with fast-weight sequence models.

The top-level folders envs/, agents/, fewshot/ and configs/ of the source tree install as metarl.envs,
metarl.agents, metarl.fewshot and metarl.configs. When metarl is imported from an uninstalled source
checkout (e.g. the working directory that ``ray job submit --working-dir .`` ships to a cluster), the
same names resolve to those folders.
"""
from pathlib import Path as _Path

_source_root = _Path(__file__).resolve().parent.parent
if (_source_root / "pyproject.toml").is_file() and (_source_root / "envs" / "__init__.py").is_file():
    __path__.append(str(_source_root))  # noqa: F821 (the package's own __path__)

__version__ = "0.1.0"
