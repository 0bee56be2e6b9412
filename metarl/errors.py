"""Errors a user can cause. ``python -m metarl.train`` prints their message (which names the thing and the
fix) and exits with status 2, without a traceback (``HYDRA_FULL_ERROR=1`` shows it).

Each also derives from the builtin a caller would expect (``ValueError``, ``FileNotFoundError``), so code
that catches those keeps working. Every layer may raise them: this module imports nothing of metarl.
"""
from __future__ import annotations


class UserError(Exception):
    """Base class: a bad value, a missing path, an unknown name or a corrupt file given by the user."""


class ConfigError(UserError, ValueError):
    """A config value that is wrong: out of a field's choices, inconsistent with another field, ..."""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named (a dataset root, a checkpoint) does not exist or has the wrong layout."""


class CheckpointError(UserError, ValueError):
    """A file that is not a metarl checkpoint (truncated, foreign, or from an incompatible model)."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or infinite; the state before the update was saved."""


def check_choice(field: str, value, choices) -> None:
    """Raise ConfigError naming ``field`` and the valid values when ``value`` is not one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{field}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run after a checkpoint was saved; ``exit_code`` 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class ResourceError(UserError, RuntimeError):
    """The cluster cannot give what the config asks for (CPUs, GPUs), or workers did not start in time."""


class DataError(UserError, ValueError):
    """A dataset file the user pointed to cannot be read (corrupt image, invalid JSON, ...)."""
