"""One Naev episode: capture the screen (mss), let a player decide (the scripted pilot, random keys, or a
policy), send its keys through the live input driver, and optionally record it in the standard episode format.

    mss frame ──┬─▶ EpisodeWriter (video, steps: the input actually sent, ground truth, score; labels)
    probe ──────┴─▶ player.decide ──held keys + taps──▶ InputDriver ──XTest──▶ Naev

The probe line matched to a frame is the newest written before the frame was grabbed (probe.py's clock
offset); `align_ms` records how old it was, the alignment error in time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.control.backend import InputBackend
from bot.control.driver import InputDriver
from bot.games.naev.overlay import NAEV_DATA
from bot.games.naev.probe import ProbeFrame, screen_boxes
from bot.games.naev.session import NaevSession
from bot.games.player import PilotDecision, Player
from bot.perception.capture import MssConfig, MssSource
from bot.profile import GameProfile, score_points
from bot.recordings.episode import EpisodeWriter

log = logging.getLogger(__name__)

STEP_FIELDS = ("held", "gt_objects", "hp", "shield", "deaths", "kills", "dealt", "taken")
STEP_FIELDS += ("player_x", "player_y", "selected_id")
# DAgger: what the labelling pilot would have done on the frame the bot played (datasets train on these)
EXPERT_FIELDS = ("expert_mouse_x", "expert_mouse_y", "expert_click", "expert_key", "expert_held")


@dataclass
class EpisodeResult:
    seconds: float
    frames: int
    kills: int
    deaths: int
    dealt: float
    taken: float
    weights: dict[str, float] = field(default_factory=dict)  # the profile's score: points per event
    modes: dict[str, int] = field(default_factory=dict)
    align_ms: list[float] = field(default_factory=list)  # per frame: age of the matched probe line
    dropped: int = 0  # capture slots missed (the loop ran late)

    @property
    def score(self) -> float:
        """By the profile's weights (naev.yaml `score`)."""
        return score_points(self.weights, kill=self.kills, damage=self.dealt, death=self.deaths)

    @property
    def score_per_min(self) -> float:
        return self.score * 60.0 / max(self.seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        align = np.asarray(self.align_ms or [np.nan])
        return {
            "seconds": self.seconds, "frames": self.frames, "kills": self.kills, "deaths": self.deaths,
            "dealt": round(self.dealt, 1), "taken": round(self.taken, 1), "score": round(self.score, 1),
            "score_per_min": round(self.score_per_min, 1), "modes": self.modes, "dropped": self.dropped,
            "align_ms_p50": float(np.nanpercentile(align, 50)),
            "align_ms_p95": float(np.nanpercentile(align, 95)),
        }  # fmt: skip


def gt_objects(frame: ProbeFrame, size: tuple[int, int]) -> list[dict[str, Any]]:
    """The probe's pilots as the episode's gt_objects (screen boxes, hp = armour %)."""
    objects = []
    for p in screen_boxes(frame, size, NAEV_DATA):
        cls = "player" if p["player"] else ("hostile" if p["hostile"] else "neutral")
        objects.append(
            dict(id=int(p["id"]), cls=cls, x1=p["x1"], y1=p["y1"], x2=p["x2"], y2=p["y2"], hp=p["armour"],
                 hp_max=100.0, aggro=bool(p["hostile"]), selected=int(p["id"]) == frame.target)
        )  # fmt: skip
    return objects


class _ProbeAligner:
    """Keeps recent probe lines; `at(t)` is the newest one stamped before monotonic time t."""

    def __init__(self) -> None:
        self.recent: deque[ProbeFrame] = deque(maxlen=256)

    def add(self, frames: list[ProbeFrame]) -> None:
        self.recent.extend(frames)

    def at(self, t: float, offset: float) -> ProbeFrame:
        stamp_ms = (t - offset) * 1000.0
        best = self.recent[0]
        for frame in self.recent:
            if frame.t_ms <= stamp_ms:
                best = frame
        return best


def _step_row(
    profile: GameProfile,
    frame: ProbeFrame,
    size: tuple[int, int],
    t: float,
    decision: PilotDecision,
    cursor: tuple,
) -> dict[str, Any]:
    me = frame.player
    tap = profile.key_names.index(_key_name(profile, decision.taps[0])) if decision.taps else 0
    return dict(
        t=t, mouse_x=cursor[0], mouse_y=cursor[1], click=decision.click, key=tap,
        held=profile.held_mask(decision.held), gt_objects=gt_objects(frame, size),
        hp=me["armour"] / 100.0, shield=me["shield"] / 100.0, deaths=frame.deaths, kills=frame.kills,
        dealt=frame.dealt, taken=frame.taken, player_x=me["x"], player_y=me["y"], selected_id=frame.target,
    )  # fmt: skip


def expert_row(profile: GameProfile, expert: PilotDecision, cursor: tuple) -> dict[str, Any]:
    """The labelling pilot's decision as the steps' expert_* columns (keys only: the cursor stays put)."""
    tap = profile.key_names.index(_key_name(profile, expert.taps[0])) if expert.taps else 0
    return dict(
        expert_mouse_x=cursor[0], expert_mouse_y=cursor[1], expert_click=expert.click, expert_key=tap,
        expert_held=profile.held_mask(expert.held),
    )  # fmt: skip


def _key_name(profile: GameProfile, physical: str) -> str:
    for spec in profile.keys:
        if spec.key == physical:
            return spec.name
    raise KeyError(f"{physical!r} is not a key of profile {profile.name!r}")


def run_episode(
    session: NaevSession,
    player: Player,
    profile: GameProfile,
    seconds: float,
    backend: InputBackend,
    writer: EpisodeWriter | None = None,
    stop_when: Callable[[EpisodeResult], bool] | None = None,
    labeller: Player | None = None,
) -> EpisodeResult:
    """Play `seconds` of the running scenario (or until `stop_when(result)`); scores count from its first
    frame. With a `labeller` (DAgger), every recorded frame also holds what it would have done there (the
    expert_* columns and the labels), while `player`'s decision is the one sent."""
    assert session.probe is not None, "run_episode: start the session first"
    region = session.region
    size = (region[2], region[3])
    driver = InputDriver(backend, region).start(paused=False)
    aligner, clicked = _ProbeAligner(), _ClickCounter()
    aligner.add(session.probe.poll() or [session.probe.latest()])
    first = aligner.recent[-1]
    player.reset()
    if labeller is not None:
        labeller.reset()
    result = EpisodeResult(0.0, 0, 0, 0, 0.0, 0.0, weights=dict(profile.score))
    try:
        with MssSource(MssConfig(region=region, fps=profile.fps)) as source:
            while True:
                shot = source.read()
                if shot.t >= seconds:
                    break
                session.check_alive()
                fresh = session.probe.poll()
                aligner.add(fresh)
                session.probe.check_fresh()  # ProbeError when the game froze (just polled: no second read)
                for line in fresh:
                    player.observe(line)
                    if labeller is not None:
                        labeller.observe(line)
                grabbed = (source.started or 0.0) + shot.t
                frame = aligner.at(grabbed, session.probe.offset)
                cursor = _fraction(backend.position(), region)
                player.see(shot.image, shot.t, cursor, clicked(driver))
                decision = player.decide(time.monotonic())
                _send(driver, decision, grabbed)
                result.modes[decision.mode] = result.modes.get(decision.mode, 0) + 1
                result.align_ms.append((grabbed - session.probe.offset) * 1000.0 - frame.t_ms)
                result.frames, result.seconds, result.dropped = result.frames + 1, shot.t, shot.dropped
                if writer is not None:
                    row = _step_row(profile, frame, size, shot.t, decision, cursor)
                    said = decision  # whose mode and target label the frame: the player's, or the labeller's
                    if labeller is not None:
                        said = labeller.decide(time.monotonic())
                        row |= expert_row(profile, said, cursor)
                    index = writer.append(shot.image, row)
                    target = said.target_id if said.target_id >= 0 else None
                    writer.add_label("expert", index, said.mode, target_id=target)
                _update_score(result, frame, first)
                if stop_when is not None and stop_when(result):
                    break
    finally:
        driver.stop()
    result.seconds = max(result.seconds, 1.0 / profile.fps)
    return result


def _fraction(point: tuple[int, int], region: tuple[int, int, int, int]) -> tuple[float, float]:
    left, top, width, height = region
    return min(1.0, max(0.0, (point[0] - left) / width)), min(1.0, max(0.0, (point[1] - top) / height))


class _ClickCounter:
    """True once per click the driver sent since the last call (perception sees what the hand did)."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, driver: InputDriver) -> bool:
        clicks = driver.stats.clicks
        clicked, self.seen = clicks > self.seen, clicks
        return clicked


def _send(driver: InputDriver, decision: PilotDecision, grabbed: float) -> None:
    """The decision to the input thread: the aim and click (players that use the mouse), held keys, a tap."""
    if decision.aim is not None:
        left, top, width, height = driver.region
        x, y = decision.aim
        driver.submit(left + x * width, top + y * height, decision.click, None, frame_t=grabbed)
    driver.hold(decision.held, decision.taps[0] if decision.taps else None)


def _update_score(result: EpisodeResult, frame: ProbeFrame, first: ProbeFrame) -> None:
    result.kills, result.deaths = frame.kills - first.kills, frame.deaths - first.deaths
    result.dealt, result.taken = frame.dealt - first.dealt, frame.taken - first.taken
