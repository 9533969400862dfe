"""The game behind RL training: the small `RLGame` interface and the Arena implementation (`ArenaGame`).

Another game plugs in by giving a frame, what perception detects in it, and a reward per step. Naev would be
wall-clock bound: it runs at ~30 fps in real time only, so one instance gives 108 k frames an hour. The
default Arena run (60 iterations x 2 episodes x 1800 frames = 216 k frames) would take ~2 h of Naev per
instance, a million frames ~9 h, ten million ~90 h (docs/notes/training.md, "training/rl/").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bot.perception.detector import Detections
from bot.profile import GameProfile
from training.rl.noise import PerceptionNoise, truth_boxes


@dataclass
class GameStep:
    """One frame of a game as training sees it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, what the HUD and cue readers read
    t: float  # s of game time since reset
    reward: float  # reward of the action that led here (0 on reset)
    done: bool  # the episode has ended: no action is taken on this frame
    score: dict[str, int]  # running totals for logs, e.g. credits, deaths


class RLGame(Protocol):
    """What the RL loop needs from a game."""

    size: tuple[int, int]  # (width, height) px of every frame
    fps: float  # frames per second of game time

    def reset(self, seed: int) -> GameStep: ...

    def step(self, action: dict) -> GameStep: ...

    def detections(self, rng: np.random.Generator) -> Detections:
        """The current frame's detections (ground truth through the noise model where the game has it)."""
        ...

    def close(self) -> None: ...


def arena_reward(before: dict, after: dict, death_penalty: float, scale: float) -> float:
    """scale * (credits gained - death_penalty * deaths) between two `info["score"]`s."""
    credits = after["credits"] - before["credits"]
    deaths = after["deaths"] - before["deaths"]
    return float(scale * (credits - death_penalty * deaths))


class ArenaGame:
    """The Arena in-process at the bundle's frame size; ground truth -> PerceptionNoise -> Detections."""

    def __init__(
        self, profile: GameProfile, size: tuple[int, int], seconds: float, noise: Any, reward: Any
    ) -> None:
        """`noise` is a NoiseConfig, `reward` (death_penalty, reward_scale)."""
        from arena.env import ArenaConfig, ArenaEnv

        config = ArenaConfig(width=size[0], height=size[1], fps=profile.fps, episode_seconds=seconds)
        self.env = ArenaEnv(config)
        self.size, self.fps = size, float(profile.fps)
        self.classes = profile.class_names
        self.masked = list(profile.hud.panels.values()) if profile.detector.mask_hud else []
        self.noise = PerceptionNoise(noise, len(self.classes), size)
        self.death_penalty, self.reward_scale = reward
        self.info: dict = {}

    def reset(self, seed: int) -> GameStep:
        image, self.info = self.env.reset(seed=seed)
        return GameStep(image, 0.0, 0.0, False, self._score())

    def step(self, action: dict) -> GameStep:
        before = self.info["score"]
        image, _, terminated, truncated, self.info = self.env.step(action)
        reward = arena_reward(before, self.info["score"], self.death_penalty, self.reward_scale)
        t = self.info["frame"] / self.fps
        return GameStep(image, t, reward, bool(terminated or truncated), self._score())

    def detections(self, rng: np.random.Generator) -> Detections:
        boxes, cls = truth_boxes(self.info["objects"], self.classes, self.size, self.masked)
        return self.noise(boxes, cls, rng)

    def _score(self) -> dict[str, int]:
        score = self.info["score"]
        return {"credits": int(score["credits"]), "deaths": int(score["deaths"])}

    def close(self) -> None:
        self.env.close()
