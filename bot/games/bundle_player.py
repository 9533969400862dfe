"""A policy bundle as a player of a game run by its adapter: it sees only the captured frames (perception),
decides with the bundle's three models, and answers in the adapter's decision form. Never reads a probe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bot.games.player import PilotDecision
from bot.perception.pipeline import Perception
from bot.policy.bundle import load_bundle_for
from bot.policy.runner import PolicyRunner


class BundlePlayer:
    """`see(frame, t, cursor, click)` every frame, then `decide(now)`: aim (fractions), click, keys."""

    def __init__(self, folder: Path, game: str, size: tuple[int, int], threads: int = 1) -> None:
        import torch

        if threads:  # the game runs beside us on few cores: torch's default thread pool starved both (Naev,
            torch.set_num_threads(threads)  # 2 cores: 8 fps with torch's 2 threads, 27 fps with 1)
        self.bundle = load_bundle_for(folder, game)
        profile = self.bundle.profile
        self.runner = PolicyRunner(self.bundle)
        self.perception = Perception(profile, self.bundle.detector(threads=threads), size, profile.fps)
        self.keys = [k.key for k in profile.keys]
        self.decision = None

    def reset(self) -> None:
        self.perception.reset()
        self.runner.reset()
        self.decision = None

    def observe(self, frame: object) -> None:
        """The probe is for measuring: a bundle never reads it."""

    def see(self, image: np.ndarray, t: float, cursor: tuple[float, float], click: bool) -> None:
        self.decision = self.runner.act(self.perception.step(image, cursor, click, t))

    def decide(self, now: float) -> PilotDecision:
        d = self.decision
        if d is None:
            return PilotDecision(frozenset(), (), "EXPLORE", -1)
        tap = self.keys[d.key] if 0 < d.key < len(self.keys) else None
        x, y = (min(1.0, max(0.0, float(v))) for v in d.mouse)
        held = self.bundle.profile.held_keys(d.held)  # keys the Executor's held head holds (Action v2)
        return PilotDecision(held, (tap,) if tap else (), d.mode or "EXPLORE", -1, (x, y), bool(d.click))
