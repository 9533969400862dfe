"""`pilot perceive`: run perception over recorded episodes and store the Observations beside each one.

Frames are decoded on a background thread and detected in batches of `--batch` (a dynamic-batch ONNX model
runs them as one call); tracking, HUD reading and encoding then go frame by frame.

Examples:
    pilot perceive --episodes data/recordings/arena --detector data/detectors/arena
    pilot perceive --episodes data/recordings/arena/expert-000003 --detector model.onnx --every 2
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import tyro

from bot.errors import PerceptionError
from bot.perception.detector import Detector
from bot.perception.pipeline import Perception, load_detector
from bot.perception.state import OBS_SPEC
from bot.profile import GameProfile, load_profile
from bot.recordings.episode import Episode, find_episodes, open_episode
from bot.recordings.perceived import FOLDER, PerceptionRecorder, perception_info

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ episodes


@dataclass
class PerceiveConfig:
    """Run perception (detector, tracker, HUD, encoder) over recorded episodes; store the Observations."""

    episodes: Path  # an episode folder, or a folder searched for episodes
    detector: Path  # a detector folder (`pilot train detector --out`) or a .onnx / .pt file
    profile: str = ""  # game profile name or YAML; "" = each episode's meta.game
    runtime: str = "auto"  # detector runtime: auto (ONNX if present), onnx, torch
    batch: int = 8  # frames per detector call
    every: int = 1  # perceive every Nth frame (2 on a 30 fps recording = a 15 Hz live loop)
    overwrite: bool = False  # redo episodes whose perception is already current
    threads: int = 0  # detector threads (0 = the runtime's default)

    def __post_init__(self) -> None:
        for name in ("batch", "every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected >= 1, got {getattr(self, name)}")


def _decode(episode: Episode, every: int, depth: int) -> Iterator[tuple[int, np.ndarray]]:
    """Frames decoded on a background thread (PyAV releases the GIL), so decoding overlaps detection."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failure: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in episode.frames(every=every):
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            failure.append(exc)
        finally:
            buffer.put(done)

    thread = threading.Thread(target=worker, name=f"decode-{episode.name}", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
    if failure:
        raise failure[0]


def _batches(frames: Iterator[tuple[int, np.ndarray]], size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def is_current(episode_dir: Path, detector: Detector, every: int) -> bool:
    """True when the stored perception was made with this obs_spec, detector and frame step."""
    try:
        meta = perception_info(episode_dir)
    except PerceptionError:
        return False
    return meta.get("detector", {}).get("id") == detector.id and meta.get("every") == every


def cursor_before(steps: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, click) of the cursor when each frame was captured, from the steps' actions.

    Row i of an episode holds the action chosen on frame i (arena/rollout.py), whose cursor is not yet in
    that frame; the cursor the live loop reads at capture time is the previous action's. So row i gets row
    i - 1's mouse and click, and row 0 the region centre (where the Arena and the live loop start it).
    """
    x = np.concatenate([[0.5], steps.column("mouse_x").to_numpy()[:-1]])
    y = np.concatenate([[0.5], steps.column("mouse_y").to_numpy()[:-1]])
    click = np.concatenate([[False], steps.column("click").to_numpy(zero_copy_only=False)[:-1]])
    return x, y, click.astype(bool)


def perception_meta(
    episode: str,
    profile: GameProfile,
    detector: Detector,
    frame_size: tuple[int, int],
    fps: float,
    every: int,
) -> dict[str, Any]:
    """perception.json: what made these Observations (is_current compares the detector id and `every`)."""
    return {
        "obs_spec": OBS_SPEC.to_dict(),
        "episode": episode,
        "game": profile.name,
        "profile": str(profile.path),
        "tracker": profile.tracker.__dict__,
        "detector": {"id": detector.id, "weights": str(detector.weights), "imgsz": detector.imgsz,
                     "runtime": detector.runtime.name, "conf": detector.cfg.conf, "iou": detector.cfg.iou},
        "frame_size": list(frame_size),
        "fps": fps,
        "every": every,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip


def perceive_episode(
    episode_dir: Path, detector: Detector, profile: GameProfile, cfg: PerceiveConfig
) -> dict:
    """Perceive one episode and store the result under <episode>/perception/; returns its meta."""
    episode = open_episode(episode_dir)
    steps = episode.steps()
    mouse_x, mouse_y, clicks = cursor_before(steps)
    times = steps.column("t").to_numpy()
    perception = Perception(
        profile, detector, (episode.meta.width, episode.meta.height), episode.meta.fps / cfg.every
    )
    recorder = PerceptionRecorder()
    for batch in _batches(_decode(episode, cfg.every, 2 * cfg.batch), cfg.batch):
        start = time.perf_counter()
        detections = detector.detect_batch([frame for _, frame in batch])
        detect_ms = (time.perf_counter() - start) * 1000.0 / len(batch)
        for (index, frame), dets in zip(batch, detections):
            cursor = (float(mouse_x[index]), float(mouse_y[index]))
            step = perception.step(frame, cursor, bool(clicks[index]), float(times[index]), dets)
            step.ms["detect"] = detect_ms
            recorder.add(index, step)
    if not recorder.obs:
        raise PerceptionError(f"{episode_dir}: no frames to perceive")
    size = (episode.meta.width, episode.meta.height)
    meta = perception_meta(episode.name, profile, detector, size, episode.meta.fps, cfg.every)
    recorder.write(Path(episode_dir) / FOLDER, meta, perception.summarizer.flush())
    return {**meta, "frames": len(recorder.obs)}


def run(cfg: PerceiveConfig) -> list[dict]:
    from tqdm import tqdm

    episodes = find_episodes(cfg.episodes)
    if not episodes:
        raise PerceptionError(f"{cfg.episodes}: no episodes found")
    detectors: dict[str, Detector] = {}
    results = []
    for path in tqdm(episodes, desc="perceive", unit="episode"):
        game = cfg.profile or open_episode(path).meta.game
        profile = load_profile(game)
        if game not in detectors:
            detectors[game] = load_detector(cfg.detector, profile, cfg.runtime, cfg.threads)
        detector = detectors[game]
        if not cfg.overwrite and is_current(path, detector, cfg.every):
            log.info("%s: perception is current, skipped", path.name)
            continue
        start = time.perf_counter()
        meta = perceive_episode(path, detector, profile, cfg)
        seconds = time.perf_counter() - start
        log.info(
            "%s: %d frames in %.1f s (%.1f fps)", path.name, meta["frames"], seconds, meta["frames"] / seconds
        )
        results.append(meta)
    return results


def main(argv: list[str] | None = None) -> int:
    cfg = tyro.cli(PerceiveConfig, args=argv, prog="pilot perceive", description=__doc__)
    run(cfg)
    return 0
