"""Perception for one stream of frames: detector, tracker, HUD and cue readers, state encoder, summarizer.

    frame ──Detector──▶ Detections ──Tracker──▶ Tracks ─┬──────────────┐
      ├────CueReader (frame + Tracks) ──▶ cues ─────────┘              │
      └────HudReader──▶ HudReading ────────────────────────────────────┼──StateEncoder──▶ Observation
                        cursor, click (steps / live) ──────────────────┘      └──Summarizer──▶ summary

The live loop and `pilot perceive` (recordings) run this same chain, so training sees what the live bot sees.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot.perception.cues import CueReader
from bot.perception.detector import Detections, Detector, DetectorConfig
from bot.perception.hud import HudReader, HudReading
from bot.perception.state import Observation, StateEncoder
from bot.perception.summary import Summarizer
from bot.perception.tracker import Tracker, Tracks
from bot.profile import GameProfile

log = logging.getLogger(__name__)

STAGES = ("detect", "track", "hud", "encode")


# ------------------------------------------------------------------------------------------------ pipeline


@dataclass
class PerceptionStep:
    """Everything perception produced for one frame."""

    obs: Observation
    tracks: Tracks
    hud: HudReading
    detections: Detections
    summary: np.ndarray | None  # the previous second's summary, on the first frame of a new second
    ms: dict[str, float] = field(default_factory=dict)  # milliseconds per stage (STAGES)
    cues: np.ndarray | None = (
        None  # (len(tracks), 3) enemy screen cues per track row (bot/perception/cues.py)
    )


def load_detector(weights: Path, profile: GameProfile, runtime: str = "auto", threads: int = 0) -> Detector:
    """The detector with the profile's thresholds: what recording-time perception and live play both use."""
    spec = profile.detector
    cfg = DetectorConfig(
        weights, runtime, conf=spec.conf, iou=spec.iou, max_det=spec.max_det, threads=threads
    )
    return Detector(cfg, profile.class_names)


class Perception:
    """Detector + Tracker + HudReader + StateEncoder + Summarizer for one stream of frames.

    Live: `Perception(profile, load_detector(path, profile), source.size, source.fps)`, then `step()` on every
    frame with the cursor read at capture time; `reset()` between episodes.
    """

    def __init__(
        self, profile: GameProfile, detector: Detector, frame_size: tuple[int, int], fps: float
    ) -> None:
        self.profile, self.detector = profile, detector
        self.tracker = Tracker.from_profile(profile, fps)
        self.hud_reader = HudReader(profile.hud)
        self.cue_reader = CueReader(profile)
        self.encoder = StateEncoder(profile, frame_size)
        self.summarizer = Summarizer(profile.class_threats)

    def reset(self) -> None:
        self.tracker.reset()
        self.encoder.reset()
        self.summarizer.reset()

    def step(
        self,
        frame: np.ndarray,
        cursor: tuple[float, float],
        click: bool,
        t: float,
        detections: Detections | None = None,
    ) -> PerceptionStep:
        """Perceive one RGB frame; pass `detections` when they were computed in a batch beforehand."""
        ms: dict[str, float] = {}
        start = time.perf_counter()
        if detections is None:
            detections = self.detector.detect(frame)
            ms["detect"] = (time.perf_counter() - start) * 1000.0
        mark = time.perf_counter()
        tracks = self.tracker.update(detections, t)
        ms["track"] = (time.perf_counter() - mark) * 1000.0
        mark = time.perf_counter()
        hud = self.hud_reader.read(frame)
        cues = self.cue_reader.read(frame, tracks)
        ms["hud"] = (time.perf_counter() - mark) * 1000.0  # the screen reads: HUD and enemy cues
        mark = time.perf_counter()
        obs = self.encoder.encode(tracks, hud, cursor, click, t, cues)
        summary = self.summarizer.add(obs)
        ms["encode"] = (time.perf_counter() - mark) * 1000.0
        return PerceptionStep(obs, tracks, hud, detections, summary, ms, cues)
