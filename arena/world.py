"""The Arena's simulation: a DarkOrbit-like 2D space world stepped at a fixed dt, with no pygame and no clock.

    World(config)          the rules below plus a WorldConfig (view size, fps, map size, population)
    World.reset(seed)      the player at the portal, NPCs and bonus boxes spread over the map
    World.step(action)     one frame: input -> abilities -> movement -> player laser -> kills -> NPC AI
                           -> pickups -> player death -> regeneration -> respawns; returns the credits
                           gained (negative after a death) and leaves the step's events in World.events
    World.info()           the ground-truth `info` dict documented in arena/spec.py

Determinism: every random draw comes from the one np.random.Generator made at reset, dt = 1 / fps, and
nothing reads the wall clock, so the same seed and the same actions give the same world frame for frame.
Units: world px (screen px at zoom 1), seconds, hit points, credits. Angles are radians in screen axes
(x right, y down), so heading 0 faces right and +pi/2 faces down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arena.spec import (
    DEFAULT_FPS,
    DEFAULT_HEIGHT,
    DEFAULT_WIDTH,
    HUD_MINIMAP,
    KEYS,
    NPC_CLASSES,
)

# ---------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class NpcStats:
    """The rules of one NPC kind."""

    cls: str  # one of spec.NPC_CLASSES
    hp: float  # hit points
    speed: float  # px/s at full throttle
    radius: float  # px, half the side of its on-screen box
    damage: float  # hp per laser shot
    fire_interval: float  # s between shots
    laser_range: float  # px
    aggro_radius: float  # px; it attacks a player this close on sight; 0 = passive (fights back when hit)
    leash: float  # px; it gives up the chase beyond this distance
    keep_distance: float  # px it tries to hold from the player while fighting
    credits: int  # reward for the kill
    respawn_s: float  # s until a replacement appears elsewhere on the map


# Tuned so that a raider duel costs a full-health player ~40 % of hp+shield, two raiders at once need the
# repair, and a boss (5x a raider's hp, 100 dps) outlasts a face-to-face fight: kite it (its range is shorter
# than the player's and it is slower) or retreat, repair and come back.
NPC_STATS: dict[str, NpcStats] = {
    "npc_scout": NpcStats("npc_scout", 300, 150, 16, 15, 1.0, 300, 0, 700, 220, 100, 8),
    "npc_raider": NpcStats("npc_raider", 1000, 200, 24, 45, 0.75, 350, 350, 850, 240, 400, 12),
    "npc_boss": NpcStats("npc_boss", 3000, 120, 48, 100, 1.0, 400, 300, 800, 260, 2500, 45),
}


@dataclass(frozen=True)
class PlayerStats:
    """The rules of the player's ship."""

    hp: float = 1000.0  # hit points
    shield: float = 600.0  # shield points, absorbed before hp
    speed: float = 250.0  # px/s
    accel: float = 900.0  # px/s^2, also the braking rate when arriving
    radius: float = 26.0  # px, half the side of its box
    laser_damage: float = 50.0  # hp per shot
    fire_interval: float = 0.5  # s between shots
    laser_range: float = 450.0  # px between centres
    shield_delay: float = 3.0  # s without damage before the shield regenerates
    shield_regen: float = 60.0  # shield/s
    hp_regen_delay: float = 5.0  # s without damage before hp slowly regenerates
    hp_regen: float = 5.0  # hp/s
    safe_hp_regen: float = 100.0  # hp/s inside the safe zone
    safe_shield_regen: float = 200.0  # shield/s inside the safe zone
    repair_rate: float = 100.0  # hp/s while the repair runs
    repair_seconds: float = 5.0  # s
    repair_cooldown: float = 20.0  # s from activation until it is ready again
    boost_factor: float = 1.8  # speed multiplier while boosting
    boost_seconds: float = 3.0  # s
    boost_cooldown: float = 15.0  # s from activation
    death_penalty: float = 0.10  # fraction of the credits lost on death
    pickup_radius: float = 40.0  # px between centres that collects a box


PLAYER = PlayerStats()
BOX_RADIUS = 12.0  # px
BOX_CREDITS = 60  # credits per bonus box
PORTAL_RADIUS = 64.0  # px, half the side of the portal's box (the safe zone is larger, see WorldConfig)
NPC_REGEN_DELAY = 8.0  # s out of combat before an NPC heals
NPC_REGEN = 0.02  # fraction of hp_max per s
NPC_ACCEL = 2.5  # NPC acceleration in units of its speed per second
WANDER_RADIUS = 350.0  # px around its spawn point that an idle NPC roams
SPAWN_MARGIN = 250.0  # px between the safe zone's edge and anything spawned
SELECTION_DROP = 2000.0  # px; a selection farther away than this is dropped

SHOT_SECONDS = 0.15  # lifetime of a laser bolt's drawing
HIT_SECONDS = 0.2  # lifetime of a hit flash
EXPLOSION_SECONDS = 0.8  # lifetime of an explosion


# -------------------------------------------------------------------------------------------- config


def check_field(owner: str, name: str, value: Any, ok: bool, expected: str) -> None:
    """Raise ValueError("Owner.name: expected ..., got value") when `ok` is false."""
    if not ok:
        raise ValueError(f"{owner}.{name}: expected {expected}, got {value!r}")


@dataclass
class WorldConfig:
    """What the simulation needs to know: the view (for clicks and visibility), time step, map, population."""

    width: int = DEFAULT_WIDTH  # px, frame width
    height: int = DEFAULT_HEIGHT  # px, frame height
    fps: int = DEFAULT_FPS  # steps per second of game time (dt = 1 / fps)
    zoom: float = 1.0  # screen px per world px; spec.py assumes 1 (0.5 at 640x360 shows the 1280x720 view)
    world_width: float = 4000.0  # world px
    world_height: float = 4000.0  # world px
    safe_zone_radius: float = 350.0  # world px around the portal (map centre)
    n_scouts: int = 16  # npc_scout alive at once (dead ones respawn)
    n_raiders: int = 10  # npc_raider alive at once
    n_bosses: int = 2  # npc_boss alive at once
    n_boxes: int = 20  # bonus boxes on the map at once

    def __post_init__(self) -> None:
        self._validate_world()

    def _validate_world(self) -> None:
        name = type(self).__name__
        for key, lo in (("width", 64), ("height", 64)):
            value = getattr(self, key)
            check_field(
                name, key, value, isinstance(value, int) and lo <= value <= 8192, "an int in [64, 8192]"
            )
        check_field(
            name, "fps", self.fps, isinstance(self.fps, int) and 1 <= self.fps <= 240, "an int in [1, 240]"
        )
        check_field(name, "zoom", self.zoom, 0.1 <= self.zoom <= 8.0, "a number in [0.1, 8]")
        for key in ("world_width", "world_height"):
            value = getattr(self, key)
            check_field(name, key, value, 1000.0 <= value <= 100000.0, "a number in [1000, 100000] px")
        limit = min(self.world_width, self.world_height) / 4.0
        ok = 100.0 <= self.safe_zone_radius <= limit
        check_field(name, "safe_zone_radius", self.safe_zone_radius, ok, f"a number in [100, {limit:g}] px")
        for key in ("n_scouts", "n_raiders", "n_bosses", "n_boxes"):
            value = getattr(self, key)
            check_field(name, key, value, isinstance(value, int) and 0 <= value <= 500, "an int in [0, 500]")

    @property
    def npc_counts(self) -> dict[str, int]:
        return {"npc_scout": self.n_scouts, "npc_raider": self.n_raiders, "npc_boss": self.n_bosses}


# --------------------------------------------------------------------------------------------- state


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


def _dist(ax: float, ay: float, bx: float, by: float) -> float:
    return math.hypot(bx - ax, by - ay)


def _countdown(value: float, dt: float) -> float:
    """value - dt, floored at 0; a residue below 1e-6 counts as done (0.5 - 15 * (1/30) is 2.8e-17, not 0)."""
    value -= dt
    return value if value > 1e-6 else 0.0


def _steer(vx: float, vy: float, want_x: float, want_y: float, max_dv: float) -> tuple[float, float]:
    """Move velocity (vx, vy) towards (want_x, want_y) by at most max_dv."""
    dx, dy = want_x - vx, want_y - vy
    dv = math.hypot(dx, dy)
    if dv <= max_dv:
        return want_x, want_y
    return vx + dx / dv * max_dv, vy + dy / dv * max_dv


# --------------------------------------------------------------------------------------------- world


class World:
    """The whole game state and its rules; see the module docstring for the order of one step."""

    def __init__(self, config: WorldConfig | None = None, seed: int | None = 0) -> None:
        self.config = config or WorldConfig()
        self.dt = 1.0 / self.config.fps
        self.reset(seed)

    # ------------------------------------------------------------------------------- reset / spawning

    def reset(self, seed: int | np.random.Generator | None = None) -> None:
        """Start a new episode; an int (or a Generator) makes it reproducible, None draws fresh entropy."""
        cfg = self.config
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.frame = 0
        self.score = Score()
        self.events: list[str] = []
        self.cursor = (cfg.width / 2.0, cfg.height / 2.0)
        self.shots: list[Shot] = []
        self.blasts: list[Blast] = []
        self._next_id = 0
        self.portal = Portal(
            self._new_id(), cfg.world_width / 2.0, cfg.world_height / 2.0, cfg.safe_zone_radius
        )
        self.player = Player(self._new_id(), self.portal.x, self.portal.y, PLAYER.hp, PLAYER.shield)
        self.npcs: list[Npc] = []
        self.boxes: list[Box] = []
        self._respawns: list[list[Any]] = []  # [seconds left, npc cls]
        for cls, count in cfg.npc_counts.items():
            for _ in range(count):
                self.spawn_npc(cls)
        for _ in range(cfg.n_boxes):
            self.spawn_box()

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def spawn_npc(self, cls: str, x: float | None = None, y: float | None = None) -> Npc:
        """Add an NPC of kind `cls` at (x, y), or at a random free spot out of the player's sight."""
        if cls not in NPC_STATS:
            raise ValueError(f"spawn_npc.cls: expected one of {tuple(NPC_STATS)}, got {cls!r}")
        if x is None or y is None:
            x, y = self._spawn_point()
        stats = NPC_STATS[cls]
        orbit = 1.0 if self.rng.random() < 0.5 else -1.0
        npc = Npc(self._new_id(), stats, float(x), float(y), stats.hp, (float(x), float(y)), orbit)
        self.npcs.append(npc)
        return npc

    def spawn_box(self, x: float | None = None, y: float | None = None) -> Box:
        """Add a bonus box at (x, y), or at a random free spot out of the player's sight."""
        if x is None or y is None:
            x, y = self._spawn_point()
        box = Box(self._new_id(), float(x), float(y))
        self.boxes.append(box)
        return box

    def _spawn_point(self) -> tuple[float, float]:
        """A random point away from the map edge and the safe zone, preferably out of the player's view."""
        cfg, p = self.config, self.player
        min_player = math.hypot(cfg.width, cfg.height) / (2.0 * cfg.zoom) + 150.0
        min_portal = self.portal.safe_radius + SPAWN_MARGIN
        x = y = 0.0
        for attempt in range(200):
            x = float(self.rng.uniform(100.0, cfg.world_width - 100.0))
            y = float(self.rng.uniform(100.0, cfg.world_height - 100.0))
            if _dist(x, y, self.portal.x, self.portal.y) < min_portal:
                continue
            # Late attempts accept points in view: a tiny map may have no spot out of sight.
            if attempt > 150 or _dist(x, y, p.x, p.y) >= min_player:
                break
        return x, y

    # --------------------------------------------------------------------------------------- geometry

    @property
    def time(self) -> float:
        """Seconds of game time since reset."""
        return self.frame * self.dt

    def camera_origin(self) -> tuple[float, float]:
        """World point at the frame's top-left corner: the camera keeps the player at the frame centre."""
        cfg = self.config
        return self.player.x - cfg.width / (2.0 * cfg.zoom), self.player.y - cfg.height / (2.0 * cfg.zoom)

    def world_to_screen(self, x: float, y: float) -> tuple[float, float]:
        cx, cy = self.camera_origin()
        return (x - cx) * self.config.zoom, (y - cy) * self.config.zoom

    def screen_to_world(self, sx: float, sy: float) -> tuple[float, float]:
        cx, cy = self.camera_origin()
        return cx + sx / self.config.zoom, cy + sy / self.config.zoom

    def minimap_rect(self) -> tuple[float, float, float, float]:
        """spec.HUD_MINIMAP in screen px; the whole map is stretched over it, axis by axis."""
        cfg = self.config
        x1, y1, x2, y2 = HUD_MINIMAP
        return x1 * cfg.width, y1 * cfg.height, x2 * cfg.width, y2 * cfg.height

    def world_to_minimap(self, x: float, y: float) -> tuple[float, float]:
        x1, y1, x2, y2 = self.minimap_rect()
        return x1 + x / self.config.world_width * (x2 - x1), y1 + y / self.config.world_height * (y2 - y1)

    def minimap_to_world(self, sx: float, sy: float) -> tuple[float, float]:
        x1, y1, x2, y2 = self.minimap_rect()
        return (sx - x1) / (x2 - x1) * self.config.world_width, (sy - y1) / (
            y2 - y1
        ) * self.config.world_height

    def screen_box(self, x: float, y: float, radius: float, clip: bool = True) -> list[float] | None:
        """Screen box [x1, y1, x2, y2] of the square of half-side `radius` (world px) at (x, y), or None."""
        sx, sy = self.world_to_screen(x, y)
        r = radius * self.config.zoom
        x1, y1, x2, y2 = sx - r, sy - r, sx + r, sy + r
        w, h = self.config.width, self.config.height
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            return None
        if clip:
            x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
        return [x1, y1, x2, y2]

    def in_safe_zone(self, x: float, y: float) -> bool:
        return _dist(x, y, self.portal.x, self.portal.y) <= self.portal.safe_radius

    def npc_by_id(self, npc_id: int | None) -> Npc | None:
        for npc in self.npcs:
            if npc.id == npc_id:
                return npc
        return None

    # ------------------------------------------------------------------------------------------- step

    def step(self, action: Action | Mapping[str, Any]) -> int:
        """Advance one frame; returns the credits gained (negative when a death cost more than was earned).

        The step's events (spec.py) are left in `self.events`.
        """
        self.events = []
        credits_before = self.score.credits
        self._apply_input(Action.from_gym(action))
        self._tick_abilities()
        self._move_player()
        self._fire_player()
        self._resolve_npc_deaths()
        for npc in self.npcs:
            self._update_npc(npc)
        self._collect_boxes()
        self._resolve_player_death()
        self._regenerate()
        self._respawn_npcs()
        self._age_effects()
        self.frame += 1
        return self.score.credits - credits_before

    # ------------------------------------------------------------------------------------------ input

    def _apply_input(self, action: Action) -> None:
        cfg = self.config
        mx = min(max(action.mouse[0], 0.0), 1.0)
        my = min(max(action.mouse[1], 0.0), 1.0)
        self.cursor = (mx * cfg.width, my * cfg.height)
        if action.click:
            self._click(*self.cursor)
        if action.key:
            self._press(KEYS[action.key])

    def _click(self, sx: float, sy: float) -> None:
        """DarkOrbit clicks: on the minimap = fly there; on an NPC = select it; elsewhere = fly there."""
        p, cfg = self.player, self.config
        x1, y1, x2, y2 = self.minimap_rect()
        if x1 <= sx <= x2 and y1 <= sy <= y2:
            wx, wy = self.minimap_to_world(sx, sy)
        else:
            npc = self._npc_at(sx, sy)
            if npc is not None:
                if npc.id != p.selected:
                    p.selected, p.attack_on = npc.id, False
                    self.events.append("select")
                return
            wx, wy = self.screen_to_world(sx, sy)
        r = PLAYER.radius
        p.dest = (min(max(wx, r), cfg.world_width - r), min(max(wy, r), cfg.world_height - r))

    def _npc_at(self, sx: float, sy: float) -> Npc | None:
        """The NPC whose on-screen box holds the point; the nearest centre wins where boxes overlap."""
        best, best_d = None, math.inf
        for npc in self.npcs:
            box = self.screen_box(npc.x, npc.y, npc.stats.radius, clip=False)
            if box is None or not (box[0] <= sx <= box[2] and box[1] <= sy <= box[3]):
                continue
            d = math.hypot((box[0] + box[2]) / 2 - sx, (box[1] + box[3]) / 2 - sy)
            if d < best_d:
                best, best_d = npc, d
        return best

    def _press(self, key: str) -> None:
        p = self.player
        if key == "attack" and p.selected is not None:
            p.attack_on = not p.attack_on
            self.events.append("attack_on" if p.attack_on else "attack_off")
        elif key == "repair" and p.repair_cd <= 0.0:
            p.repair_left, p.repair_cd = PLAYER.repair_seconds, PLAYER.repair_cooldown
            self.events.append("repair")
        elif key == "boost" and p.boost_cd <= 0.0:
            p.boost_left, p.boost_cd = PLAYER.boost_seconds, PLAYER.boost_cooldown
            self.events.append("boost")

    # ----------------------------------------------------------------------------------------- player

    def _tick_abilities(self) -> None:
        p, dt = self.player, self.dt
        if p.repair_left > 0.0:
            p.hp = min(PLAYER.hp, p.hp + PLAYER.repair_rate * min(dt, p.repair_left))
        p.repair_left = _countdown(p.repair_left, dt)
        p.boost_left = _countdown(p.boost_left, dt)
        p.repair_cd = _countdown(p.repair_cd, dt)
        p.boost_cd = _countdown(p.boost_cd, dt)
        p.fire_cd = _countdown(p.fire_cd, dt)
        p.since_damage += dt

    def _move_player(self) -> None:
        """Arrive at `dest`: full speed, then brake at `accel` so that it stops on the point."""
        p, dt, cfg = self.player, self.dt, self.config
        want_x = want_y = 0.0
        if p.dest is not None:
            dx, dy = p.dest[0] - p.x, p.dest[1] - p.y
            d = math.hypot(dx, dy)
            top = PLAYER.speed * (PLAYER.boost_factor if p.boost_left > 0.0 else 1.0)
            if d < 1.0 and math.hypot(p.vx, p.vy) < PLAYER.accel * dt:
                p.x, p.y, p.vx, p.vy, p.dest = p.dest[0], p.dest[1], 0.0, 0.0, None
                return
            if d > 0.0:
                speed = min(top, math.sqrt(2.0 * PLAYER.accel * d), d / dt)
                want_x, want_y = dx / d * speed, dy / d * speed
        p.vx, p.vy = _steer(p.vx, p.vy, want_x, want_y, PLAYER.accel * dt)
        r = PLAYER.radius
        p.x = min(max(p.x + p.vx * dt, r), cfg.world_width - r)
        p.y = min(max(p.y + p.vy * dt, r), cfg.world_height - r)
        if math.hypot(p.vx, p.vy) > 5.0:
            p.heading = math.atan2(p.vy, p.vx)

    def _fire_player(self) -> None:
        p = self.player
        target = self.npc_by_id(p.selected)
        if p.selected is not None and (
            target is None or _dist(p.x, p.y, target.x, target.y) > SELECTION_DROP
        ):
            p.selected, p.attack_on, target = None, False, None
        in_range = target is not None and _dist(p.x, p.y, target.x, target.y) <= PLAYER.laser_range
        p.attacking = p.attack_on and in_range and not self.in_safe_zone(p.x, p.y)
        if not p.attacking or target is None:
            return
        p.heading = math.atan2(target.y - p.y, target.x - p.x)
        if p.fire_cd > 0.0:
            return
        p.fire_cd = PLAYER.fire_interval
        target.hp -= PLAYER.laser_damage
        target.since_damage = 0.0
        target.aggro = True  # even a passive scout fights back once hit
        self._add_shot(p.x, p.y, target.x, target.y, True, target.stats.radius)
        self.events.append("hit_npc")

    def _add_shot(self, x1: float, y1: float, x2: float, y2: float, by_player: bool, size: float) -> None:
        self.shots.append(Shot(x1, y1, x2, y2, by_player))
        seed = self.frame * 7919 + len(self.blasts) * 31
        self.blasts.append(Blast("hit_npc" if by_player else "hit_player", x2, y2, size, seed, HIT_SECONDS))

    def _damage_player(self, amount: float) -> None:
        p = self.player
        absorbed = min(p.shield, amount)
        p.shield -= absorbed
        p.hp -= amount - absorbed
        p.since_damage = 0.0
        self.events.append("hit_player")

    # ------------------------------------------------------------------------------------------- NPCs

    def _update_npc(self, npc: Npc) -> None:
        p, st, dt = self.player, npc.stats, self.dt
        d = _dist(npc.x, npc.y, p.x, p.y)
        reachable = not self.in_safe_zone(p.x, p.y)
        if npc.aggro and (not reachable or d > st.leash):
            npc.aggro = False
        elif not npc.aggro and reachable and st.aggro_radius > 0.0 and d <= st.aggro_radius:
            npc.aggro = True
        want_x, want_y = self._npc_fight_velocity(npc, d) if npc.aggro else self._npc_wander_velocity(npc)
        npc.vx, npc.vy = _steer(npc.vx, npc.vy, want_x, want_y, NPC_ACCEL * st.speed * dt)
        npc.x, npc.y = self._keep_out(npc.x + npc.vx * dt, npc.y + npc.vy * dt, st.radius)
        if npc.aggro:
            npc.heading = math.atan2(p.y - npc.y, p.x - npc.x)
        elif math.hypot(npc.vx, npc.vy) > 5.0:
            npc.heading = math.atan2(npc.vy, npc.vx)
        npc.fire_cd = _countdown(npc.fire_cd, dt)
        npc.since_damage += dt
        if npc.aggro and reachable and npc.fire_cd <= 0.0 and _dist(npc.x, npc.y, p.x, p.y) <= st.laser_range:
            npc.fire_cd = st.fire_interval
            self._add_shot(npc.x, npc.y, p.x, p.y, False, PLAYER.radius)
            self._damage_player(st.damage)
        if not npc.aggro and npc.since_damage > NPC_REGEN_DELAY:
            npc.hp = min(st.hp, npc.hp + NPC_REGEN * st.hp * dt)

    def _npc_fight_velocity(self, npc: Npc, d: float) -> tuple[float, float]:
        """Close in to keep_distance, back off when too close, circle the player in between."""
        p, st = self.player, npc.stats
        if d < 1e-6:
            return 0.0, 0.0
        ux, uy = (p.x - npc.x) / d, (p.y - npc.y) / d
        if d > st.keep_distance + 40.0:
            return ux * st.speed, uy * st.speed
        if d < st.keep_distance - 40.0:
            return -ux * st.speed * 0.6, -uy * st.speed * 0.6
        return -uy * npc.orbit * st.speed * 0.5, ux * npc.orbit * st.speed * 0.5

    def _npc_wander_velocity(self, npc: Npc) -> tuple[float, float]:
        """Idle: drift at half speed between random points near home, pausing in between."""
        if npc.pause > 0.0:
            npc.pause = _countdown(npc.pause, self.dt)
            return 0.0, 0.0
        if npc.wander is None:
            hx, hy = npc.home
            wx = hx + float(self.rng.uniform(-WANDER_RADIUS, WANDER_RADIUS))
            wy = hy + float(self.rng.uniform(-WANDER_RADIUS, WANDER_RADIUS))
            npc.wander = self._keep_out(wx, wy, npc.stats.radius + 20.0)
        dx, dy = npc.wander[0] - npc.x, npc.wander[1] - npc.y
        d = math.hypot(dx, dy)
        if d < 10.0:
            npc.wander, npc.pause = None, float(self.rng.uniform(0.5, 3.0))
            return 0.0, 0.0
        speed = 0.45 * npc.stats.speed
        return dx / d * speed, dy / d * speed

    def _keep_out(self, x: float, y: float, radius: float) -> tuple[float, float]:
        """Clamp to the map and push out of the safe zone: NPCs never enter it."""
        cfg, portal = self.config, self.portal
        x = min(max(x, radius), cfg.world_width - radius)
        y = min(max(y, radius), cfg.world_height - radius)
        dx, dy = x - portal.x, y - portal.y
        d = math.hypot(dx, dy)
        limit = portal.safe_radius + radius
        if d < limit:
            if d < 1e-6:
                dx, dy, d = 1.0, 0.0, 1.0
            x, y = portal.x + dx / d * limit, portal.y + dy / d * limit
        return x, y

    # ------------------------------------------------------------------------------------ bookkeeping

    def _collect_boxes(self) -> None:
        p = self.player
        for i, box in enumerate(self.boxes):
            if _dist(p.x, p.y, box.x, box.y) <= PLAYER.pickup_radius:
                self.score.credits += box.credits
                self.score.boxes += 1
                self.events.append("box")
                x, y = self._spawn_point()
                self.boxes[i] = Box(self._new_id(), x, y)

    def _resolve_npc_deaths(self) -> None:
        p = self.player
        for npc in [n for n in self.npcs if n.hp <= 0.0]:
            self.npcs.remove(npc)
            self.score.credits += npc.stats.credits
            self.score.kills[npc.cls] += 1
            self.events.append(f"kill:{npc.cls}")
            self.blasts.append(Blast("explosion", npc.x, npc.y, npc.stats.radius, npc.id, EXPLOSION_SECONDS))
            self._respawns.append([npc.stats.respawn_s, npc.cls])
            if p.selected == npc.id:
                p.selected, p.attack_on, p.attacking = None, False, False

    def _resolve_player_death(self) -> None:
        """Death: explode, lose a share of the credits, come back at the portal with full hp and shield."""
        p = self.player
        if p.hp > 0.0:
            return
        self.blasts.append(Blast("explosion", p.x, p.y, PLAYER.radius, p.id + self.frame, EXPLOSION_SECONDS))
        self.score.credits -= int(self.score.credits * PLAYER.death_penalty)
        self.score.deaths += 1
        self.events.append("death")
        p.x, p.y, p.vx, p.vy, p.dest = self.portal.x, self.portal.y, 0.0, 0.0, None
        p.hp, p.shield, p.heading = PLAYER.hp, PLAYER.shield, -math.pi / 2
        p.selected, p.attack_on, p.attacking = None, False, False
        p.repair_left = p.boost_left = 0.0
        for npc in self.npcs:
            npc.aggro = False

    def _regenerate(self) -> None:
        p, dt = self.player, self.dt
        if self.in_safe_zone(p.x, p.y):
            p.hp = min(PLAYER.hp, p.hp + PLAYER.safe_hp_regen * dt)
            p.shield = min(PLAYER.shield, p.shield + PLAYER.safe_shield_regen * dt)
            return
        if p.since_damage >= PLAYER.shield_delay:
            p.shield = min(PLAYER.shield, p.shield + PLAYER.shield_regen * dt)
        if p.since_damage >= PLAYER.hp_regen_delay:
            p.hp = min(PLAYER.hp, p.hp + PLAYER.hp_regen * dt)

    def _respawn_npcs(self) -> None:
        due = []
        for entry in self._respawns:
            entry[0] = _countdown(entry[0], self.dt)
            if entry[0] == 0.0:
                due.append(entry)
        for entry in due:
            self._respawns.remove(entry)
            self.spawn_npc(entry[1])

    def _age_effects(self) -> None:
        dt = self.dt
        for shot in self.shots:
            shot.age += dt
        for blast in self.blasts:
            blast.age += dt
        self.shots = [s for s in self.shots if s.age < SHOT_SECONDS]
        self.blasts = [b for b in self.blasts if b.age < b.lifetime]

    # ------------------------------------------------------------------------------------------- info

    def info(self) -> dict[str, Any]:
        """The ground truth of spec.py for the current state (plain Python types, JSON-serialisable)."""
        p = self.player
        return {
            "frame": self.frame,
            "time": self.time,
            "cursor": [float(self.cursor[0]), float(self.cursor[1])],
            "objects": self.visible_objects(),
            "player": self._player_info(),
            "score": self.score.as_dict(),
            "events": list(self.events),
            "hud": {
                "hp_frac": p.hp / PLAYER.hp,
                "shield_frac": p.shield / PLAYER.shield,
                "credits": self.score.credits,
            },
        }

    def visible_objects(self) -> list[dict[str, Any]]:
        """One dict per object whose box intersects the frame: the player, the portal, boxes, then NPCs."""
        p = self.player
        out = [self._object(p.id, "player", p.x, p.y, PLAYER.radius, p.hp, PLAYER.hp, False, False)]
        portal = self.portal
        out.append(
            self._object(portal.id, "portal", portal.x, portal.y, PORTAL_RADIUS, 0.0, 0.0, False, False)
        )
        for box in self.boxes:
            out.append(self._object(box.id, "bonus_box", box.x, box.y, BOX_RADIUS, 0.0, 0.0, False, False))
        for npc in self.npcs:
            st = npc.stats
            selected = npc.id == p.selected
            out.append(
                self._object(npc.id, st.cls, npc.x, npc.y, st.radius, npc.hp, st.hp, npc.aggro, selected)
            )
        return [o for o in out if o is not None]

    def _object(
        self,
        obj_id: int,
        cls: str,
        x: float,
        y: float,
        radius: float,
        hp: float,
        hp_max: float,
        aggro: bool,
        selected: bool,
    ) -> dict[str, Any] | None:
        box = self.screen_box(x, y, radius)
        if box is None:
            return None
        return {
            "id": obj_id,
            "cls": cls,
            "box": box,
            "hp": float(hp),
            "hp_max": float(hp_max),
            "aggro": aggro,
            "selected": selected,
        }

    def _player_info(self) -> dict[str, Any]:
        p = self.player
        return {
            "hp": float(p.hp),
            "hp_max": PLAYER.hp,
            "shield": float(p.shield),
            "shield_max": PLAYER.shield,
            "pos": [float(p.x), float(p.y)],
            "vel": [float(p.vx), float(p.vy)],
            "selected": p.selected,
            "attacking": p.attacking,
            "attack_on": p.attack_on,
            "cooldowns": {"repair": p.repair_cd, "boost": p.boost_cd},
            "active": {"repair": p.repair_left, "boost": p.boost_left},
            "in_safe_zone": self.in_safe_zone(p.x, p.y),
        }
