"""What the expert sees: each frame's on-screen objects (minus those mostly under the HUD panels), the HUD
bars and the minimap position, as a Scene; a Tracker remembers objects across frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arena import spec
from arena.expert.config import ExpertConfig

# the panels drawn over the world: an object mostly under them is not in view (the bot's detector blanks
# them too, bot/games/arena.yaml hud.panels), so the expert does not react to what a player cannot make out
_HUD_PANELS = (spec.HUD_PANEL, spec.HUD_REPAIR_ICON, spec.HUD_BOOST_ICON, spec.HUD_MINIMAP)
HIDDEN_FRACTION = 0.5  # an object at least this much under the panels is hidden (training/detector.py's rule)


@dataclass
class Obj:
    """One on-screen object as a person sees it: its box on screen, its place in the world, its motion."""

    id: int
    cls: str
    box: np.ndarray  # (4,) x1, y1, x2, y2
    center: np.ndarray  # (2,)
    world: np.ndarray  # (2,) world px, from the screen position and the minimap position of the ship
    hp_frac: float
    aggro: bool
    dist: float  # world px from the player's ship
    vel: np.ndarray = field(default_factory=lambda: np.zeros(2))  # world px / s, from recent frames
    ghost: bool = False  # not on screen now: remembered from a moment ago, position extrapolated

    @property
    def radius(self) -> float:
        """Half the smaller side of the box: how far from the centre a click still lands on it."""
        return 0.5 * float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class Scene:
    """What the expert perceives in one frame."""

    time: float
    zoom: float  # screen px per world px
    player_screen: np.ndarray  # (2,) px, centre of the player's ship on screen
    pos: np.ndarray  # (2,) world px, from the minimap
    vel: np.ndarray  # (2,) world px / s
    hp_frac: float
    shield_frac: float
    cooldowns: dict[str, float]
    selected: int | None
    attacking: bool
    attack_on: bool | None  # the attack toggle as the HUD shows it, None if the game does not say
    in_safe_zone: bool
    npcs: list[Obj]
    boxes: list[Obj]
    portals: list[Obj]

    @property
    def bosses(self) -> list[Obj]:
        return [o for o in self.npcs if o.cls == "npc_boss"]

    @property
    def aggressors(self) -> list[Obj]:
        return [o for o in self.npcs if o.aggro]

    def find(self, obj_id: int | None) -> Obj | None:
        for o in (*self.npcs, *self.boxes, *self.portals):
            if o.id == obj_id:
                return o
        return None

    def to_world(self, screen: np.ndarray) -> np.ndarray:
        return self.pos + (screen - self.player_screen) / self.zoom

    def to_screen(self, world: np.ndarray) -> np.ndarray:
        return self.player_screen + (world - self.pos) * self.zoom


class Tracker:
    """Per-object memory across frames: world velocity (EMA) and the full size of each class's box.

    A box clipped by the screen edge has a shifted centre; a person still sees where the ship is, so the
    centre is rebuilt from the largest box seen for that class (all ships of a kind share one size).
    """

    def __init__(self, cfg: ExpertConfig):
        self.cfg = cfg
        self.last: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}  # id -> (time, world px, world px/s)
        self.size: dict[str, np.ndarray] = {}  # cls -> (w, h) px of its largest box seen

    def observe(self, raw: dict, scene: Scene) -> Obj:
        box = np.asarray(raw["box"], dtype=float)
        world = scene.to_world(self._full_center(raw["cls"], box))
        hp_max = float(raw.get("hp_max", 0.0))
        obj = Obj(
            id=int(raw["id"]),
            cls=raw["cls"],
            box=box,
            center=(box[:2] + box[2:]) / 2.0,
            world=world,
            hp_frac=float(raw.get("hp", 0.0)) / hp_max if hp_max > 0 else 0.0,
            aggro=bool(raw.get("aggro", False)),
            dist=float(np.linalg.norm(world - scene.pos)),
        )
        if obj.id in self.last:
            t0, w0, v0 = self.last[obj.id]
            dt = scene.time - t0
            obj.vel = 0.7 * v0 + 0.3 * (world - w0) / dt if dt > 0 else v0  # EMA over ~4 frames
        self.last[obj.id] = (scene.time, world, obj.vel)
        return obj

    def _full_center(self, cls: str, box: np.ndarray) -> np.ndarray:
        seen = self.size.get(cls, np.zeros(2))
        size = np.maximum(seen, box[2:] - box[:2])
        self.size[cls] = size
        lo, hi = box[:2].copy(), box[2:].copy()
        edge = np.array([self.cfg.width, self.cfg.height], dtype=float)
        at_low, at_high = lo <= 0.5, hi >= edge - 0.5
        lo = np.where(at_low & ~at_high, hi - size, lo)
        hi = np.where(at_high & ~at_low, lo + size, hi)
        return (lo + hi) / 2.0

    def prune(self, now: float, keep_s: float = 5.0) -> None:
        """Forget objects not seen for `keep_s` (ids are never reused, so the dict would only grow)."""
        self.last = {k: v for k, v in self.last.items() if now - v[0] < keep_s}


def perceive(info: dict, cfg: ExpertConfig, tracker: Tracker) -> Scene:
    """Build the frame's Scene from `info`: the on-screen objects not mostly under a HUD panel (with
    cfg.hud_hides), the HUD and the minimap position."""
    player = info["player"]
    objects = info.get("objects", [])
    me = next((o for o in objects if o["cls"] == "player"), None)
    box = np.asarray(
        me["box"] if me else [0.0, 0.0, cfg.width, cfg.height], dtype=float
    )  # the camera follows
    scene = Scene(
        time=float(info["time"]),
        zoom=cfg.zoom,
        player_screen=(box[:2] + box[2:]) / 2.0,
        pos=np.asarray(player["pos"], dtype=float),
        vel=np.asarray(player.get("vel", (0.0, 0.0)), dtype=float),
        hp_frac=float(info["hud"]["hp_frac"]),
        shield_frac=float(info["hud"]["shield_frac"]),
        cooldowns=dict(player.get("cooldowns", {})),
        selected=player.get("selected"),
        attacking=bool(player.get("attacking", False)),
        attack_on=player.get("attack_on"),
        in_safe_zone=bool(player.get("in_safe_zone", False)),
        npcs=[],
        boxes=[],
        portals=[],
    )
    for raw in objects:
        if raw["cls"] == "player" or (cfg.hud_hides and _under_hud(raw["box"], cfg)):
            continue
        obj = tracker.observe(raw, scene)
        group = scene.npcs if raw["cls"] in spec.NPC_CLASSES else scene.boxes
        (scene.portals if raw["cls"] == "portal" else group).append(obj)
    return scene


def _under_hud(box: Any, cfg: ExpertConfig) -> bool:
    """Whether at least HIDDEN_FRACTION of the box (x1, y1, x2, y2 px) lies under the HUD panels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    area = max((x2 - x1) * (y2 - y1), 1e-9)
    covered = 0.0
    for px1, py1, px2, py2 in _HUD_PANELS:  # the panels do not overlap each other
        w = min(x2, px2 * cfg.width) - max(x1, px1 * cfg.width)
        h = min(y2, py2 * cfg.height) - max(y1, py1 * cfg.height)
        covered += max(w, 0.0) * max(h, 0.0)
    return covered / area >= HIDDEN_FRACTION


def on_object(
    p: np.ndarray, scene: Scene, pad: float = 10.0, classes: tuple[str, ...] = spec.CLASSES
) -> bool:
    """Whether screen point `p` is within `pad` px of the box of an object of `classes`."""
    for o in (*scene.npcs, *scene.boxes, *scene.portals):
        if o.cls not in classes:
            continue
        x1, y1, x2, y2 = o.box
        if x1 - pad <= p[0] <= x2 + pad and y1 - pad <= p[1] <= y2 + pad:
            return True
    return False
