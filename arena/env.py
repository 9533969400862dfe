"""ArenaEnv: the Arena as a gymnasium environment (frames in, mouse/keyboard actions out) and its ArenaConfig.

    env = ArenaEnv(ArenaConfig(width=640, height=360))
    frame, info = env.reset(seed=3)      # frame: (H, W, 3) uint8 RGB; info: spec.py's ground truth
    frame, reward, terminated, truncated, info = env.step({"mouse": [0.6, 0.4], "click": 1, "key": 0})

reward = credits gained this step (negative on the step of a death); terminated is always False; truncated
once `episode_seconds` of game time have passed. ArenaConfig(render=False) = sim only: all-zero frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from arena.rules import WorldConfig
from arena.spec import KEYS
from arena.state import Action
from arena.world import World
from validation import check_float

if TYPE_CHECKING:
    import pygame

    from arena.render import Renderer


@dataclass
class ArenaConfig(WorldConfig):
    """WorldConfig (view, fps, zoom, map, population) plus the episode and rendering settings."""

    episode_seconds: float = 600.0  # s of game time until truncated=True
    render: bool = True  # False = sim only: observations are all-zero frames, nothing is drawn

    def __post_init__(self) -> None:
        super().__post_init__()
        check_float(self, "episode_seconds", 0.0, low_open=True)  # s

    def world_config(self) -> WorldConfig:
        return WorldConfig(**{k: getattr(self, k) for k in WorldConfig.__dataclass_fields__})


class ArenaEnv(gym.Env):
    """The Arena behind the gymnasium API; observations are rendered frames, actions are spec.py's."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, config: ArenaConfig | None = None, render_mode: str | None = "rgb_array") -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"ArenaEnv.render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.config = cfg = config or ArenaConfig()
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": cfg.fps}
        self.observation_space = spaces.Box(0, 255, (cfg.height, cfg.width, 3), np.uint8)
        self.action_space = spaces.Dict(
            {
                "mouse": spaces.Box(0.0, 1.0, (2,), np.float32),
                "click": spaces.Discrete(2),
                "key": spaces.Discrete(len(KEYS)),
            }
        )
        self.world = World(cfg.world_config(), seed=0)
        self._renderer: Renderer | None = None
        self._max_frames = int(round(cfg.episode_seconds * cfg.fps))

    @property
    def renderer(self) -> Renderer:
        """The frame painter, made on first use so that sim-only use never imports pygame."""
        if self._renderer is None:
            from arena.render import Renderer

            self._renderer = Renderer(self.world.config)
        return self._renderer

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """New episode. The world's generator comes from gymnasium's np_random, so seed=None continues it."""
        super().reset(seed=seed)
        world_seed = int(self.np_random.integers(0, 2**63 - 1))
        self.world.reset(world_seed)
        return self._observation(), self.world.info()

    def step(self, action: Action | Mapping[str, Any]):
        reward = float(self.world.step(action))
        truncated = self.world.frame >= self._max_frames
        return self._observation(), reward, False, truncated, self.world.info()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        return self.renderer.render(self.world)

    def render_surface(self) -> pygame.Surface:
        """The current frame drawn onto the renderer's own pygame.Surface (reused by the next call)."""
        return self.renderer.draw(self.world)

    def _observation(self) -> np.ndarray:
        if self.config.render:
            return self.renderer.render(self.world)
        # A new array each call (gymnasium's checker insists); np.zeros maps zero pages lazily: cheap.
        return np.zeros(self.observation_space.shape, np.uint8)

    def close(self) -> None:
        self._renderer = None
