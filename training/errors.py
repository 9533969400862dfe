"""Domain errors of the training package. Each message is one line naming the field, file or tensor at fault.

TrainingError            base class of every error raised on purpose by the training loop
├── TrainConfigError     a TrainConfig field has the wrong type or value (also a validation.ConfigError)
├── TaskError            a Task answered outside its contract
├── CheckpointError      a checkpoint folder is missing, unreadable or does not match the model/optimizer
├── NonFiniteLossError   too many consecutive optimizer steps had a non-finite loss or gradient
└── TrainingInterrupted  SIGINT/SIGTERM: a resumable checkpoint was saved, the run stopped on purpose
DatasetError             a dataset config, episode or label file is unusable (a ValueError)
"""

from __future__ import annotations

import signal
from pathlib import Path

from validation import ConfigError


class TrainingError(Exception):
    """Base class of every error raised on purpose by `training`."""


class TrainConfigError(TrainingError, ConfigError):
    """A config field has the wrong type or value ("TrainConfig.lr: expected X, got Y")."""


class TaskError(TrainingError, TypeError):
    """A Task returned something outside its contract (training/task.py, `Task`)."""


class DatasetError(ValueError):
    """A dataset config, episode or label file is unusable (one line naming the field or file)."""


class CheckpointError(TrainingError):
    """A checkpoint is missing, unreadable, of an unknown format, or does not fit the model being trained."""


class NonFiniteLossError(TrainingError, RuntimeError):
    """The loss or the gradient norm stayed non-finite for `max_consecutive_nonfinite` optimizer steps."""


class TrainingInterrupted(TrainingError):
    """A stop signal arrived; `checkpoint` holds the resumable state saved at the next step boundary."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        where = (
            f"resumable checkpoint in {checkpoint}" if checkpoint else "no checkpoint written (not rank 0)"
        )
        super().__init__(
            f"training interrupted by {name} after step {step}; {where} (resume: TrainConfig.resume='auto')"
        )

    @property
    def exit_code(self) -> int:
        """The shell convention for a process ended by a signal: 128 + its number (130 for SIGINT)."""
        return 128 + self.signum
