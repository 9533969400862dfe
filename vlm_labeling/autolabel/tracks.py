"""Tracks of proposals: ByteTrack (bot.perception.tracker) across the frames of an episode, so that only
proposals that persist count, with each track's box size smoothed over its neighbouring frames.

    frames ──ProposalFinder──▶ Proposals ──Tracker.update──▶ matched (track id, box, moving)
        ──keep tracks matched >= min_seconds──▶ box size: a quantile over ±smooth_frames──▶ tracks table

The tracks table (one row per matched track and frame): frame, track, x1, y1, x2, y2 (px), moving.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bot.perception.detector import Detections
from bot.perception.tracker import Tracker
from bot.profile import TrackerSpec
from bot.recordings.episode import Episode
from validation import check_float, check_int
from vlm_labeling.autolabel.proposals import ProposalConfig, ProposalFinder

log = logging.getLogger(__name__)

TRACKS_SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("track", pa.int32(), nullable=False),  # unique within the episode
        pa.field("x1", pa.float32(), nullable=False),  # px, smoothed box
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
        pa.field("moving", pa.bool_(), nullable=False),  # this frame's proposal moved against the background
    ]
)


@dataclass
class TrackConfig:
    """Which proposals persist, and how boxes are smoothed."""

    min_seconds: float = 0.3  # s a track must be matched in (sparks, blinks and flickers are shorter)
    smooth_frames: int = 15  # box size from this many frames either side (0 = raw boxes)
    # ... their widths' and heights' quantile: a turning sprite's box is the envelope of its poses (one size,
    # as the game draws it), a flicker smaller or larger does not count
    size_quantile: float = 0.8
    match_iou: float = 0.1  # IoU with a track's predicted box that continues it (small fast sprites)
    lost_seconds: float = 0.5  # s a lost track waits to be found again under its id
    split_ratio: float = 1.5  # a track is cut where its box area jumps by this factor (a ring, a beam joins)
    still_fraction: float = 0.002  # an episode whose frames change on fewer valid pixels has no motion

    def __post_init__(self) -> None:
        check_float(self, "min_seconds", 0.0)
        check_int(self, "smooth_frames", 0)
        check_float(self, "size_quantile", 0.0, 1.0)
        check_float(self, "match_iou", 0.0, 1.0, low_open=True)
        check_float(self, "lost_seconds", 0.0, 60.0)
        check_float(self, "split_ratio", 1.0, low_open=True)
        check_float(self, "still_fraction", 0.0, 1.0)

    def tracker_spec(self) -> TrackerSpec:
        # ByteTrack's cost is 1 - IoU (x conf); proposals are all confident, low ones are never made
        return TrackerSpec(
            track_high_thresh=0.5,
            track_low_thresh=0.1,
            new_track_thresh=0.6,
            match_thresh=1.0 - self.match_iou,
            fuse_score=False,
            track_buffer_s=self.lost_seconds,
            keep_lost_s=0.0,
        )


def track_episode(
    episode: Episode, proposals: ProposalConfig, cfg: TrackConfig, panels: list
) -> tuple[pa.Table, dict[str, Any]]:
    """(tracks table, stats) of one episode: one decoding pass, proposals and tracking together."""
    from tqdm import tqdm

    meta = episode.meta
    finder = ProposalFinder(proposals, meta.width, meta.height, panels)
    tracker = Tracker(cfg.tracker_spec(), meta.fps)
    rows: list[tuple[int, int, np.ndarray, bool]] = []
    changed, count = 0, 0
    frames = tqdm(
        episode.frames(), total=episode.num_frames, desc=f"propose {episode.name}", unit="frame", leave=False
    )
    for index, frame in frames:
        props = finder.step(frame)
        changed += finder.changed >= cfg.still_fraction
        count += 1
        dets = Detections(props.xyxy, props.conf, np.zeros(len(props), np.int64))
        tracks = tracker.update(dets, index / meta.fps)
        for tid, box in zip(tracks.id[tracks.visible], tracks.xyxy[tracks.visible]):
            same = np.flatnonzero(np.abs(props.xyxy - box).max(1) < 1e-3)
            rows.append((index, int(tid), box, bool(props.moving[same[0]]) if len(same) else False))
    stats = {"frames": count, "changed_frames": int(changed), "raw_tracks": len({r[1] for r in rows})}
    need = max(1, round(cfg.min_seconds * meta.fps))
    table = _persistent(rows, need, cfg, (meta.width, meta.height))
    stats["tracks"] = len(set(table.column("track").to_pylist()))
    stats["rows"] = table.num_rows
    return table, stats


def _persistent(rows: list, min_frames: int, cfg: TrackConfig, size: tuple[int, int]) -> pa.Table:
    """The rows of tracks matched in at least `min_frames` frames (after cutting tracks at size jumps), box
    sizes smoothed."""
    if not rows:
        return TRACKS_SCHEMA.empty_table()
    frame = np.array([r[0] for r in rows], np.int32)
    track = np.array([r[1] for r in rows], np.int32)
    boxes = np.stack([r[2] for r in rows]).astype(np.float32)
    moving = np.array([r[3] for r in rows], bool)
    order = np.lexsort((frame, track))
    frame, track, boxes, moving = frame[order], track[order], boxes[order], moving[order]
    track = split_at_jumps(track, boxes, cfg.split_ratio)
    ids, counts = np.unique(track, return_counts=True)
    keep = np.isin(track, ids[counts >= min_frames])
    frame, track, boxes, moving = frame[keep], track[keep], boxes[keep], moving[keep]
    if cfg.smooth_frames:
        boxes = smooth_sizes(track, boxes, cfg.smooth_frames, cfg.size_quantile)
        # a track sliding out of view keeps its size, not its box
        np.clip(boxes, 0, [*size, *size], out=boxes)
    columns = [frame, track, *boxes.T, moving]
    return pa.Table.from_arrays([pa.array(c) for c in columns], schema=TRACKS_SCHEMA).sort_by(
        [("frame", "ascending"), ("track", "ascending")]
    )


def split_at_jumps(track: np.ndarray, boxes: np.ndarray, ratio: float) -> np.ndarray:
    """New track ids (rows sorted by track, then frame): a track is cut wherever its box area changes by more
    than `ratio` from one matched frame to the next, so a ship and the ship with its selection ring or the
    beam that hits it are tracked apart (they look different and are clustered apart)."""
    area = np.log(np.maximum((boxes[:, 2:] - boxes[:, :2]).prod(1), 1.0))
    new = np.r_[True, (track[1:] != track[:-1]) | (np.abs(np.diff(area)) > np.log(ratio))]
    return (np.cumsum(new) - 1).astype(np.int32)


def smooth_sizes(track: np.ndarray, boxes: np.ndarray, half: int, quantile: float) -> np.ndarray:
    """Each box keeps its centre and takes the `quantile` of the widths and heights of its track's boxes
    within `half` rows either side (rows sorted by track, then frame): a ship that turns keeps one size."""
    out = boxes.copy()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    size = boxes[:, 2:] - boxes[:, :2]
    starts = np.flatnonzero(np.r_[True, track[1:] != track[:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], len(track)]):
        for i in range(start, stop):
            lo, hi = max(start, i - half), min(stop, i + half + 1)
            med = np.quantile(size[lo:hi], quantile, axis=0)
            out[i, :2], out[i, 2:] = centre[i] - med / 2.0, centre[i] + med / 2.0
    return out


def settings(proposals: ProposalConfig, cfg: TrackConfig, panels: list) -> dict[str, Any]:
    return {"proposals": asdict(proposals), "tracks": asdict(cfg), "panels": [list(p) for p in panels]}


def episode_dir(work: Path, episode: Episode) -> Path:
    return work / "episodes" / episode.name
