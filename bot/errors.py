"""Domain errors of the live runtime and its file formats. Each message names the file or field at fault."""

from __future__ import annotations

from pathlib import Path


class PilotError(Exception):
    """Base class: an error the command line reports as one line and a non-zero exit."""


class EpisodeError(PilotError):
    """A recorded episode on disk is missing, truncated, corrupt or of an unknown schema version."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
