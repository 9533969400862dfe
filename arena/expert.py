"""The Arena's scripted expert pilot: the demonstrator every Orbit Pilot model is first trained on.

It plays only through the action a person has (cursor position, left click, one key tap per frame) and decides
only from what a person sees: the on-screen objects, the HUD bars and the minimap position in `info` (see
`arena/spec.py`). It never reads hidden or off-screen game state, nor objects mostly under the HUD panels
(the bot's detector blanks those), so a learner can infer its decisions.

    info ──perceive──▶ Scene ──ModeSelector (hysteresis)──▶ mode ──TargetSelector (hysteresis)──▶ target
                                                                 │
                     tactics (one function per mode) ◀───────────┘
                         │ Intent (aim point, click?) + key requests
                         ▼
             Cursor (reaction delay, minimum-jerk paths that finish, jitter) ──▶ mouse, click
             Keyboard (reaction delay, human spacing between taps)            ──▶ key

Human-likeness, against the old bot's defects (shared/reference/original-system.md §actuation): a click fires
only once the cursor's movement has finished on its target; a path is never restarted from rest when the
target moves, it is re-planned from the cursor's current position *and velocity* (a quintic that matches
both), so every movement ends; aim noise is drawn once per movement, not every frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arena import spec

log = logging.getLogger(__name__)

FIGHT, LOOT, FLEE, EXPLORE, CAUTIOUS = spec.MODES
_KEY_INDEX = {name: i for i, name in enumerate(spec.KEYS)}
_HUD_RECTS = (spec.HUD_HP_BAR, spec.HUD_SHIELD_BAR, spec.HUD_CREDITS, spec.HUD_MINIMAP)
# the panels drawn over the world: an object mostly under them is not in view (the bot's detector blanks
# them too, bot/games/arena.yaml hud.panels), so the expert does not react to what a player cannot make out
_HUD_PANELS = (spec.HUD_PANEL, spec.HUD_REPAIR_ICON, spec.HUD_BOOST_ICON, spec.HUD_MINIMAP)
HIDDEN_FRACTION = 0.5  # an object at least this much under the panels is hidden (training/detector.py's rule)


# ---------------------------------------------------------------------------------------- config


@dataclass
class ExpertConfig:
    """Everything that shapes the expert's play. `skill` scales the human-timing fields below it.

    With f = 1.5 - skill (1.5 at skill 0, 0.5 at skill 1): reaction delays, tap gaps and aim jitter are
    multiplied by f, the cursor's speed is divided by f, and target choice gets noisier as skill falls.
    """

    seed: int = 0  # RNG seed used when reset() is given none
    skill: float = 0.8  # 0..1, overall competence (see the class docstring)
    width: int = spec.DEFAULT_WIDTH  # px, width of the game frame the mouse fraction refers to
    height: int = spec.DEFAULT_HEIGHT  # px
    zoom: float = 1.0  # screen px per world px, the game's view (0.5 shows 1280x720 world px in 640x360)
    world_width: float = 4000.0  # world px, size of the map the minimap shows
    world_height: float = 4000.0  # world px
    laser_range: float = 450.0  # world px, how far from the ship a selected NPC can be shot (game rules)
    safe_zone_radius: float = 350.0  # world px around the portal (drawn on screen): no fighting inside
    # --- human timing and noise (values for skill 0.5) ---
    reaction_delay_s: float = 0.25  # s, median delay before acting on a new intention
    cursor_speed_bits_s: float = 8.0  # Fitts' throughput, bits/s: movement time = 0.06 s + log2(1+D/W)/speed
    jitter_px: float = 3.0  # px, std of the aim error of each cursor movement
    curve_frac: float = 0.06  # std of a path's sideways bulge, as a fraction of its length
    click_gap_s: float = 0.2  # s, minimum time between two clicks
    key_gap_s: float = 0.25  # s, minimum time between two key taps
    # --- decisions ---
    mode_dwell_s: float = 1.5  # s, minimum time in a mode before another is chosen (entering FLEE preempts)
    flee_dwell_s: float = 3.0  # s, minimum time in FLEE once entered
    target_dwell_s: float = 1.0  # s, minimum time on a target before switching to a better one
    target_margin: float = 0.3  # cost units a new target must be better by to take over
    flee_hp: float = 0.3  # hp fraction below which the expert flees (with no aggressive raider on screen)
    flee_hp_per_raider: float = 0.1  # each aggressive raider on screen raises flee_hp by this much
    recover_hp: float = 0.9  # hp fraction above which a flight for low hp ends (the safe zone heals fast)
    cautious_hp: float = 0.7  # hp fraction below which several aggressive raiders make it cautious
    cautious_raiders: int = 2  # aggressive raiders on screen that call for caution
    flee_boss_aggro: bool = True  # a boss attacking the player triggers FLEE (unless the expert is kiting it)
    # objects mostly under the HUD panels are out of view; False = the pre-2026-11-23 expert, which reacted
    # to them (e.g. a boss under the minimap kept it CAUTIOUS while nothing on screen showed one)
    hud_hides: bool = True
    kite_boss_skill: float = 0.6  # skill at or above which the expert takes bosses on, by kiting them
    boss_flee_hp: float = 0.5  # hp fraction below which a fight with a boss is broken off
    kite_dist: float = 415.0  # world px held from a kited boss: beyond its laser range, within ours
    ship_speed: float = 250.0  # world px/s, the ship's cruising speed (as a player learns it)
    repair_hp: float = 0.6  # hp fraction below which the repair ability is used when ready
    loot_bias: float = 1.5  # a box is preferred to an NPC when closer than loot_bias * the NPC's distance
    boss_keep_dist: float = 480.0  # world px, CAUTIOUS keeps at least this far from a boss
    move_reclick_s: float = 1.2  # s, a movement order is renewed this often while still needed
    waypoint_reached: float = 200.0  # world px, an exploration waypoint counts as reached this close

    def __post_init__(self) -> None:
        _check_range("skill", self.skill, 0.0, 1.0)
        _check_range("kite_boss_skill", self.kite_boss_skill, 0.0, 2.0)  # > 1 = never kite
        for name in ("width", "height"):
            _check_range(name, getattr(self, name), 32, 16384)
        for name in _POSITIVE:
            _check(name, getattr(self, name), getattr(self, name) > 0, "> 0")
        for name in _NON_NEGATIVE:
            _check(name, getattr(self, name), getattr(self, name) >= 0, ">= 0")
        for name in _FRACTIONS:
            _check_range(name, getattr(self, name), 0.0, 1.0)
        _check("recover_hp", self.recover_hp, self.recover_hp > self.flee_hp, f"> flee_hp ({self.flee_hp})")
        _check("cautious_raiders", self.cautious_raiders, self.cautious_raiders >= 1, ">= 1")

    @classmethod
    def matching(cls, view: Any, **overrides: Any) -> ExpertConfig:
        """A config for the game whose config is `view` (e.g. an ArenaConfig): copies its frame size, zoom
        and map size, the things a player sees on the screen and the minimap."""
        names = ("width", "height", "zoom", "world_width", "world_height", "safe_zone_radius")
        shared = {name: getattr(view, name) for name in names if hasattr(view, name)}
        return cls(**{**shared, **overrides})

    @property
    def clumsiness(self) -> float:
        """f = 1.5 - skill: the factor on delays and noise (1.0 at skill 0.5)."""
        return 1.5 - self.skill


# ExpertConfig fields by the range they must lie in
_POSITIVE = (
    "zoom", "world_width", "world_height", "laser_range", "safe_zone_radius", "reaction_delay_s",
    "cursor_speed_bits_s", "click_gap_s", "key_gap_s", "move_reclick_s", "waypoint_reached", "boss_keep_dist",
    "loot_bias", "kite_dist", "ship_speed",
)  # fmt: skip
_NON_NEGATIVE = ("jitter_px", "curve_frac", "mode_dwell_s", "flee_dwell_s", "target_dwell_s", "target_margin")
_FRACTIONS = ("flee_hp", "flee_hp_per_raider", "recover_hp", "cautious_hp", "repair_hp", "boss_flee_hp")


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"ExpertConfig.{name}: expected {expected}, got {value!r}")


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    ok = isinstance(value, int | float) and lo <= value <= hi
    _check(name, value, ok, f"a number in [{lo}, {hi}]")


# ---------------------------------------------------------------------------------------- perception


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


# ---------------------------------------------------------------------------------------- the hand


@dataclass
class Intent:
    """Where the hand should be and whether it should click there once it has arrived."""

    key: tuple  # identity of the aim, e.g. ("select", 12) or ("move", "explore"); a new key costs a reaction
    point: np.ndarray  # (2,) px, where to aim now (it may move every frame)
    radius: float  # px, the click lands on the intended thing if the cursor is this close to `point`
    click: bool = False
    box: np.ndarray | None = None  # (4,) px; if given, a click also needs the cursor inside it (an NPC's box)


def _on_intent(pos: np.ndarray, intent: Intent) -> bool:
    """The cursor is close enough to the intent's point (and inside its box, if it has one) to click."""
    near = bool(np.linalg.norm(pos - intent.point) <= intent.radius)
    return near and (
        intent.box is None or bool(np.all(pos >= intent.box[:2]) and np.all(pos <= intent.box[2:]))
    )


class _Segment:
    """One cursor movement: a quintic from (p0, v0) to p1 at rest plus a sideways bulge; ends exactly at p1.

    With v0 = 0 this is the minimum-jerk profile 10s^3 - 15s^4 + 6s^5 (Flash & Hogan 1985). A non-zero v0 is
    used when re-planning mid-movement, so a moving target bends the path instead of restarting it.
    """

    def __init__(
        self, t0: float, duration: float, p0: np.ndarray, v0: np.ndarray, p1: np.ndarray, bulge: float
    ):
        self.t0, self.duration, self.p0, self.p1 = t0, duration, p0.copy(), p1.copy()
        vT = v0 * duration  # velocity per unit of normalised time s
        d = p1 - p0 - vT
        self.coef = (vT, 10 * d + 4 * vT, -15 * d - 7 * vT, 6 * d + 3 * vT)  # s, s^3, s^4, s^5
        chord = p1 - p0
        length = float(np.linalg.norm(chord))
        normal = np.array([-chord[1], chord[0]]) / length if length > 1e-6 else np.zeros(2)
        self.bulge = normal * bulge * length

    def done(self, t: float) -> bool:
        return t >= self.t0 + self.duration

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Position (px) and velocity (px/s) at time t; exactly (p1, 0) once finished."""
        if self.done(t):
            return self.p1.copy(), np.zeros(2)
        s = max(0.0, (t - self.t0) / self.duration)
        c1, c3, c4, c5 = self.coef
        pos = self.p0 + c1 * s + c3 * s**3 + c4 * s**4 + c5 * s**5 + self.bulge * 16 * s**2 * (1 - s) ** 2
        dpos = (
            c1 + 3 * c3 * s**2 + 4 * c4 * s**3 + 5 * c5 * s**4 + self.bulge * 32 * s * (1 - s) * (1 - 2 * s)
        )
        return pos, dpos / self.duration


class Cursor:
    """The expert's hand on the mouse: reacts late to new intentions, aims on Fitts-timed paths that end."""

    RETARGET_PERIOD_S = 0.1  # visual feedback loop of a person correcting an aimed movement

    def __init__(self, cfg: ExpertConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.pos = np.array([cfg.width / 2.0, cfg.height / 2.0])
        self.seg: _Segment | None = None
        self.key: tuple | None = None
        self.aim: np.ndarray | None = None  # the un-jittered point the current segment was planned for
        self.pending: tuple[tuple, float] | None = None  # (intent key, time the hand starts on it)
        self.last_plan_t = -math.inf

    def update(self, now: float, intent: Intent | None) -> np.ndarray:
        """Advance the hand to time `now` following `intent`; returns the cursor position (px)."""
        if intent is not None:
            if intent.key != self.key:
                self._switch(now, intent)
            else:
                self.pending = None  # the intention came back before the hand had left it
                self._follow(now, intent)
        if self.seg is not None:
            self.pos, _ = self.seg.at(now)
        return self.pos.copy()

    def arrived(self, now: float, intent: Intent) -> bool:
        """True once the movement towards `intent` has finished and the cursor is on its point."""
        finished = self.seg is None or self.seg.done(now)
        return self.key == intent.key and finished and _on_intent(self.pos, intent)

    def _switch(self, now: float, intent: Intent) -> None:
        if self.pending is None or self.pending[0] != intent.key:
            delay = self.cfg.reaction_delay_s * self.cfg.clumsiness * float(self.rng.lognormal(0.0, 0.25))
            self.pending = (intent.key, now + min(max(delay, 0.08), 1.2))
        if now >= self.pending[1]:
            self.key, self.pending = intent.key, None
            self._plan(now, intent)

    def _follow(self, now: float, intent: Intent) -> None:
        if self.aim is None or now - self.last_plan_t < self.RETARGET_PERIOD_S:
            return
        drift = float(np.linalg.norm(intent.point - self.aim))
        off_target = not _on_intent(self.pos, intent)
        moving = self.seg is not None and not self.seg.done(now)
        if (moving and drift > max(4.0, 0.5 * intent.radius)) or (not moving and off_target):
            self._plan(now, intent)

    def _plan(self, now: float, intent: Intent) -> None:
        """Start a movement from the current position and velocity to a jittered point near intent.point."""
        cfg = self.cfg
        pos, vel = self.seg.at(now) if self.seg is not None else (self.pos, np.zeros(2))
        err = self.rng.normal(0.0, cfg.jitter_px * cfg.clumsiness, 2)
        limit = 0.6 * intent.radius
        norm = float(np.linalg.norm(err))
        end = intent.point + (err * (limit / norm) if norm > limit else err)
        end = np.clip(end, 0.0, [cfg.width - 1.0, cfg.height - 1.0])
        dist = float(np.linalg.norm(end - pos))
        bits = math.log2(1.0 + dist / max(2.0 * intent.radius, 8.0))
        duration = max(0.06 + bits * cfg.clumsiness / cfg.cursor_speed_bits_s, 2.0 / spec.DEFAULT_FPS)
        bulge = float(self.rng.normal(0.0, cfg.curve_frac)) if dist > 40 else 0.0
        self.seg = _Segment(now, duration, pos, vel, end, bulge)
        self.aim, self.last_plan_t = intent.point.copy(), now


class Keyboard:
    """Key taps with a reaction delay and human spacing; one tap per frame at most."""

    def __init__(self, cfg: ExpertConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.queue: list[tuple[str, float]] = []  # (key name, earliest time)
        self.last_tap: dict[str, float] = {}
        self.next_free = 0.0

    def request(self, key: str, now: float, repeat_s: float = 1.0) -> None:
        """Ask for `key` to be tapped; ignored if it is queued or was tapped in the last `repeat_s`."""
        if any(k == key for k, _ in self.queue) or now - self.last_tap.get(key, -math.inf) < repeat_s:
            return
        delay = self.cfg.reaction_delay_s * self.cfg.clumsiness * float(self.rng.lognormal(0.0, 0.3))
        self.queue.append((key, now + delay))

    def retain(self, wanted: list[str]) -> None:
        """Drop queued taps no longer wanted: a person who sees the attack already on does not press it."""
        self.queue = [(k, t) for k, t in self.queue if k in wanted]

    def pop(self, now: float) -> int:
        """The index into spec.KEYS tapped this frame (0 = none)."""
        if now < self.next_free:
            return 0
        for i, (key, ready) in enumerate(self.queue):
            if ready <= now:
                del self.queue[i]
                self.last_tap[key] = now
                gap = self.cfg.key_gap_s * self.cfg.clumsiness * float(self.rng.uniform(1.0, 1.6))
                self.next_free = now + gap
                return _KEY_INDEX[key]
        return 0


# ---------------------------------------------------------------------------------------- decisions


def desired_mode(scene: Scene, low_hp_latched: bool, cfg: ExpertConfig) -> str:
    """The mode this frame calls for, before the minimum-dwell hysteresis of ModeSelector."""
    hunting = [b for b in scene.bosses if b.aggro and not kiting(scene, cfg, b)]
    if low_hp_latched or (cfg.flee_boss_aggro and hunting):
        return FLEE
    raiders = [o for o in scene.aggressors if o.cls == "npc_raider"]
    if scene.bosses or (len(raiders) >= cfg.cautious_raiders and scene.hp_frac < cfg.cautious_hp):
        return CAUTIOUS
    if scene.aggressors:
        return FIGHT
    box = min(scene.boxes, key=lambda o: o.dist, default=None)
    npc = min(scene.npcs, key=lambda o: o.dist, default=None)
    if box is not None and (npc is None or box.dist < cfg.loot_bias * npc.dist):
        return LOOT
    return FIGHT if npc is not None else EXPLORE


class ModeSelector:
    """Mode with hysteresis: a low-hp flight lasts until hp recovers; every mode is kept a minimum time."""

    def __init__(self, cfg: ExpertConfig):
        self.cfg = cfg
        self.mode = EXPLORE
        self.since = -math.inf  # the first frame picks its mode freely
        self.low_hp = False

    def update(self, scene: Scene) -> str:
        cfg = self.cfg
        raiders = sum(o.cls == "npc_raider" for o in scene.aggressors)
        # the more raiders shoot at us the earlier we must leave: fleeing takes seconds under their fire
        flee_at = min(cfg.flee_hp + cfg.flee_hp_per_raider * raiders, 0.5 * (cfg.flee_hp + cfg.recover_hp))
        if any(b.aggro for b in scene.bosses):
            flee_at = max(flee_at, cfg.boss_flee_hp)
        if scene.hp_frac < flee_at:
            self.low_hp = True
        elif scene.hp_frac >= cfg.recover_hp:
            self.low_hp = False
        want = desired_mode(scene, self.low_hp, cfg)
        dwell = cfg.flee_dwell_s if self.mode == FLEE else cfg.mode_dwell_s
        if want != self.mode and (want == FLEE or scene.time - self.since >= dwell):
            log.debug("t=%.2f mode %s -> %s (hp %.2f)", scene.time, self.mode, want, scene.hp_frac)
            self.mode, self.since = want, scene.time
        return self.mode


_NPC_COST = {"npc_scout": 0.0, "npc_raider": 0.25, "npc_boss": 3.0}  # raiders last longer, bosses need kiting


def target_costs(mode: str, scene: Scene, cfg: ExpertConfig) -> dict[int, float]:
    """Cost of each candidate target for `mode` (lower is better): distance in laser ranges, plus
    preferences (wounded, attacking us, already selected, easy kind); no candidates -> {}."""
    reach = cfg.laser_range
    if mode == FIGHT:
        return {o.id: o.dist / reach + _fight_cost(o, scene) for o in scene.npcs}
    if mode == CAUTIOUS:
        weak = [o for o in scene.npcs if o.cls != "npc_boss" and _clear_of_bosses(o, scene, cfg)]
        costs = {o.id: o.dist / reach + 0.8 * o.hp_frac - 0.5 * o.aggro + 2 * _NPC_COST[o.cls] for o in weak}
        bosses = [b for b in scene.bosses if may_kite(scene, cfg, b)]
        return costs | {b.id: b.dist / reach + 0.8 * b.hp_frac - 1.0 for b in bosses}
    if mode == LOOT:  # a box next to an NPC that is after us costs a fight on the way
        return {b.id: b.dist / reach + sum(_near(n, b, reach) for n in scene.aggressors) for b in scene.boxes}
    if mode == FLEE:
        return {p.id: p.dist / reach for p in scene.portals}
    return {}


def _fight_cost(o: Obj, scene: Scene) -> float:
    return 0.8 * o.hp_frac - 1.0 * o.aggro - 0.3 * (o.id == scene.selected) + _NPC_COST[o.cls]


def may_kite(scene: Scene, cfg: ExpertConfig, boss: Obj) -> bool:
    """Take on (or keep fighting) this boss: skilled enough, alone with it, and healthy enough."""
    alone = len(scene.bosses) == 1 and not any(o.aggro for o in scene.npcs if o.cls != "npc_boss")
    if cfg.skill < cfg.kite_boss_skill or not alone:
        return False
    if scene.selected == boss.id:
        return scene.hp_frac >= cfg.boss_flee_hp
    return scene.hp_frac >= 0.9 and scene.shield_frac >= 0.9


def kiting(scene: Scene, cfg: ExpertConfig, boss: Obj) -> bool:
    """This boss is the expert's selected target and the fight may go on."""
    return scene.selected == boss.id and may_kite(scene, cfg, boss)


def _near(a: Obj, b: Obj, dist: float) -> bool:
    return float(np.linalg.norm(a.world - b.world)) < dist


def _clear_of_bosses(o: Obj, scene: Scene, cfg: ExpertConfig) -> bool:
    return not any(_near(o, b, cfg.boss_keep_dist) for b in scene.bosses)


class TargetSelector:
    """Keeps a target while it stays visible, for a minimum time, unless another is clearly better."""

    def __init__(self, cfg: ExpertConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.target: int | None = None
        self.since = 0.0
        self.bias: dict[int, float] = {}  # per-object preference noise, drawn once so choices do not flicker

    def update(self, mode: str, scene: Scene) -> Obj | None:
        costs = target_costs(mode, scene, self.cfg)
        for obj_id in costs:
            if obj_id not in self.bias:
                self.bias[obj_id] = float(self.rng.normal(0.0, 0.4 * (1.0 - self.cfg.skill) + 0.05))
            costs[obj_id] += self.bias[obj_id]
        if not costs:
            self.target = None
            return None
        best = min(costs, key=costs.__getitem__)
        current = self.target if self.target in costs else None
        keep = current is not None and (
            scene.time - self.since < self.cfg.target_dwell_s
            or costs[best] > costs[current] - self.cfg.target_margin
        )
        if not keep:
            self.target, self.since = best, scene.time
        return scene.find(self.target)


# ---------------------------------------------------------------------------------------- tactics


@dataclass
class Memory:
    """What the expert remembers between frames (a person's short-term memory of their own actions)."""

    move_click_t: float = -math.inf  # time of the last movement click
    move_dest: np.ndarray | None = None  # world px the last movement click sent the ship to
    attack_for: int | None = None  # NPC id the attack toggle was last pressed for
    attack_t: float = -math.inf
    waypoint: np.ndarray | None = None  # world px, exploration goal
    waypoint_t: float = -math.inf
    loot_click: dict[int, float] = field(default_factory=dict)  # box id -> time of the last click on it
    home: np.ndarray | None = None  # world px of the portal (the safe zone), remembered once seen
    bosses_seen: dict[int, tuple[float, np.ndarray]] = field(default_factory=dict)  # id -> (time, world px)
    kite_sign: float = 1.0  # which way round a kited boss is circled


@dataclass
class Plan:
    intent: Intent | None
    keys: list[str] = field(default_factory=list)


@dataclass
class Context:
    """Everything a tactic needs: config, randomness, memory and the frame's perception."""

    cfg: ExpertConfig
    rng: np.random.Generator
    mem: Memory
    scene: Scene

    @property
    def view_reach(self) -> float:
        """World px from the ship to a comfortable click point near the edge of the view."""
        return 0.4 * min(self.cfg.width, self.cfg.height) / self.cfg.zoom


def move_intent(
    ctx: Context, tag: str, direction: np.ndarray, reach: float, reclick_s: float = 0.0
) -> Intent:
    """Aim at empty space `reach` world px from the ship along `direction` (world), clicking when the order
    needs renewing: none given lately, a different destination, or the ship has stopped."""
    scene, cfg, mem = ctx.scene, ctx.cfg, ctx.mem
    reach = min(max(reach, 30.0), ctx.view_reach)
    point = free_point(scene.player_screen + _unit(direction) * reach * cfg.zoom, scene, cfg)
    dest = scene.to_world(point)
    stale = scene.time - mem.move_click_t > (reclick_s or cfg.move_reclick_s)
    changed = mem.move_dest is None or float(np.linalg.norm(dest - mem.move_dest)) > max(40.0, 0.5 * reach)
    stopped = float(np.linalg.norm(scene.vel)) < 5.0 and float(np.linalg.norm(dest - scene.pos)) > 20.0
    return Intent(("move", tag), point, radius=14.0, click=stale or changed or stopped)


def free_point(point: np.ndarray, scene: Scene, cfg: ExpertConfig) -> np.ndarray:
    """`point` pulled towards the ship until it is on screen, off the HUD and off every object box."""
    origin = scene.player_screen
    margin = 0.04 * min(cfg.width, cfg.height)
    for frac in np.linspace(1.0, 0.3, 8):
        p = np.clip(origin + (point - origin) * frac, margin, [cfg.width - margin, cfg.height - margin])
        if not _on_hud(p, cfg) and not _on_object(p, scene):
            return p
    return np.clip(point, margin, [cfg.width - margin, cfg.height - margin])


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


def _on_hud(p: np.ndarray, cfg: ExpertConfig, pad: float = 12.0) -> bool:
    for x1, y1, x2, y2 in _HUD_RECTS:
        if (
            x1 * cfg.width - pad <= p[0] <= x2 * cfg.width + pad
            and y1 * cfg.height - pad <= p[1] <= y2 * cfg.height + pad
        ):
            return True
    return False


def _on_object(
    p: np.ndarray, scene: Scene, pad: float = 10.0, classes: tuple[str, ...] = spec.CLASSES
) -> bool:
    for o in (*scene.npcs, *scene.boxes, *scene.portals):
        if o.cls not in classes:
            continue
        x1, y1, x2, y2 = o.box
        if x1 - pad <= p[0] <= x2 + pad and y1 - pad <= p[1] <= y2 + pad:
            return True
    return False


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v * (limit / n) if n > limit else v


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else np.array([1.0, 0.0])


def _away(scene: Scene, threats: list[Obj]) -> np.ndarray:
    """World direction away from `threats`, the closer ones weighing more."""
    return sum((_unit(scene.pos - t.world) / max(t.dist, 50.0) for t in threats), np.zeros(2))


def ability_keys(ctx: Context, threatened: bool) -> list[str]:
    """Repair when hurt, boost when running from someone, if the cooldowns show them ready."""
    scene, cfg = ctx.scene, ctx.cfg
    keys = []
    if scene.hp_frac < cfg.repair_hp and scene.cooldowns.get("repair", 0.0) <= 0.0:
        keys.append("repair")
    if threatened and scene.cooldowns.get("boost", 0.0) <= 0.0:
        keys.append("boost")
    return keys


def engage(ctx: Context, target: Obj, avoid: list[Obj]) -> Plan:
    """Select `target`, switch the attack on, keep it in laser range approaching from away from `avoid`."""
    scene, cfg = ctx.scene, ctx.cfg
    # aim a little ahead of a moving target, but never off its box
    lead = target.center + _clip_norm(target.vel * 0.15 * cfg.zoom, 0.5 * target.radius)
    if scene.selected != target.id:
        inner = target.box + np.array([1.0, 1.0, -1.0, -1.0])
        return Plan(Intent(("select", target.id), lead, max(3.0, 0.8 * target.radius), click=True, box=inner))
    keys = ["attack"] if _attack_needed(ctx, target) else []
    if target.dist > 0.8 * cfg.laser_range:
        standoff = target.world - _unit(target.world - scene.pos) * 0.55 * cfg.laser_range
        if avoid:
            standoff = standoff + _unit(_away(scene, avoid)) * 0.3 * cfg.laser_range
        to = standoff - scene.pos
        return Plan(move_intent(ctx, f"approach{target.id}", to, float(np.linalg.norm(to))), keys)
    return Plan(Intent(("hover", target.id), lead, radius=max(6.0, target.radius)), keys)


def _attack_needed(ctx: Context, target: Obj) -> bool:
    scene, mem = ctx.scene, ctx.mem
    if scene.attack_on is not None:  # the HUD shows the toggle
        needed = not scene.attack_on
    elif scene.attacking:
        needed = False
    else:  # no toggle shown: believe our own last press, re-press after a while in range without any attack
        in_range = target.dist <= 0.9 * ctx.cfg.laser_range
        needed = mem.attack_for != target.id or (in_range and scene.time - mem.attack_t > 2.0)
    return needed


def tactic_fight(ctx: Context, target: Obj | None) -> Plan:
    if target is None:
        return tactic_explore(ctx, None)
    plan = engage(ctx, target, avoid=[])
    plan.keys += ability_keys(ctx, threatened=False)
    return plan


def retreat_direction(ctx: Context, threats: list[Obj]) -> np.ndarray:
    """World direction to run: home to the safe zone (NPCs cannot follow), away from threats close by,
    and never into the map's edge, where a chased ship gets cornered."""
    scene, mem = ctx.scene, ctx.mem
    direction = _away(scene, [t for t in threats if t.dist < ctx.cfg.laser_range]) * 150.0
    if mem.home is not None:
        direction = direction + _unit(mem.home - scene.pos)
    return direction + _wall_push(scene.pos, ctx.cfg)


def _wall_push(pos: np.ndarray, cfg: ExpertConfig, band: float = 350.0) -> np.ndarray:
    """A push away from the map's edges, growing from 0 at `band` world px to 2 at the edge."""
    size = np.array([cfg.world_width, cfg.world_height])
    low = np.clip((band - pos) / band, 0.0, 1.0)
    high = np.clip((band - (size - pos)) / band, 0.0, 1.0)
    return 2.0 * (low - high)


def _safe_zone_push(ctx: Context, band: float = 200.0) -> np.ndarray:
    """A push out of (and away from the rim of) the safe zone, where lasers are off: 0 at `band` world px
    outside the rim, 2 on it."""
    scene, mem = ctx.scene, ctx.mem
    if mem.home is None:
        return np.zeros(2)
    gap = float(np.linalg.norm(scene.pos - mem.home)) - ctx.cfg.safe_zone_radius
    return 2.0 * float(np.clip((band - gap) / band, 0.0, 1.0)) * _unit(scene.pos - mem.home)


def _danger_dist(t: Obj, cfg: ExpertConfig) -> float:
    """How close a threat may come: a boss to `boss_keep_dist`, a raider to 0.9 of our laser range (its own
    lasers are shorter, so backing off there keeps ours on it while it struggles to reach us)."""
    return cfg.boss_keep_dist if t.cls == "npc_boss" else 0.9 * cfg.laser_range


def tactic_cautious(ctx: Context, target: Obj | None) -> Plan:
    """Keep out of reach of bosses and raider packs (backing off towards the safe zone while the lasers keep
    firing), pick off weak targets, and wait for the shield when there is nothing safe to shoot."""
    scene, cfg = ctx.scene, ctx.cfg
    if target is not None and target.cls == "npc_boss":
        plan = kite(ctx, target)
        plan.keys += ability_keys(ctx, threatened=False)
        return plan
    threats = scene.bosses + [o for o in scene.aggressors if o.cls == "npc_raider"]
    keys = ability_keys(ctx, threatened=False)
    close = [t for t in threats if t.dist < _danger_dist(t, cfg)]
    fighting = target is not None and (target.aggro or scene.shield_frac > 0.3)
    if fighting and scene.selected != target.id:
        plan = engage(ctx, target, avoid=threats)
    elif close:
        plan = Plan(move_intent(ctx, "back_off", retreat_direction(ctx, close), ctx.view_reach))
        if fighting and _attack_needed(ctx, target):
            plan.keys.append("attack")
    elif fighting:
        plan = engage(ctx, target, avoid=threats)
    elif threats and scene.shield_frac > 0.3:
        plan = evade(ctx, threats)
    else:  # shield down and nothing safe to shoot: hold still, watch the threat, let the shield refill
        watch = threats[0].center if threats else scene.player_screen + np.array([80.0, 0.0]) * cfg.zoom
        plan = Plan(Intent(("watch",), free_point(watch, scene, cfg), radius=20.0))
    plan.keys += keys
    return plan


def kite(ctx: Context, boss: Obj) -> Plan:
    """Fight a boss from beyond its laser range: select it, shoot, and circle away as fast as it closes in.

    The boss is slower than the ship and its lasers are shorter, so holding `kite_dist` (between the two
    ranges) lets the ship hit without being hit; the radial part of the flight matches the boss's closing
    speed plus a correction towards `kite_dist`, the rest goes round, so the fight stays in one region.
    """
    scene, cfg, mem = ctx.scene, ctx.cfg, ctx.mem
    if scene.selected != boss.id and not boss.ghost:
        return engage(ctx, boss, avoid=[])
    keys = ["attack"] if boss.dist <= cfg.laser_range and _attack_needed(ctx, boss) else []
    away = _unit(scene.pos - boss.world)
    if not boss.aggro and boss.dist > 0.97 * cfg.laser_range:  # not fighting yet: close in to kite distance
        return Plan(move_intent(ctx, "kite_in", -away, boss.dist - cfg.kite_dist + 20.0), keys)
    closing = float(np.dot(boss.vel, away))
    c = float(np.clip((closing + 1.5 * (cfg.kite_dist - boss.dist)) / cfg.ship_speed, -1.0, 1.0))
    wall = _wall_push(scene.pos, cfg)
    tangent = np.array([-away[1], away[0]]) * mem.kite_sign
    if float(np.dot(tangent, wall)) < -0.3:  # circling into the map's edge: turn the other way round
        mem.kite_sign, tangent = -mem.kite_sign, -tangent
    direction = away * c + tangent * math.sqrt(1.0 - c * c) + wall + _safe_zone_push(ctx)
    return Plan(move_intent(ctx, "kite", direction, 0.6 * ctx.view_reach, reclick_s=0.5), keys)


def evade(ctx: Context, threats: list[Obj]) -> Plan:
    """Nothing safe to do here: leave for a waypoint whose route avoids threats (and bosses seen lately)."""
    scene, mem = ctx.scene, ctx.mem
    heading_in = mem.waypoint is not None and any(
        _segment_dist(t.world, scene.pos, mem.waypoint) < ctx.cfg.boss_keep_dist for t in threats
    )
    if mem.waypoint is None or heading_in or _waypoint_done(scene, mem, ctx.cfg):
        mem.waypoint, mem.waypoint_t = (
            pick_waypoint(scene.pos, ctx.cfg, ctx.rng, _dangers(mem, scene)),
            scene.time,
        )
    direction = _unit(mem.waypoint - scene.pos) + 150.0 * _away(scene, threats)
    return Plan(move_intent(ctx, "evade", direction, ctx.view_reach))


def _dangers(mem: Memory, scene: Scene) -> list[np.ndarray]:
    """World positions of the bosses seen in the last 90 s: they wander near where they were seen."""
    return [pos for t, pos in mem.bosses_seen.values() if scene.time - t < 90.0]


def _segment_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from point p to the segment a-b."""
    ab = b - a
    s = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + s * ab)))


def tactic_flee(ctx: Context, target: Obj | None) -> Plan:
    """Head for the safe zone (the portal, seen or remembered), veering away from aggressors; rest there."""
    scene, cfg, mem = ctx.scene, ctx.cfg, ctx.mem
    home = target.world if target is not None else mem.home
    far = home is not None and float(np.linalg.norm(home - scene.pos)) > 2 * ctx.view_reach
    keys = ability_keys(ctx, threatened=bool(scene.aggressors) or far)
    if home is not None and scene.in_safe_zone and float(np.linalg.norm(home - scene.pos)) < 150.0:
        rest = free_point(scene.player_screen + np.array([60.0, 40.0]) * cfg.zoom, scene, cfg)
        return Plan(Intent(("rest",), rest, radius=20.0), keys)
    reach = ctx.view_reach if home is None else float(np.linalg.norm(home - scene.pos))
    return Plan(move_intent(ctx, "flee", retreat_direction(ctx, scene.aggressors), reach), keys)


def tactic_loot(ctx: Context, target: Obj | None) -> Plan:
    """Click each box (the ship flies over it and collects it); click again if the ship did not go."""
    scene, mem = ctx.scene, ctx.mem
    if target is None:
        return tactic_explore(ctx, None)
    since = scene.time - mem.loot_click.get(target.id, -math.inf)
    click = since > ctx.cfg.move_reclick_s * 1.5 or (since > 0.5 and float(np.linalg.norm(scene.vel)) < 5.0)
    plan = Plan(Intent(("loot", target.id), target.center, radius=max(3.0, 0.7 * target.radius), click=click))
    plan.keys += ability_keys(ctx, threatened=False)
    return plan


def tactic_explore(ctx: Context, target: Obj | None) -> Plan:
    """Fly to far waypoints inside the world (position from the minimap), a new one when reached or stale."""
    scene, cfg, mem = ctx.scene, ctx.cfg, ctx.mem
    if mem.waypoint is None or _waypoint_done(scene, mem, cfg):
        mem.waypoint, mem.waypoint_t = (
            pick_waypoint(scene.pos, cfg, ctx.rng, _dangers(mem, scene)),
            scene.time,
        )
    to_wp = mem.waypoint - scene.pos
    return Plan(move_intent(ctx, "explore", to_wp, float(np.linalg.norm(to_wp))), ability_keys(ctx, False))


def _waypoint_done(scene: Scene, mem: Memory, cfg: ExpertConfig) -> bool:
    reached = float(np.linalg.norm(mem.waypoint - scene.pos)) < cfg.waypoint_reached
    return reached or scene.time - mem.waypoint_t > 40.0


def pick_waypoint(
    pos: np.ndarray, cfg: ExpertConfig, rng: np.random.Generator, avoid: list[np.ndarray] = ()
) -> np.ndarray:
    """A random point inside the world, away from its edges, preferably far from `pos` along a route that
    passes no point of `avoid` closely."""
    size = np.array([cfg.world_width, cfg.world_height])
    margin = 0.1 * size

    def score(p: np.ndarray) -> float:  # long legs cover the map; a route past a boss costs a detour
        blocked = any(_segment_dist(a, pos, p) < 2 * cfg.boss_keep_dist for a in avoid)
        return float(np.linalg.norm(p - pos)) - 5000.0 * blocked

    return max((margin + rng.random(2) * (size - 2 * margin) for _ in range(6)), key=score)


TACTICS: dict[str, Callable[[Context, Obj | None], Plan]] = {
    FIGHT: tactic_fight,
    LOOT: tactic_loot,
    FLEE: tactic_flee,
    EXPLORE: tactic_explore,
    CAUTIOUS: tactic_cautious,
}


# ---------------------------------------------------------------------------------------- the expert

# s that a selected NPC which left the screen is still believed where it was heading (object permanence,
# as a tracker such as ByteTrack keeps a lost track for about a second)
GHOST_S = 1.5


def _ghost(obj: Obj, age: float, scene: Scene) -> Obj:
    """`obj` as last seen `age` s ago, moved on at its velocity, marked as a ghost."""
    world = obj.world + obj.vel * age
    center = scene.to_screen(world)
    half = 0.5 * (obj.box[2:] - obj.box[:2])
    box = np.concatenate([center - half, center + half])
    dist = float(np.linalg.norm(world - scene.pos))
    return Obj(obj.id, obj.cls, box, center, world, obj.hp_frac, obj.aggro, dist, obj.vel.copy(), ghost=True)


class Expert:
    """The scripted expert: `act(info) -> (action, labels)` every frame, after `reset(seed)` per episode.

    Example:
        env = ArenaEnv(ArenaConfig(width=640, height=360, zoom=0.5))
        expert = Expert(ExpertConfig.matching(env.config, skill=0.7))  # same frame size, zoom and map
        frame, info = env.reset(seed=3); expert.reset(seed=3)
        action, labels = expert.act(info); frame, reward, terminated, truncated, info = env.step(action)
    """

    def __init__(self, cfg: ExpertConfig | None = None):
        self.cfg = cfg or ExpertConfig()
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Forget everything; `seed` (default cfg.seed) fixes every random choice of the episode."""
        self.rng = np.random.default_rng(self.cfg.seed if seed is None else seed)
        self.cursor = Cursor(self.cfg, self.rng)
        self.keyboard = Keyboard(self.cfg, self.rng)
        self.modes = ModeSelector(self.cfg)
        self.targets = TargetSelector(self.cfg, self.rng)
        self.mem = Memory()
        self.tracker = Tracker(self.cfg)
        self.last_seen: dict[int, tuple[float, Obj]] = {}
        self.next_click_t = 0.0

    def act(self, info: dict) -> tuple[dict, dict]:
        """One frame: the action (spec.py layout) and the labels {"mode", "target_id"}."""
        scene = perceive(info, self.cfg, self.tracker)
        self._remember(scene)
        mode = self.modes.update(scene)
        target = self.targets.update(mode, scene)
        plan = TACTICS[mode](Context(self.cfg, self.rng, self.mem, scene), target)
        self.keyboard.retain(plan.keys)
        for key in plan.keys:
            self.keyboard.request(key, scene.time)
        pos = self.cursor.update(scene.time, plan.intent)
        click = self._click(scene, plan.intent)
        action = {
            "mouse": np.clip(pos / [self.cfg.width, self.cfg.height], 0.0, 1.0).astype(np.float32),
            "click": int(click),
            "key": self.keyboard.pop(scene.time),
        }
        if action["key"] == _KEY_INDEX["attack"]:
            self.mem.attack_for, self.mem.attack_t = scene.selected, scene.time
        return action, {"mode": mode, "target_id": None if target is None else target.id}

    def _remember(self, scene: Scene) -> None:
        """Update the memory; put the selected NPC back in the scene if it left the screen a moment ago."""
        for npc in scene.npcs:
            self.last_seen[npc.id] = (scene.time, npc)
        if scene.selected is not None and scene.find(scene.selected) is None:
            seen = self.last_seen.get(scene.selected)
            if seen is not None and scene.time - seen[0] < GHOST_S:
                scene.npcs.append(_ghost(seen[1], scene.time - seen[0], scene))
        if scene.portals:
            self.mem.home = scene.portals[0].world
        for boss in scene.bosses:
            self.mem.bosses_seen[boss.id] = (scene.time, boss.world)
        if len(self.tracker.last) > 512:  # ids are never reused: forget objects gone for a while
            self.tracker.prune(scene.time)
            known = self.tracker.last
            self.last_seen = {k: v for k, v in self.last_seen.items() if k in known}
            self.targets.bias = {k: v for k, v in self.targets.bias.items() if k in known}
            self.mem.loot_click = {k: v for k, v in self.mem.loot_click.items() if k in known}

    def _click(self, scene: Scene, intent: Intent | None) -> bool:
        """Click only when asked, after the cursor has arrived, and not faster than a person can."""
        if intent is None or not intent.click or scene.time < self.next_click_t:
            return False
        if not self.cursor.arrived(scene.time, intent):
            return False
        kind = intent.key[0]
        if kind in ("move", "loot") and _on_object(self.cursor.pos, scene, pad=2.0, classes=spec.NPC_CLASSES):
            return False  # an NPC slid under the cursor: this click would select it instead of flying
        gap = self.cfg.click_gap_s * self.cfg.clumsiness * float(self.rng.uniform(1.0, 1.5))
        self.next_click_t = scene.time + gap
        if kind in ("move", "loot"):
            self.mem.move_click_t, self.mem.move_dest = scene.time, scene.to_world(self.cursor.pos)
        if kind == "loot":
            self.mem.loot_click[intent.key[1]] = scene.time
        return True
