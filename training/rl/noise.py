"""Ground-truth objects -> Detections as a trained detector would give them: the perception-noise model.

    info["objects"] ──HUD-masked panels dropped──▶ misses ──▶ class flips ──▶ box jitter ──▶ confidences
        ──▶ + spurious boxes (Poisson per frame) ──▶ Detections (frame px, profile class index)

Every draw comes from the generator passed in, so an episode's noise is fixed by its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.perception.detector import Detections
from training.rl.config import NoiseConfig

MIN_CONF = 0.1  # the profile's detector threshold: nothing below reaches the tracker


def _centre_in(box: Sequence[float], rects: Sequence[tuple[float, float, float, float]], size: Any) -> bool:
    cx, cy = (box[0] + box[2]) / 2 / size[0], (box[1] + box[3]) / 2 / size[1]
    return any(x1 <= cx <= x2 and y1 <= cy <= y2 for x1, y1, x2, y2 in rects)


def truth_boxes(
    objects: list[dict], classes: list[str], size: tuple[int, int], masked: Sequence[tuple] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """The objects' boxes (N, 4) float32 px and class indices (N,) int64, without those whose centre lies in
    a `masked` panel (fractions x1, y1, x2, y2), which the detector blanks before it looks."""
    index = {name: i for i, name in enumerate(classes)}
    kept = [o for o in objects if o["cls"] in index and not _centre_in(o["box"], masked, size)]
    boxes = np.array([o["box"] for o in kept], np.float32).reshape(-1, 4)
    return boxes, np.array([index[o["cls"]] for o in kept], np.int64)


class PerceptionNoise:
    """Turns ground-truth boxes into noisy Detections (NoiseConfig; `NoiseConfig.off()` = the truth)."""

    def __init__(self, cfg: NoiseConfig, n_classes: int, size: tuple[int, int]) -> None:
        self.cfg, self.n_classes, self.size = cfg, n_classes, size

    def __call__(self, boxes: np.ndarray, cls: np.ndarray, rng: np.random.Generator) -> Detections:
        """boxes (N, 4) px, cls (N,) -> Detections with misses, flips, jitter and spurious boxes."""
        c = self.cfg
        keep = rng.random(len(cls)) >= c.miss_rate  # (N,)
        boxes, cls = boxes[keep], cls[keep].copy()
        flip = rng.random(len(cls)) < c.class_flip
        cls[flip] = (cls[flip] + rng.integers(1, max(2, self.n_classes), flip.sum())) % self.n_classes
        boxes = self._jitter(boxes, rng)
        conf = np.clip(rng.normal(c.conf_mean, c.conf_std, len(cls)), MIN_CONF, 1.0)
        fake_boxes, fake_cls, fake_conf = self._spurious(boxes, rng)
        return Detections(
            np.concatenate([boxes, fake_boxes]).astype(np.float32),
            np.concatenate([conf, fake_conf]).astype(np.float32),
            np.concatenate([cls, fake_cls]).astype(np.int64),
        )

    def _jitter(self, boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Centre and size moved by N(0, jitter) times the box's size; clipped to the frame."""
        if not len(boxes):
            return boxes.astype(np.float32)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
        noise = rng.normal(0.0, self.cfg.jitter, (len(boxes), 4))
        cx, cy = cx + noise[:, 0] * w, cy + noise[:, 1] * h
        w, h = w * np.exp(noise[:, 2]), h * np.exp(noise[:, 3])
        out = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        out[:, 0::2] = out[:, 0::2].clip(0, self.size[0])
        out[:, 1::2] = out[:, 1::2].clip(0, self.size[1])
        return out.astype(np.float32)

    def _spurious(self, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Poisson(false_per_frame) boxes of a random class at random places, sized like a small ship."""
        n = int(rng.poisson(self.cfg.false_per_frame))
        side = rng.uniform(0.015, 0.04, n) * self.size[1] * 2  # px: 22..58 at 720 rows
        x, y = rng.uniform(0, self.size[0], n), rng.uniform(0, self.size[1], n)
        fake = np.stack([x - side / 2, y - side / 2, x + side / 2, y + side / 2], axis=1).reshape(-1, 4)
        cls = rng.integers(0, self.n_classes, n).astype(np.int64)
        conf = rng.uniform(MIN_CONF, self.cfg.false_conf_max, n)
        return fake.astype(np.float32), cls, conf
