"""How the hand moves: `InputConfig` (speed, aim error, path bend, hold times, key repeats) and the plan of
one movement, a minimum-jerk path (arena/motion.py) timed by Fitts' law that starts from the cursor's current
position and velocity, so a new target bends a running path instead of restarting it from rest."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from arena.motion import MinJerkSegment  # quintic from (p0, v0) to p1 at rest, with a bulge
from validation import check_float, check_int, fail

BULGE_MIN_PX = 40  # px, shorter paths are straight


@dataclass
class InputConfig:
    """How the hand moves, clicks and taps keys."""

    rate_hz: float = 125.0  # input thread ticks per second (cursor updates)
    arrive_px: float = 4.0  # px, a click is sent only with the finished path's cursor this close to its point
    speed_bits_s: float = 14.0  # Fitts' throughput: movement time = min_move_s + log2(1 + D / W) / speed
    target_px: float = 16.0  # px, W in Fitts' law: the width of what is aimed at
    min_move_s: float = 0.04  # s, the shortest movement
    replan_s: float = 0.03  # s, minimum time between two re-plans of a movement towards a moving target
    retarget_px: float = 3.0  # px, a target that moved less than this does not re-plan a running movement
    jitter_px: float = 1.5  # px, std of the aim error drawn once per movement (capped at 0.6 * arrive_px)
    curve_frac: float = 0.05  # std of a long path's sideways bulge, as a fraction of its length
    click_hold_s: tuple[float, float] = (0.05, 0.11)  # s, range of a click's button hold
    click_gap_s: float = 0.12  # s, minimum time from one click's release to the next press
    click_timeout_s: float = 1.0  # s, a click whose point is not reached in this time is dropped
    key_hold_s: tuple[float, float] = (0.05, 0.11)  # s, range of a key tap's hold
    key_gap_s: float = 0.08  # s, minimum time from one tap's release to the next press
    # A policy asks for a tap on several frames in a row, and a second tap would undo a toggle (attack);
    # the Arena expert never repeats a key within 1 s either (arena/expert/hand.py Keyboard.request).
    key_repeat_s: float = 1.0  # s, a request for a key tapped (or queued) this recently is dropped
    key_queue: int = 4  # key taps that may wait; more are dropped
    user_move_px: float = 40.0  # px, pointer this far from where the bot left it = a person's hand (0 = off)
    seed: int | None = None  # RNG seed of the jitter, bulge and hold times (None = random)

    def __post_init__(self) -> None:
        positive = ("rate_hz", "arrive_px", "speed_bits_s", "target_px", "min_move_s", "click_timeout_s")
        for name in positive:
            check_float(self, name, 0.0, low_open=True)
        non_negative = (
            "replan_s", "retarget_px", "jitter_px", "curve_frac", "click_gap_s", "key_gap_s",
            "key_repeat_s", "user_move_px",
        )  # fmt: skip
        for name in non_negative:
            check_float(self, name, 0.0)
        for name in ("click_hold_s", "key_hold_s"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1.0:
                raise fail(self, name, "(low, high) with 0 < low <= high <= 1 s", getattr(self, name))
        check_int(self, "key_queue", 1)


def aim_error(cfg: InputConfig, rng: np.random.Generator) -> np.ndarray:
    """A person's aim error for one movement (px, (2,)): Gaussian, capped at 0.6 * arrive_px so that the
    path still ends close enough to click."""
    err = rng.normal(0.0, cfg.jitter_px, 2)
    limit = 0.6 * cfg.arrive_px
    norm = float(np.linalg.norm(err))
    return err * (limit / norm) if norm > limit else err


def plan_movement(
    cfg: InputConfig, rng: np.random.Generator, now: float, pos: np.ndarray, vel: np.ndarray, end: np.ndarray
) -> MinJerkSegment:
    """The path from `pos` (moving at `vel`, px/s) to `end` (px), starting at `now`: its duration by Fitts'
    law, a random sideways bulge on long paths."""
    dist = float(np.linalg.norm(end - pos))
    duration = cfg.min_move_s + math.log2(1.0 + dist / cfg.target_px) / cfg.speed_bits_s
    bulge = float(rng.normal(0.0, cfg.curve_frac)) if dist > BULGE_MIN_PX else 0.0
    return MinJerkSegment(now, duration, pos, vel, end, bulge)
