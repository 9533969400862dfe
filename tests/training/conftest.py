"""Tiny perceived Arena episodes for the dataset, task and entry-point tests.

Perception runs its real chain (tracker, HUD reader, state encoder, summariser) through `perceive_episode`,
with an oracle detector that returns the Arena's ground-truth boxes: no detector weights to build, and the
tracks then follow the objects, which is what the dataset code has to handle (track ids != Arena ids).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bot.detector import Detections
from bot.episode import find_episodes, open_episode
from bot.perceive import PerceiveConfig, perceive_episode
from bot.profile import load_profile


class OracleDetector:
    """Returns each frame's gt_objects as detections, in frame order (perceive_episode calls it in order)."""

    id = "oracle:test"
    weights = Path("oracle")
    imgsz = 0
    runtime = SimpleNamespace(name="oracle")
    cfg = SimpleNamespace(conf=0.25, iou=0.7)

    def __init__(self, episode_dir: Path, class_names: list[str]) -> None:
        gt = open_episode(episode_dir).steps().column("gt_objects").to_pylist()
        index = {name: i for i, name in enumerate(class_names)}
        self.frames = [
            Detections(
                np.array([[o["x1"], o["y1"], o["x2"], o["y2"]] for o in objs], np.float32).reshape(-1, 4),
                np.full(len(objs), 0.9, np.float32),
                np.array([index[o["cls"]] for o in objs], np.int64),
            )
            for objs in gt
        ]
        self.next = 0

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        out = self.frames[self.next : self.next + len(frames)]
        self.next += len(frames)
        return out


def make_perceived(out: Path, episodes: int, seconds: float, seed: int) -> Path:
    from bot.demos import DemosConfig, run

    run(DemosConfig(out=out, episodes=episodes, seconds=seconds, seed=seed, width=320, height=180, zoom=0.25,
                    workers=1))  # fmt: skip
    profile = load_profile("arena")
    for path in find_episodes(out):
        detector = OracleDetector(path, profile.class_names)
        perceive_episode(path, detector, profile, PerceiveConfig(episodes=path, detector=Path("oracle")))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def perceived(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 perceived expert episodes of 6 s (seeds 0..2) at 320x180."""
    return make_perceived(tmp_path_factory.mktemp("perceived"), episodes=3, seconds=6, seed=0)
