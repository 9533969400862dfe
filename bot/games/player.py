"""What a player of an adapter game decides each frame (`PilotDecision`), and the player interface that the
scripted pilots, random input and a policy bundle all implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class PilotDecision:
    held: frozenset[str]  # physical keys to hold now (the others released)
    taps: tuple[str, ...]  # physical keys to tap once now
    mode: str  # FIGHT, LOOT, FLEE, EXPLORE or CAUTIOUS (the label of this frame)
    target_id: int  # the chosen object's id (probe id for a scripted pilot), -1 = none
    aim: tuple[float, float] | None = None  # where the mouse goes, fractions of the game region; None = stays
    click: bool = False  # click at `aim`


class Player(Protocol):
    def reset(self) -> None: ...

    def observe(self, frame: Any) -> None: ...  # a probe frame (scripted players only read it)

    def see(self, image: np.ndarray, t: float, cursor: tuple[float, float], click: bool) -> None: ...

    def decide(self, now: float) -> PilotDecision: ...
