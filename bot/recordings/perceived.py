"""Perception stored beside an episode, written to a temporary folder and renamed (a crash leaves no half
result).

    <episode>/perception/
        perception.json obs_spec, detector id and settings, profile, tracker settings, frame size, every,
                        frames, per-stage milliseconds
        obs.npz         frame (T,) int32; t (T,) float64 s; objects (T, N_MAX, F_OBJ) float32;
                        mask (T, N_MAX) bool; track_id (T, N_MAX) int64; cls (T, N_MAX) int64;
                        glob (T, F_GLOB) float32; summary (S, F_SUM) float32; summary_end (S,) int64
        tracks.parquet  one row per perceived frame: the raw tracks, detection count and HUD values

`load_perception(episode)` reads it back and refuses another obs_spec (PerceptionError).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bot.errors import PerceptionError
from bot.perception.pipeline import PerceptionStep
from bot.perception.state import OBS_SPEC, Observation
from bot.perception.summary import summarize
from bot.perception.tracker import Tracks
from bot.profile import load_profile

log = logging.getLogger(__name__)

FOLDER = "perception"
# not meta.json: find_episodes() takes every folder holding a meta.json for an episode
META_NAME = "perception.json"
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

    def replay(self) -> Iterator[PerceptionStep]:
        """The PerceptionSteps live perception produced for this episode, as far as a policy reads them
        (obs and summary; no tracks, HUD or detections): a second's summary arrives on the first frame of
        the next second (the final, flushed one never does)."""
        arrives = {int(end) + 1: k for k, end in enumerate(self.arrays["summary_end"])}
        for row in range(len(self)):
            k = arrives.get(row)
            summary = None if k is None else self.arrays["summary"][k]
            yield PerceptionStep(self.observation(row), None, None, None, summary)  # type: ignore[arg-type]

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
