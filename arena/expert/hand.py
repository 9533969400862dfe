"""The expert's hand: a Cursor that reacts late and moves on Fitts-timed minimum-jerk paths that finish before
it clicks, and a Keyboard that taps keys with human delays and spacing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from arena import spec
from arena.expert.config import ExpertConfig
from arena.motion import MinJerkSegment

KEY_INDEX = {name: i for i, name in enumerate(spec.KEYS)}  # key name -> the action's key index


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


class Cursor:
    """The expert's hand on the mouse: reacts late to new intentions, aims on Fitts-timed paths that end."""

    RETARGET_PERIOD_S = 0.1  # visual feedback loop of a person correcting an aimed movement

    def __init__(self, cfg: ExpertConfig, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.pos = np.array([cfg.width / 2.0, cfg.height / 2.0])
        self.seg: MinJerkSegment | None = None
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
        self.seg = MinJerkSegment(now, duration, pos, vel, end, bulge)
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
                return KEY_INDEX[key]
        return 0
