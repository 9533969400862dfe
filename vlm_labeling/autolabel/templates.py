"""Template matching with the named sprites: recovers instances of a named class that the proposals missed
(a ship merged with the beam that hits it, one too short-lived to be tracked, one under another's text).

    crops of each named cluster ──farthest-point sampling on appearance──▶ sprite bank (per_class sprites)
    frame ──matchTemplate (normalised correlation) per sprite──▶ peaks >= threshold, not on a label yet
        ──non-maximum suppression──▶ recovered boxes (cls, conf = correlation)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from validation import check_float, check_int
from vlm_labeling.autolabel.proposals import box_iou


@dataclass
class TemplateConfig:
    """The sprite bank and the matching."""

    enabled: bool = True  # recover missed instances by template matching
    per_class: int = 4  # sprites per class (turning sprites need several; each costs a match per frame)
    threshold: float = (
        0.85  # normalised correlation a match needs (high: a false label costs more than a miss)
    )
    overlap: float = 0.3  # a match overlapping an existing label by more than this IoU is not new
    edge: int = 2  # px, sprites are cut only from boxes at least this far inside the frame

    def __post_init__(self) -> None:
        check_int(self, "per_class", 1)
        check_float(self, "threshold", 0.0, 1.0)
        check_float(self, "overlap", 0.0, 1.0)
        check_int(self, "edge", 0)


@dataclass
class Sprite:
    cls: str
    pixels: np.ndarray  # (h, w, 3) RGB uint8


def farthest_points(features: np.ndarray, count: int) -> list[int]:
    """Indices of `count` rows spread over `features`: the medoid first, then each the farthest from those
    picked so far."""
    if not len(features):
        return []
    centre = features.mean(0)
    picked = [int(np.argmin(((features - centre) ** 2).sum(1)))]
    dist = ((features - features[picked[0]]) ** 2).sum(1)
    while len(picked) < min(count, len(features)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        picked.append(nxt)
        dist = np.minimum(dist, ((features - features[nxt]) ** 2).sum(1))
    return picked


def inside(box: np.ndarray, width: int, height: int, edge: int) -> bool:
    return bool(box[0] >= edge and box[1] >= edge and box[2] <= width - edge and box[3] <= height - edge)


def match_frame(
    frame: np.ndarray, sprites: list[Sprite], existing: np.ndarray, cfg: TemplateConfig, valid: np.ndarray
) -> list[tuple[str, np.ndarray, float]]:
    """New (cls, xyxy, score) matches of the sprites in `frame`, away from the `existing` (N, 4) boxes and
    with their centre on a valid (non-HUD) pixel."""
    found: list[tuple[str, np.ndarray, float]] = []
    h, w = frame.shape[:2]
    for sprite in sprites:
        th, tw = sprite.pixels.shape[:2]
        if th > h or tw > w or min(th, tw) < 3:
            continue
        score = cv2.matchTemplate(frame, sprite.pixels, cv2.TM_CCOEFF_NORMED)
        score = np.nan_to_num(score, nan=0.0, posinf=0.0, neginf=0.0)
        peaks = (score >= cfg.threshold) & (score >= cv2.dilate(score, np.ones((5, 5), np.uint8)))
        for y, x in zip(*np.nonzero(peaks)):
            if valid[min(h - 1, y + th // 2), min(w - 1, x + tw // 2)]:
                found.append((sprite.cls, np.array([x, y, x + tw, y + th], np.float32), float(score[y, x])))
    return _suppress(found, existing, cfg.overlap)


def _suppress(found: list, existing: np.ndarray, overlap: float) -> list:
    kept: list = []
    boxes = existing.reshape(-1, 4).astype(np.float32)
    for cls, box, score in sorted(found, key=lambda f: -f[2]):
        if len(boxes) and box_iou(box[None], boxes).max() > overlap:
            continue
        kept.append((cls, box, score))
        boxes = np.concatenate([boxes, box[None]])
    return kept
