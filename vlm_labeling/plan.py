"""Which frames of an episode `pilot label` asks about, and the `LabelRequest`s built from them.

Key frames are the last perceived frame of each `--every` interval of episode time (with the default 1 s,
the frames whose label the Strategist learns), each with K earlier context frames. The HUD values and the
tracked objects at the key frame go into the prompt as text; the video is decoded once, in order.
Details: docs/notes/vlm_labeling.md, "vlm_labeling/plan.py".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from bot.errors import PerceptionError, PilotError
from bot.recordings.episode import Episode, open_episode
from bot.recordings.perceived import FOLDER as PERCEPTION_FOLDER
from bot.recordings.perceived import PerceivedEpisode, load_perception
from vlm_labeling.label_config import LabelConfig, LabelRunError, interval_s
from vlm_labeling.records import LabelRequest, TrackedObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyFrame:
    """One question: the key frame's index in the video and its context frames (oldest first)."""

    frame: int
    context: tuple[int, ...]
    row: int  # perception row of the key frame (-1 without perception)


@dataclass
class EpisodeInputs:
    """What one episode gives the prompts: its key frames, and the HUD and tracks at each of them."""

    episode: Episode
    keys: list[KeyFrame]
    perception: PerceivedEpisode | None
    tracks: list[list[dict[str, Any]]] | None  # tracks.parquet rows, per perception row
    hud_rows: list[dict[str, Any]] | None  # tracks.parquet HUD columns (perceived) or steps columns
    class_names: list[str]


def key_frames(
    frames: np.ndarray, times: np.ndarray, every_s: float, n_context: int, step_frames: int
) -> list[KeyFrame]:
    """The last of `frames` in each `every_s` interval of `times`, with `n_context` earlier video frames."""
    if len(frames) == 0:
        return []
    bucket = np.floor(times / every_s + 1e-9).astype(np.int64)
    last = np.flatnonzero(np.append(bucket[1:] != bucket[:-1], True))  # rows ending a bucket
    plan = []
    for row in last:
        key = int(frames[row])
        context = sorted(
            {key - j * step_frames for j in range(1, n_context + 1) if key - j * step_frames >= 0}
        )
        plan.append(KeyFrame(key, tuple(context), int(row)))
    return plan


def plan_episode(path: Path, cfg: LabelConfig) -> EpisodeInputs:
    """Key frames (from the perceived frames when `pilot perceive` ran, else every video frame) and inputs."""
    episode = open_episode(path)
    fps = float(episode.meta.fps)
    step_frames = max(1, round(interval_s(cfg.context_step, fps) * fps))
    perception, tracks, hud = _perception_inputs(path)
    if perception is not None:
        frames, times = perception["frame"].astype(np.int64), perception["t"].astype(np.float64)
    else:
        steps = episode.steps()
        frames = steps.column("frame").to_numpy().astype(np.int64)
        times = steps.column("t").to_numpy().astype(np.float64)
        hud = _steps_hud(episode)
    keys = key_frames(frames, times, interval_s(cfg.every, fps), cfg.context_frames, step_frames)
    if cfg.limit:
        keys = keys[: cfg.limit]
    return EpisodeInputs(episode, keys, perception, tracks, hud, _class_names(episode, perception))


def _perception_inputs(path: Path) -> tuple[PerceivedEpisode | None, list | None, list | None]:
    if not (path / PERCEPTION_FOLDER).is_dir():
        log.warning(
            "%s: not perceived: no tracks in the prompt, HUD from the steps if recorded (run pilot perceive)",
            path.name,
        )
        return None, None, None
    perception = load_perception(path)
    table = pq.read_table(path / PERCEPTION_FOLDER / "tracks.parquet")
    if table.num_rows != len(perception):
        raise PerceptionError(
            f"{path / PERCEPTION_FOLDER}: tracks.parquet and obs.npz disagree; re-run perception"
        )
    hud_columns = [c for c in ("hp", "shield", "map_x", "map_y") if c in table.column_names]
    return perception, table.column("tracks").to_pylist(), table.select(hud_columns).to_pylist()


def _steps_hud(episode: Episode) -> list[dict[str, Any]] | None:
    steps = episode.steps()
    columns = [c for c in ("hp", "shield", "credits") if c in steps.column_names]
    return steps.select(columns).to_pylist() if columns else None


def _class_names(episode: Episode, perception: PerceivedEpisode | None) -> list[str]:
    from bot.profile import load_profile

    game = (perception.meta.get("game") if perception is not None else None) or episode.meta.game
    try:
        return load_profile(game).class_names
    except (PilotError, OSError, ValueError):
        return list(episode.meta.classes)


HUD_NAMES = {"hp": "hp_frac", "shield": "shield_frac", "map_x": "minimap_x", "map_y": "minimap_y"}


def hud_values(row: dict[str, Any] | None) -> dict[str, float | int]:
    """HUD text values: hp/shield as fractions, minimap position; unread (NaN / null) values left out."""
    out: dict[str, float | int] = {}
    for name, value in (row or {}).items():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        out[HUD_NAMES.get(name, name)] = value
    return out


def objects_at(inputs: EpisodeInputs, row: int) -> list[TrackedObject]:
    """Tracks at perception row `row` that are in the Observation's object set (the Tactician's choices)."""
    if inputs.perception is None or inputs.tracks is None:
        return []
    p = inputs.perception
    in_set = set(p["track_id"][row][p["mask"][row]].tolist())
    objects = []
    for track in inputs.tracks[row]:
        if track["id"] not in in_set or not track.get("visible", True):
            continue
        cls = int(track["cls"])
        name = inputs.class_names[cls] if 0 <= cls < len(inputs.class_names) else f"class{cls}"
        objects.append(
            TrackedObject(int(track["id"]), name, (track["x1"], track["y1"], track["x2"], track["y2"]))
        )
    return objects


def requests(inputs: EpisodeInputs) -> Iterator[LabelRequest]:
    """The episode's LabelRequests, decoding the video once in order and holding only frames still needed."""
    keys = inputs.keys
    if not keys:
        return
    wanted = {f for k in keys for f in (*k.context, k.frame)}
    held: dict[int, np.ndarray] = {}
    position = 0
    for index, rgb in inputs.episode.frames(stop=keys[-1].frame + 1):
        if index in wanted:
            held[index] = np.ascontiguousarray(rgb[..., ::-1])  # the client encodes BGR (OpenCV order)
        while position < len(keys) and keys[position].frame == index:
            yield _request(inputs, keys[position], held)
            position += 1
            # contexts grow with their key frame, so the next key frame's oldest context is the floor
            floor = (
                min((*keys[position].context, keys[position].frame)) if position < len(keys) else index + 1
            )
            for old in [f for f in held if f < floor]:
                del held[old]
    if position < len(keys):
        raise LabelRunError(
            f"{inputs.episode.dir}: the video ended before key frame {keys[position].frame} "
            f"({len(keys) - position} key frames left)"
        )


def _request(inputs: EpisodeInputs, key: KeyFrame, held: dict[int, np.ndarray]) -> LabelRequest:
    if inputs.hud_rows is None:
        hud_row = None
    else:
        hud_row = inputs.hud_rows[key.row] if inputs.perception is not None else inputs.hud_rows[key.frame]
    return LabelRequest(
        key_frame=held[key.frame],
        context_frames=[held[f] for f in key.context if f in held],
        hud=hud_values(hud_row),
        objects=objects_at(inputs, key.row) if key.row >= 0 else [],
        request_id=request_id(inputs.episode.name, key.frame),
    )


def request_id(episode: str, frame: int) -> str:
    return f"{episode}/{frame:06d}"
