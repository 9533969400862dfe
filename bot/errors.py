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


class ProfileError(PilotError):
    """A game profile (bot/games/*.yaml) is missing, malformed, or has a field with a bad value."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class CaptureError(PilotError):
    """The screen cannot be captured: no display, no window with the wanted title, a region off the screen."""


class InputError(PilotError):
    """Input cannot be sent: no display for pynput, an unknown key name, a hotkey that is also a game key."""


class DetectorError(PilotError):
    """Detector weights or their config.json are missing, unreadable, or do not match the game profile."""


class PerceptionError(PilotError):
    """Stored perception output is missing, corrupt, or of another observation spec than this build's."""


class PolicyError(PilotError):
    """A policy bundle (bundle.json, its model folders) is missing, malformed, or does not fit this build."""
