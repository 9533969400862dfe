"""The scripted Naev pilot, our demonstrator: it decides from the probe and acts only through keys, as a
person.

Each decision reads the probe frame of `reaction_s` ago (plus jitter), so it reacts like a person, not like
the game's memory. It targets the nearest hostile (R, Naev's "nearest hostile" key: weapons then swivel up
to 22 degrees towards it), turns its nose to where the target will be (A / D), thrusts (W) while far, fires
(Space) when the nose is on it, and breaks off to recover its shield when it runs low (FLEE: nose away
from the nearest hostile, full thrust) until the shield is back.

    held keys  thrust: w   left: a   right: d   fire: space        taps  target: r
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from bot.games.naev.probe import ProbeFrame
from bot.games.player import PilotDecision
from validation import check_float, check_int

THRUST, LEFT, RIGHT, FIRE, FACE, TARGET = "w", "a", "d", "space", "q", "r"
HOLD_KEYS = (THRUST, LEFT, RIGHT, FIRE, FACE)
LASER_SPEED = 550.0  # world units / s, Laser Cannon MK1 (outfits/weapons/laser_cannon_mk1.xml)


@dataclass
class NaevPilotConfig:
    reaction_s: float = 0.2  # s, the age of the probe frame a decision reads
    jitter_s: float = 0.05  # s, uniform extra reaction per decision
    fire_arc_deg: float = 15.0  # fire while the lead point is within this of the nose
    turn_deadband_deg: float = 5.0  # no turning within this
    engage_range: float = 350.0  # world units: thrust towards the target beyond this
    flee_shield: float = 15.0  # % shield under which it breaks off
    resume_shield: float = 60.0  # % shield at which it engages again
    retarget_s: float = 1.0  # s between taps of the target key while the target is not the nearest
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("reaction_s", "jitter_s", "engage_range", "retarget_s"):
            check_float(self, name, 0.0)
        check_float(self, "fire_arc_deg", 0.0, 180.0)
        check_float(self, "turn_deadband_deg", 0.0, 180.0)
        check_float(self, "flee_shield", 0.0, 100.0)
        check_float(self, "resume_shield", self.flee_shield, 100.0)
        check_int(self, "seed", 0)


def angle_diff(a: float, b: float) -> float:
    """a - b in degrees, wrapped to (-180, 180]."""
    return (a - b + 180.0) % 360.0 - 180.0


def bearing(me: dict, x: float, y: float) -> float:
    """Degrees from the player to (x, y), counter-clockwise from +x (Naev's `dir`; world y points up)."""
    return math.degrees(math.atan2(y - me["y"], x - me["x"])) % 360.0


def lead_point(me: dict, target: dict) -> tuple[float, float]:
    """Where the target will be when a laser fired now reaches it (one step of the intercept estimate)."""
    dist = math.hypot(target["x"] - me["x"], target["y"] - me["y"])
    t = dist / LASER_SPEED
    return target["x"] + (target["vx"] - me["vx"]) * t, target["y"] + (target["vy"] - me["vy"]) * t


def _turn_towards(me: dict, heading: float, deadband: float) -> set[str]:
    error = angle_diff(heading, me["dir"])
    if abs(error) <= deadband:
        return set()
    return {LEFT} if error > 0 else {RIGHT}  # LEFT turns counter-clockwise: dir grows


@dataclass
class NaevPilot:
    """Stateful between decisions (mode hysteresis, the delayed view, the last target tap)."""

    cfg: NaevPilotConfig = field(default_factory=NaevPilotConfig)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.cfg.seed)
        self.reset()

    def reset(self) -> None:
        self.fleeing = False
        self.history: deque[ProbeFrame] = deque(maxlen=512)
        self.last_tap = -math.inf

    def see(self, image: np.ndarray, t: float, cursor: tuple[float, float], click: bool) -> None:
        """The scripted pilot decides from the probe, not from pixels."""

    def observe(self, frame: ProbeFrame) -> None:
        if not self.history or frame.seq > self.history[-1].seq:
            self.history.append(frame)

    def _delayed(self, now: float) -> ProbeFrame | None:
        """The newest frame that arrived at least reaction (+ jitter) seconds before `now`."""
        delay = self.cfg.reaction_s + self.rng.uniform(0.0, self.cfg.jitter_s)
        seen = None
        for frame in self.history:
            if frame.arrived <= now - delay:
                seen = frame
        return seen or (self.history[0] if self.history else None)

    def decide(self, now: float) -> PilotDecision:
        """What to hold and tap at time.monotonic() `now`, from what was seen reaction_s ago."""
        frame = self._delayed(now)
        if frame is None:
            return PilotDecision(frozenset(), (), "EXPLORE", -1)
        me = frame.player
        hostiles = [p for p in frame.others() if p["hostile"] and not p["disabled"]]
        if not hostiles:
            return PilotDecision(frozenset(), (), "EXPLORE", -1)
        nearest = min(hostiles, key=lambda p: math.hypot(p["x"] - me["x"], p["y"] - me["y"]))
        self._update_mode(me["shield"])
        if self.fleeing:
            away = (bearing(me, nearest["x"], nearest["y"]) + 180.0) % 360.0
            held = _turn_towards(me, away, self.cfg.turn_deadband_deg) | {THRUST}
            return PilotDecision(frozenset(held), (), "FLEE", nearest["id"])
        return self._engage(frame, me, nearest, now)

    def _update_mode(self, shield: float) -> None:
        if self.fleeing and shield >= self.cfg.resume_shield:
            self.fleeing = False
        elif not self.fleeing and shield < self.cfg.flee_shield:
            self.fleeing = True

    def _engage(self, frame: ProbeFrame, me: dict, target: dict, now: float) -> PilotDecision:
        lx, ly = lead_point(me, target)
        heading = bearing(me, lx, ly)
        if frame.target == target["id"]:
            held = {FACE}  # Naev turns the nose onto the selected target while the key is held
        else:
            held = _turn_towards(me, heading, self.cfg.turn_deadband_deg)
        dist = math.hypot(target["x"] - me["x"], target["y"] - me["y"])
        if dist > self.cfg.engage_range and abs(angle_diff(heading, me["dir"])) < 60.0:
            held.add(THRUST)
        if abs(angle_diff(heading, me["dir"])) <= self.cfg.fire_arc_deg and dist < LASER_SPEED * 1.1:
            held.add(FIRE)
        taps: tuple[str, ...] = ()
        if frame.target != target["id"] and now - self.last_tap >= self.cfg.retarget_s:
            taps, self.last_tap = (TARGET,), now
        return PilotDecision(frozenset(held), taps, "FIGHT", target["id"])


@dataclass
class RandomPilot:
    """The random-input baseline: a random set of the held keys, redrawn every `hold_s`, and random taps."""

    seed: int = 0
    hold_s: float = 0.4

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.reset()

    def reset(self) -> None:
        self.until, self.held = -math.inf, frozenset()

    def observe(self, frame: ProbeFrame) -> None:
        pass

    def see(self, image: np.ndarray, t: float, cursor: tuple[float, float], click: bool) -> None:
        pass

    def decide(self, now: float) -> PilotDecision:
        taps: tuple[str, ...] = ()
        if now >= self.until:
            self.held = frozenset(k for k in HOLD_KEYS if self.rng.random() < 0.5)
            self.until = now + self.hold_s
            taps = (TARGET,) if self.rng.random() < 0.2 else ()
        return PilotDecision(self.held, taps, "EXPLORE", -1)
