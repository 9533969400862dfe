"""The things in the Arena's world (Player, Npc, Box, Portal, laser Shot, Blast, Score), the Action the world
takes each frame, and the small motion helpers the world steps them with."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arena.rules import BOX_CREDITS, NpcStats
from arena.spec import KEYS, NPC_CLASSES


@dataclass(frozen=True)
class Action:
    """One frame of input, as in spec.py: cursor as a fraction of the frame, a left click, a key index."""

    mouse: tuple[float, float] = (0.5, 0.5)  # fraction of frame width / height
    click: bool = False  # left button pressed and released at the cursor
    key: int = 0  # index into spec.KEYS, 0 = none

    @classmethod
    def from_gym(cls, action: Action | Mapping[str, Any]) -> Action:
        """Accept an Action or the gymnasium dict {"mouse": (2,), "click": 0|1, "key": int}."""
        if isinstance(action, Action):
            return action
        try:
            mx, my = (float(v) for v in np.asarray(action["mouse"], dtype=np.float64).reshape(2))
            click, key = int(action["click"]), int(action["key"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"action: expected {{'mouse': (2,), 'click': 0|1, 'key': int}}, got {action!r}"
            ) from err
        if not 0 <= key < len(KEYS):
            raise ValueError(f"action.key: expected an int in [0, {len(KEYS) - 1}], got {key}")
        return cls((mx, my), bool(click), key)

    def to_gym(self) -> dict[str, Any]:
        return {"mouse": np.asarray(self.mouse, dtype=np.float32), "click": int(self.click), "key": self.key}


@dataclass(slots=True)
class Player:
    id: int
    x: float  # world px
    y: float
    hp: float
    shield: float
    vx: float = 0.0  # world px/s
    vy: float = 0.0
    heading: float = -math.pi / 2  # radians, faces up at spawn
    dest: tuple[float, float] | None = None  # where the last movement click sent it
    selected: int | None = None  # id of the selected NPC
    attack_on: bool = False  # the attack toggle
    attacking: bool = False  # attack_on and the target is in range (and not in the safe zone)
    fire_cd: float = 0.0  # s until the laser may fire again
    since_damage: float = 1e9  # s since it last took damage
    repair_left: float = 0.0  # s of healing left
    repair_cd: float = 0.0  # s until repair is ready
    boost_left: float = 0.0  # s of boost left
    boost_cd: float = 0.0  # s until boost is ready


@dataclass(slots=True)
class Npc:
    id: int
    stats: NpcStats
    x: float
    y: float
    hp: float
    home: tuple[float, float]  # spawn point; idle wandering stays near it
    orbit: float  # +1 or -1: which way it circles the player while fighting
    vx: float = 0.0
    vy: float = 0.0
    heading: float = 0.0
    aggro: bool = False  # attacking / chasing the player
    fire_cd: float = 0.0
    since_damage: float = 1e9
    wander: tuple[float, float] | None = None
    pause: float = 0.0  # s it idles before picking the next wander point

    @property
    def cls(self) -> str:
        return self.stats.cls


@dataclass(slots=True)
class Box:
    id: int
    x: float
    y: float
    credits: int = BOX_CREDITS


@dataclass(slots=True)
class Portal:
    id: int
    x: float
    y: float
    safe_radius: float


@dataclass(slots=True)
class Shot:
    """A laser bolt, drawn for SHOT_SECONDS from the shooter's to the target's position at firing time."""

    x1: float
    y1: float
    x2: float
    y2: float
    by_player: bool
    age: float = 0.0


@dataclass(slots=True)
class Blast:
    """A hit flash ("hit_npc", "hit_player") or an "explosion", with `seed` for the renderer's sparks."""

    kind: str
    x: float
    y: float
    size: float  # px, radius of the thing that was hit or blew up
    seed: int
    lifetime: float
    age: float = 0.0


@dataclass
class Score:
    credits: int = 0
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NPC_CLASSES, 0))
    boxes: int = 0
    deaths: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "credits": self.credits,
            "kills": dict(self.kills),
            "boxes": self.boxes,
            "deaths": self.deaths,
        }


def distance(ax: float, ay: float, bx: float, by: float) -> float:
    return math.hypot(bx - ax, by - ay)


def countdown(value: float, dt: float) -> float:
    """value - dt, floored at 0; a residue below 1e-6 counts as done (0.5 - 15 * (1/30) is 2.8e-17, not 0)."""
    value -= dt
    return value if value > 1e-6 else 0.0


def steer(vx: float, vy: float, want_x: float, want_y: float, max_dv: float) -> tuple[float, float]:
    """Move velocity (vx, vy) towards (want_x, want_y) by at most max_dv."""
    dx, dy = want_x - vx, want_y - vy
    dv = math.hypot(dx, dy)
    if dv <= max_dv:
        return want_x, want_y
    return vx + dx / dv * max_dv, vy + dy / dv * max_dv
