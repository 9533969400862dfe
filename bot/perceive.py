"""Perception end to end, and `pilot perceive`: run it over recorded episodes and store the Observations.

    frame ──Detector──▶ Detections ──Tracker──▶ Tracks ─┬──────────────┐
      ├────CueReader (frame + Tracks) ──▶ cues ─────────┘              │
      └────HudReader──▶ HudReading ────────────────────────────────────┼──StateEncoder──▶ Observation
                        cursor, click (steps / live) ──────────────────┘      └──Summarizer──▶ summary

`Perception` is that chain for one stream of frames, and it is the one the live loop uses too: running it
over recordings gives training data with exactly what the live bot will see, detector misses and false
positives included. `pilot perceive` decodes each episode on a background thread, detects in batches of
`--batch` frames (a dynamic-batch ONNX model runs them as one call), then tracks, reads the HUD and encodes
frame by frame (those are sequential by nature).

Stored next to each episode, written to a temporary folder and renamed, so a crash never leaves half a result:

    <episode>/perception/
        perception.json obs_spec (name, version, layout), detector id and settings, profile, tracker settings,
                        frame size, every, frames, per-stage milliseconds
        obs.npz         frame (T,) int32 episode frame index; t (T,) float64 s;
                        objects (T, N_MAX, F_OBJ) float32; mask (T, N_MAX) bool; track_id (T, N_MAX) int64;
                        cls (T, N_MAX) int64; glob (T, F_GLOB) float32;
                        summary (S, F_SUM) float32; summary_end (S,) int64 row of each second's last frame
        tracks.parquet  one row per perceived frame: frame, t, tracks list<struct<id, cls, conf, x1, y1, x2,
                        y2, visible>>, detections (count), hp, shield, map_x, map_y (the raw perception,
                        for analysis and for re-encoding without re-running the detector)

`load_perception(episode)` reads it back and refuses another obs_spec (PerceptionError).

Examples:
    pilot perceive --episodes data/recordings/arena --detector data/detectors/arena
    pilot perceive --episodes data/recordings/arena/expert-000003 --detector model.onnx --every 2
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tyro

from bot.cues import CueReader
from bot.detector import Detections, Detector, DetectorConfig
from bot.episode import Episode, find_episodes, open_episode
from bot.errors import PerceptionError
from bot.hud import HudReader, HudReading
from bot.profile import GameProfile, load_profile
from bot.state import OBS_SPEC, Observation, StateEncoder, Summarizer, summarize
from bot.tracker import Tracker, Tracks

log = logging.getLogger(__name__)

FOLDER = "perception"
# not meta.json: find_episodes() takes every folder holding a meta.json for an episode
META_NAME = "perception.json"
STAGES = ("detect", "track", "hud", "encode")
TRACK_STRUCT = pa.struct(
    [
        ("id", pa.int32()),
        ("cls", pa.int16()),
        ("conf", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("x2", pa.float32()),
        ("y2", pa.float32()),
        ("visible", pa.bool_()),
    ]
)
TRACKS_SCHEMA = pa.schema(
    [
        ("frame", pa.int32()),
        ("t", pa.float64()),
        ("tracks", pa.list_(TRACK_STRUCT)),
        ("detections", pa.int32()),
        ("hp", pa.float32()),
        ("shield", pa.float32()),
        ("map_x", pa.float32()),
        ("map_y", pa.float32()),
    ]
)


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
    cues: np.ndarray | None = None  # (len(tracks), 3) enemy screen cues per track row (bot/cues.py)


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


# ------------------------------------------------------------------------------------------------ storage


@dataclass
class PerceivedEpisode:
    """Stored perception of one episode (see the module docstring for the arrays)."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["frame"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def observation(self, row: int, offset_s: float = 0.0) -> Observation:
        a = self.arrays
        names = ("objects", "mask", "track_id", "cls", "glob")
        return Observation(*(a[name][row] for name in names), float(a["t"][row]) - offset_s)

    def summaries(self, offset_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(summary (S, F_SUM), summary_end (S,)) of the stored Observations with every second starting
        `offset_s` s later: the live Summarizer with the class threats of the profile that perceived them, so
        offset 0 gives the stored arrays. Other offsets are the same play cut into seconds elsewhere (the
        phase a live run starts at is arbitrary), which the Strategist trains on (`StrategistRun.phases`)."""
        return summarize([self.observation(r, offset_s) for r in range(len(self))], self.class_threats)

    @cached_property
    def class_threats(self) -> tuple[float, ...]:
        """Class threats of the profile file that perceived these frames if it is still there, else of the
        game's shipped profile (read once, however many cuts are summarised)."""
        path = str(self.meta.get("profile", ""))
        ref = path if path and Path(path).is_file() else str(self.meta.get("game", ""))
        return load_profile(ref).class_threats


def perception_info(episode_dir: Path | str) -> dict[str, Any]:
    """perception.json of `<episode>/perception/` without reading the arrays (the folder is written whole, by
    a rename); PerceptionError if it is missing, unreadable or of another obs_spec."""
    folder = Path(episode_dir) / FOLDER
    meta_path = folder / META_NAME
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise PerceptionError(f"{meta_path}: missing (run `pilot perceive` on this episode)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PerceptionError(f"{meta_path}: unreadable ({exc})") from None
    OBS_SPEC.check(meta.get("obs_spec"), str(meta_path))
    if not (folder / "obs.npz").is_file():
        raise PerceptionError(f"{folder / 'obs.npz'}: missing")
    return meta


def load_perception(episode_dir: Path | str) -> PerceivedEpisode:
    """Read `<episode>/perception/`; PerceptionError if it is missing, corrupt or of another obs_spec."""
    meta = perception_info(episode_dir)
    npz_path = Path(episode_dir) / FOLDER / "obs.npz"
    try:
        with np.load(npz_path) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise PerceptionError(f"{npz_path}: unreadable ({exc})") from None
    expected = ("frame", "t", "objects", "mask", "track_id", "cls", "glob", "summary", "summary_end")
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise PerceptionError(f"{npz_path}: missing arrays {missing}")
    return PerceivedEpisode(meta, arrays)


def _track_rows(tracks: Tracks) -> list[dict[str, Any]]:
    return [
        {"id": int(i), "cls": int(c), "conf": float(s), "visible": bool(v)}
        | dict(zip(("x1", "y1", "x2", "y2"), b.tolist()))
        for i, c, s, b, v in zip(tracks.id, tracks.cls, tracks.conf, tracks.xyxy, tracks.visible)
    ]


class PerceptionRecorder:
    """Collects one episode's perception (`add` every step) and writes it atomically (`write`)."""

    def __init__(self) -> None:
        self.obs: list[Observation] = []
        self.frames: list[int] = []
        self.rows: list[dict[str, Any]] = []
        self.summaries: list[np.ndarray] = []
        self.summary_end: list[int] = []
        self.ms: dict[str, list[float]] = defaultdict(list)

    def add(self, index: int, step: PerceptionStep) -> None:
        if step.summary is not None:
            self.summaries.append(step.summary)
            self.summary_end.append(len(self.obs) - 1)
        self.obs.append(step.obs)
        self.frames.append(index)
        minimap = step.hud.minimap or (float("nan"), float("nan"))
        row = {
            "frame": index,
            "t": step.obs.t,
            "tracks": _track_rows(step.tracks),
            "detections": len(step.detections),
        }
        row |= {
            "hp": step.hud.bar("hp"),
            "shield": step.hud.bar("shield"),
            "map_x": minimap[0],
            "map_y": minimap[1],
        }
        self.rows.append(row)
        for stage, value in step.ms.items():
            self.ms[stage].append(value)

    def write(self, folder: Path, meta: dict[str, Any], last_summary: np.ndarray | None) -> None:
        if last_summary is not None:
            self.summaries.append(last_summary)
            self.summary_end.append(len(self.obs) - 1)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.savez_compressed(tmp / "obs.npz", **self._arrays())
        pq.write_table(pa.Table.from_pylist(self.rows, schema=TRACKS_SCHEMA), tmp / "tracks.parquet")
        meta = {
            **meta,
            "frames": len(self.obs),
            "ms_per_frame": {k: float(np.mean(v)) for k, v in self.ms.items()},
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    def _arrays(self) -> dict[str, np.ndarray]:
        n_sum = len(OBS_SPEC.summary_features)
        return {
            "frame": np.asarray(self.frames, np.int32),
            "t": np.asarray([o.t for o in self.obs], np.float64),
            "objects": np.stack([o.objects for o in self.obs]),
            "mask": np.stack([o.mask for o in self.obs]),
            "track_id": np.stack([o.track_id for o in self.obs]),
            "cls": np.stack([o.cls for o in self.obs]),
            "glob": np.stack([o.glob for o in self.obs]),
            "summary": np.stack(self.summaries) if self.summaries else np.zeros((0, n_sum), np.float32),
            "summary_end": np.asarray(self.summary_end, np.int64),
        }


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
