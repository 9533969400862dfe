"""Multi-object tracking: ultralytics' ByteTrack, configured from the game profile, with persistent track ids.

    Detections ──drop "ignore" classes──▶ BYTETracker.update (Kalman + two-stage Hungarian matching)
        ──▶ Tracks: id, box, conf, class (by vote), visible/lost, age, velocity

Recordings and live play build their Tracker from the same profile section (`tracker:`); durations are in
seconds. What this adds around BYTETracker, and why: docs/notes/perception.md, section
bot/perception/tracker.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bot.perception.detector import Detections, ultralytics_offline
from bot.profile import GameProfile, TrackerSpec

VELOCITY_TAU_S = 0.2  # s, time constant of the velocity average (about 6 frames at 30 fps)


@dataclass
class Tracks:
    """The tracks of one frame, one row each, in ascending id order."""

    id: np.ndarray  # (M,) int64 track id, unique within a Tracker's lifetime (until reset)
    xyxy: np.ndarray  # (M, 4) float32 px: the matched detection's box, or a lost track's predicted box
    conf: np.ndarray  # (M,) float32 confidence of the last matched detection
    cls: np.ndarray  # (M,) int64 profile class index (vote over the track's detections)
    visible: np.ndarray  # (M,) bool, matched to a detection in this frame
    age_s: np.ndarray  # (M,) float32 s since the track started
    lost_s: np.ndarray  # (M,) float32 s since it was last matched (0 when visible)
    velocity: np.ndarray  # (M, 2) float32 px/s of the box centre

    @classmethod
    def empty(cls) -> Tracks:
        z = np.zeros(0, np.float32)
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, 4), np.float32),
            z,
            np.zeros(0, np.int64),
            np.zeros(0, bool),
            z,
            z,
            np.zeros((0, 2), np.float32),
        )

    def __len__(self) -> int:
        return len(self.id)


@dataclass
class _TrackState:
    first_t: float
    last_t: float
    centre: np.ndarray  # (2,) px at last_t
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    votes: dict[int, float] = field(default_factory=dict)

    def vote(self, cls: int, conf: float) -> int:
        self.votes[cls] = self.votes.get(cls, 0.0) + conf
        return max(self.votes, key=self.votes.__getitem__)


def _byte_args(spec: TrackerSpec, fps: float):
    ultralytics_offline()
    from ultralytics.utils import IterableSimpleNamespace

    return IterableSimpleNamespace(
        tracker_type="bytetrack",
        track_high_thresh=spec.track_high_thresh,
        track_low_thresh=spec.track_low_thresh,
        new_track_thresh=spec.new_track_thresh,
        track_buffer=max(1, round(spec.track_buffer_s * fps)),
        match_thresh=spec.match_thresh,
        fuse_score=spec.fuse_score,
    )


class Tracker:
    """ByteTrack over a stream of Detections; `update(dets, t)` once per frame, `reset()` between episodes."""

    def __init__(
        self, spec: TrackerSpec, fps: float, ignore_classes: list[int] | tuple[int, ...] = ()
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps: expected > 0, got {fps!r}")
        self.spec, self.fps = spec, float(fps)
        self.ignore = np.asarray(sorted(ignore_classes), np.int64)
        self.keep_lost_frames = round(spec.keep_lost_s * fps)
        args = _byte_args(spec, fps)
        from ultralytics.trackers.byte_tracker import BYTETracker

        self._byte = BYTETracker(args)
        self._states: dict[int, _TrackState] = {}
        self._frames = 0

    @classmethod
    def from_profile(cls, profile: GameProfile, fps: float | None = None) -> Tracker:
        """The tracker a profile prescribes; `fps` is the rate frames arrive at (default: the profile's)."""
        return cls(profile.tracker, fps or profile.fps, profile.class_ids("ignore"))

    def reset(self) -> None:
        self._byte.reset()
        self._states.clear()
        self._frames = 0

    def update(self, dets: Detections, t: float | None = None) -> Tracks:
        """Feed one frame's detections; `t` is the frame's time in seconds (default: frame count / fps)."""
        t = self._frames / self.fps if t is None else float(t)
        self._frames += 1
        if len(self.ignore) and len(dets):
            dets = dets[~np.isin(dets.cls, self.ignore)]
        out = self._byte.update(_ByteInput(dets))
        ids, boxes, conf, cls = self._matched(out, dets, t)
        self._prune(t)  # first: a stall of seconds in few frames retires a state ByteTrack still counts lost
        lost = self._recently_lost(t)
        return self._assemble(ids, boxes, conf, cls, lost, t)

    def _matched(self, out: np.ndarray, dets: Detections, t: float) -> tuple[list, list, list, list]:
        ids, boxes, conf, cls = [], [], [], []
        for _x1, _y1, _x2, _y2, track_id, score, _cls, det_idx in out.reshape(-1, 8):
            tid = int(track_id)
            box = dets.xyxy[int(det_idx)]  # this frame's measurement; ByteTrack's box is the smoothed state
            state = self._observe(tid, box, t)
            ids.append(tid)
            boxes.append(box)
            conf.append(float(score))
            cls.append(state.vote(int(dets.cls[int(det_idx)]), float(score)))
        return ids, boxes, conf, cls

    def _observe(self, tid: int, box: np.ndarray, t: float) -> _TrackState:
        centre = (box[:2] + box[2:]) / 2.0
        state = self._states.get(tid)
        if state is None:
            state = self._states[tid] = _TrackState(first_t=t, last_t=t, centre=centre)
            return state
        dt = t - state.last_t
        if dt > 0:
            alpha = 1.0 - math.exp(-dt / VELOCITY_TAU_S)
            state.velocity += alpha * ((centre - state.centre) / dt - state.velocity)
        state.last_t, state.centre = t, centre
        return state

    def _recently_lost(self, t: float) -> list:
        frame_id = self._byte.frame_id
        return [
            trk
            for trk in self._byte.lost_stracks
            if frame_id - trk.end_frame <= self.keep_lost_frames and trk.track_id in self._states
        ]

    def _prune(self, t: float) -> None:
        horizon = self.spec.track_buffer_s + 1.0
        for tid in [tid for tid, s in self._states.items() if t - s.last_t > horizon]:
            del self._states[tid]

    def _assemble(self, ids, boxes, conf, cls, lost, t: float) -> Tracks:
        visible = [True] * len(ids)
        for trk in lost:
            state = self._states[trk.track_id]
            ids.append(trk.track_id)
            boxes.append(np.asarray(trk.xyxy, np.float32))
            conf.append(float(trk.score))
            cls.append(max(state.votes, key=state.votes.__getitem__))
            visible.append(False)
        if not ids:
            return Tracks.empty()
        order = np.argsort(ids, kind="stable")
        states = [self._states[i] for i in ids]
        tracks = Tracks(
            id=np.asarray(ids, np.int64),
            xyxy=np.stack(boxes).astype(np.float32),
            conf=np.asarray(conf, np.float32),
            cls=np.asarray(cls, np.int64),
            visible=np.asarray(visible, bool),
            age_s=np.asarray([t - s.first_t for s in states], np.float32),
            lost_s=np.asarray([t - s.last_t for s in states], np.float32),
            velocity=np.stack([s.velocity for s in states]).astype(np.float32),
        )
        return Tracks(*(getattr(tracks, f)[order] for f in Tracks.__dataclass_fields__))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def id_switches(
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    frame_size: tuple[int, int] | None = None,
    min_iou: float = 0.5,
) -> dict[str, float]:
    """CLEAR-MOT identity switches of tracks against ground-truth identities.

    `frames`: per frame (gt_ids (G,), gt_xyxy (G, 4), track_ids (M,), track_xyxy (M, 4)). Each frame, ground
    truth and tracks are matched one to one (Hungarian on IoU >= min_iou); a switch is a ground-truth object
    matched to a different track id than the last time it was matched. Returns switches, matched pairs,
    ground-truth object-frames and recall (matched / ground truth). With `frame_size`, also
    `switches_in_view`: the switches of objects that were in the previous frame too and whose box does not
    touch the frame edge, i.e. not caused by an object leaving the screen or sliding in or out at its edge.
    """
    import lap

    last: dict[int, int] = {}
    previous: set[int] = set()
    switches = in_view = matched = total = 0
    for gt_ids, gt_xyxy, trk_ids, trk_xyxy in frames:
        total += len(gt_ids)
        present = {int(i) for i in gt_ids}
        if len(gt_ids) and len(trk_ids):
            cost = 1.0 - _iou(np.asarray(gt_xyxy, np.float64), np.asarray(trk_xyxy, np.float64))
            _, rows, _ = lap.lapjv(cost, extend_cost=True, cost_limit=1.0 - min_iou)
            for g, m in enumerate(rows):
                if m < 0:
                    continue
                gid, tid = int(gt_ids[g]), int(trk_ids[m])
                matched += 1
                if gid in last and last[gid] != tid:
                    switches += 1
                    in_view += gid in previous and frame_size is not None and _inside(gt_xyxy[g], frame_size)
                last[gid] = tid
        previous = present
    result = {"switches": switches, "matched": matched, "gt": total, "recall": matched / max(total, 1)}
    if frame_size is not None:
        result["switches_in_view"] = in_view
    return result


def _inside(box: np.ndarray, frame_size: tuple[int, int], margin: float = 1.0) -> bool:
    return bool(
        box[0] > margin
        and box[1] > margin
        and box[2] < frame_size[0] - margin
        and box[3] < frame_size[1] - margin
    )


class _ByteInput:
    """Detections as BYTETracker reads them: conf, cls, xywh (numpy), len() and boolean-mask indexing."""

    def __init__(self, dets: Detections) -> None:
        self.dets = dets
        self.conf = dets.conf
        self.cls = dets.cls.astype(np.float32)
        self.xywh = dets.xywh

    def __len__(self) -> int:
        return len(self.dets)

    def __getitem__(self, index) -> _ByteInput:
        return _ByteInput(self.dets[index])
