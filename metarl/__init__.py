"""metarl: memory-based meta-learning and RL with fast-weight sequence models.

The top-level folders envs/, agents/, fewshot/ and configs/ of the source tree install as metarl.envs,
metarl.agents, metarl.fewshot and metarl.configs (``[tool.setuptools] package-dir`` in pyproject.toml), so
metarl is imported from an install (``pip install -e .`` for development). Ray jobs ship an installed copy
with the runtime env's ``py_modules`` (scripts/ray_job_example.sh).
"""

__version__ = "0.1.0"
