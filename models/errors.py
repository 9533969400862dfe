"""Domain errors of the models package. Each message names the field, file or tensor at fault."""

from __future__ import annotations

from validation import ConfigError  # the project's one config error, raised by the configs' checks

__all__ = ["CheckpointError", "ConfigError", "KernelUnavailableError", "ModelsError"]


class ModelsError(Exception):
    """Base class of every error raised on purpose by `models`."""


class CheckpointError(ModelsError):
    """A saved model folder is missing, of an unknown format, or does not match its config."""


class KernelUnavailableError(ModelsError, RuntimeError):
    """The mamba-ssm CUDA kernels were asked for explicitly but cannot be used here."""
