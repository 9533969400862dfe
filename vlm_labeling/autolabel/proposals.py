"""Object proposals of `pilot autolabel`: what moves against the background once the camera's motion is
compensated, and salient static blobs; the profile's HUD panels are masked. Never reads ground truth.

    frame ──V = max(R, G, B)──▶ V - coarse median background > contrast ──▶ salient ──┐
    previous V ──phase correlation (HUD, blobs masked)──▶ camera shift ──▶ |V - shifted previous V| > motion
                                                                    ──▶ moving ──────┤
    salient ∪ moving ──close──▶ connected components ──size / fill filters──▶ Proposals (xyxy, moving, conf)

Why this shape: docs/notes/vlm_labeling.md, "vlm_labeling/autolabel/".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from validation import check_float, check_int, fail

MOVING_CONF = 0.9  # tracker confidence of a proposal that moves against the background
STATIC_CONF = 0.7  # ... of a salient blob that does not (still above ByteTrack's new-track threshold)


@dataclass
class ProposalConfig:
    """How proposals are found; thresholds are grey levels of V = max(R, G, B) (0..255)."""

    contrast: float = 40.0  # grey levels above the local background that make a pixel salient
    motion: float = 40.0  # grey-level change, after camera compensation, that makes a pixel moving
    moving_share: float = 0.15  # fraction of a blob's pixels that must be moving for it to count as moving
    min_size: int = 6  # px, a proposal's smaller side at least this (stars and specks are smaller)
    max_size: float = 0.5  # fraction of the frame's short side, a proposal's larger side at most this
    min_fill: float = 0.12  # fraction of its box a blob must cover (thin lines and rings are not objects)
    max_aspect: float = 4.0  # longer side / shorter side at most this (beams and edges are longer)
    # px; each size is one pass that first cuts away structures thinner than it (beams, rings, text
    # strokes): 1 keeps them (a portal is made of rings), 3 frees a ship from the beam that hits it
    opens: tuple[int, ...] = (1, 3)
    dedup_iou: float = 0.7  # a proposal of a later pass this close to an earlier one is the same one
    close: int = 1  # px, gaps this wide inside a sprite are bridged before blobs are cut out (1 = none)
    background_scale: int = 8  # the background is the median of the frame shrunk this many times

    def __post_init__(self) -> None:
        for name in ("contrast", "motion"):
            check_float(self, name, 1.0, 255.0)
        for name in ("moving_share", "max_size", "min_fill"):
            check_float(self, name, 0.0, 1.0, low_open=name == "max_size")
        check_float(self, "max_aspect", 1.0)
        check_int(self, "min_size", 1)
        if not self.opens or not all(isinstance(k, int) and 1 <= k <= 31 for k in self.opens):
            raise fail(self, "opens", "one or more ints in 1..31", self.opens)
        check_float(self, "dedup_iou", 0.0, 1.0)
        check_int(self, "close", 1, 31)
        check_int(self, "background_scale", 1, 64)


@dataclass
class Proposals:
    """The proposals of one frame."""

    xyxy: np.ndarray  # (N, 4) float32 px
    moving: np.ndarray  # (N,) bool, moves against the background
    conf: np.ndarray  # (N,) float32, the tracker's confidence (MOVING_CONF or STATIC_CONF)

    @classmethod
    def empty(cls) -> Proposals:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, bool), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.conf)


def valid_mask(panels: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """(H, W) bool, False under the HUD panels ((x1, y1, x2, y2) fractions of the frame)."""
    valid = np.ones((height, width), bool)
    for x1, y1, x2, y2 in panels:
        valid[int(y1 * height) : int(np.ceil(y2 * height)), int(x1 * width) : int(np.ceil(x2 * width))] = (
            False
        )
    return valid


def brightness(frame: np.ndarray) -> np.ndarray:
    """V = max(R, G, B) as float32 (H, W): coloured sprites on dark space stand out in every channel."""
    return frame.max(axis=2).astype(np.float32)


def background(v: np.ndarray, scale: int) -> np.ndarray:
    """A coarse background: the median of `v` shrunk `scale` times, grown back (H, W) float32."""
    h, w = v.shape
    small = cv2.resize(v, (max(1, w // scale), max(1, h // scale)), interpolation=cv2.INTER_AREA)
    small = cv2.medianBlur(np.clip(small, 0, 255).astype(np.uint8), 5)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def camera_shift(prev: np.ndarray, cur: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """(dx, dy) px that moves `prev` onto `cur`: phase correlation of two high-passed, masked frames."""
    (dx, dy), _response = cv2.phaseCorrelate(prev, cur, window)
    return float(dx), float(dy)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`image` translated by (dx, dy) px (bilinear, edges replicated)."""
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class ProposalFinder:
    """Proposals over the frames of one episode, in order; `step(frame)` once per frame, `reset()` between
    episodes. Holds the previous frame (for motion) as its only state."""

    def __init__(self, cfg: ProposalConfig, width: int, height: int, panels: Sequence[Sequence[float]] = ()):
        self.cfg = cfg
        self.width, self.height = width, height
        self.valid = valid_mask(panels, width, height)
        # phase correlation must not see the panels' borders (static edges pull the shift to zero)
        eroded = cv2.erode(self.valid.astype(np.uint8), np.ones((7, 7), np.uint8))
        self._corr_weight = eroded.astype(np.float32)
        self._window = cv2.createHanningWindow((width, height), cv2.CV_32F)
        self._opens = [cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)) for k in cfg.opens]
        self._close = np.ones((cfg.close, cfg.close), np.uint8)
        self.reset()

    def reset(self) -> None:
        self._prev: tuple[np.ndarray, np.ndarray] | None = None  # (V, high-passed V for the shift)
        self.shift = (0.0, 0.0)
        self.changed = 0.0  # fraction of valid pixels that changed since the previous frame

    def step(self, frame: np.ndarray) -> Proposals:
        """Proposals of `frame` (RGB uint8 (H, W, 3))."""
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame: expected {self.height}x{self.width}, got {frame.shape[0]}x{frame.shape[1]}"
            )
        v = brightness(frame)
        contrast = v - background(v, self.cfg.background_scale)
        salient = (contrast > self.cfg.contrast) & self.valid
        moving = np.zeros_like(salient)
        hp = (v - cv2.GaussianBlur(v, (0, 0), 3)) * self._corr_weight * ~self._blobs(salient)
        if self._prev is not None:
            prev_v, prev_hp = self._prev
            self.shift = camera_shift(prev_hp, hp, self._window)
            diff = np.abs(v - shifted(prev_v, *self.shift))
            # where the object is now, not where it was: the ghost it leaves looks like background
            moving = (diff > self.cfg.motion) & (np.abs(contrast) > self.cfg.contrast / 2) & self.valid
            self.changed = float((np.abs(v - prev_v) > 2.0)[self.valid].mean())
        self._prev = (v, hp)
        return self._components(salient, moving)

    def _blobs(self, salient: np.ndarray) -> np.ndarray:
        """Salient blobs of proposal size, grown a little: masked out of the camera-shift estimate."""
        count, labels, stats, _ = cv2.connectedComponentsWithStats(salient.astype(np.uint8), connectivity=8)
        big = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= self.cfg.min_size**2 // 2) + 1
        mask = np.isin(labels, big).astype(np.uint8)
        return cv2.dilate(mask, np.ones((7, 7), np.uint8)).astype(bool)

    def _components(self, salient: np.ndarray, moving: np.ndarray) -> Proposals:
        joined = (salient | moving).astype(np.uint8)
        if self.cfg.close > 1:
            joined = cv2.morphologyEx(joined, cv2.MORPH_CLOSE, self._close)
        found = []
        for size, kernel in zip(self.cfg.opens, self._opens):
            mask = cv2.morphologyEx(joined, cv2.MORPH_OPEN, kernel) if size > 1 else joined
            found.append(self._blob_boxes(mask, moving))
        xyxy, is_moving = _dedup(found, self.cfg.dedup_iou)
        conf = np.where(is_moving, MOVING_CONF, STATIC_CONF).astype(np.float32)
        return Proposals(xyxy, is_moving, conf)

    def _blob_boxes(self, mask: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(xyxy (N, 4) float32, moving (N,) bool) of the blobs of `mask` that pass the shape filters."""
        cfg = self.cfg
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        x, y, w, h, area = (stats[1:, i] for i in range(5))
        big, small = np.maximum(w, h), np.minimum(w, h)
        keep = (small >= cfg.min_size) & (big <= cfg.max_size * min(self.width, self.height))
        keep &= (area >= cfg.min_fill * w * h) & (big <= cfg.max_aspect * np.maximum(small, 1))
        i = np.flatnonzero(keep)
        moving_px = np.bincount(labels[moving], minlength=count)[i + 1]
        xyxy = np.stack([x[i], y[i], x[i] + w[i], y[i] + h[i]], axis=1).astype(np.float32)
        return xyxy.reshape(-1, 4), moving_px >= cfg.moving_share * area[i]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def _dedup(found: list[tuple[np.ndarray, np.ndarray]], max_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """The passes' boxes in order, each dropped when it overlaps a kept one by more than `max_iou`."""
    boxes, moving = found[0]
    for more, more_moving in found[1:]:
        if len(boxes) and len(more):
            fresh = box_iou(more, boxes).max(1) <= max_iou
            more, more_moving = more[fresh], more_moving[fresh]
        boxes, moving = np.concatenate([boxes, more]), np.concatenate([moving, more_moving])
    return boxes.astype(np.float32).reshape(-1, 4), moving.astype(bool)
