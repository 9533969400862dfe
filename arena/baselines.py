"""Baseline policies for the Arena, with the expert's API `reset(seed)`, `act(info) -> (action, labels)`.

`RandomPolicy` is the floor every learned or scripted pilot must clearly beat: it moves the cursor to random
points (holding each for a while, as a person's hand rests), clicks and taps keys at human-ish rates, and
knows nothing about the game.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arena import spec
from validation import check_float, fail


@dataclass
class RandomPolicyConfig:
    """Rates of the random pilot; times in seconds of game time."""

    seed: int = 0  # RNG seed used when reset() is given none
    fps: float = spec.DEFAULT_FPS  # frames per second, to turn rates into per-frame probabilities
    hold_s: float = 0.6  # s, mean time the cursor rests on one random point
    clicks_per_s: float = 1.5  # mean click rate
    keys_per_s: float = 0.7  # mean key-tap rate (uniform over spec.KEYS[1:])

    def __post_init__(self) -> None:
        for name in ("fps", "hold_s"):
            check_float(self, name, 0.0, low_open=True)
        for name in ("clicks_per_s", "keys_per_s"):
            rate = getattr(self, name)
            if not 0 <= rate <= self.fps:
                raise fail(self, name, f"a rate in [0, fps={self.fps}]", rate)


class RandomPolicy:
    """Random cursor positions with persistence, random clicks and keys; labels are always None."""

    def __init__(self, cfg: RandomPolicyConfig | None = None):
        self.cfg = cfg or RandomPolicyConfig()
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(self.cfg.seed if seed is None else seed)
        self.mouse = self.rng.random(2).astype(np.float32)

    def act(self, info: dict) -> tuple[dict, dict]:
        cfg, rng = self.cfg, self.rng
        if rng.random() < 1.0 / (cfg.hold_s * cfg.fps):
            self.mouse = rng.random(2).astype(np.float32)
        click = int(rng.random() < cfg.clicks_per_s / cfg.fps)
        key = int(rng.integers(1, len(spec.KEYS))) if rng.random() < cfg.keys_per_s / cfg.fps else 0
        return {"mouse": self.mouse.copy(), "click": click, "key": key}, {"mode": None, "target_id": None}
