"""Reads what a game draws around an enemy that the detector's box does not tell: is it attacking the
player (its name turns red in the Arena, as in DarkOrbit), is it the player's selected target, is the player
firing at it (the selection ring's colour). Colours and sizes come from the profile's `cues` (CueSpec).

Per enemy track (other roles get zeros), three numbers in 0..1: aggressive, selected, attacking (their
sampling and why they matter: docs/notes/perception.md, section bot/perception/cues.py).
"""

from __future__ import annotations

import numpy as np

from bot.perception.hud import colour_mask
from bot.perception.tracker import Tracks
from bot.profile import CueSpec, GameProfile

CUE_NAMES: tuple[str, ...] = ("aggressive", "selected", "attacking")
RING_ANGLES = np.deg2rad(np.r_[np.linspace(-45, 45, 10), np.linspace(135, 225, 10)])  # (20,) rad
RING_SPAN = np.linspace(0.8, 1.1, 9)  # radii sampled per angle, as fractions of the expected ring radius


class CueReader:
    """`read(frame, tracks)` -> (M, 3) float32 cues (CUE_NAMES) per track; zeros without a profile `cues`."""

    def __init__(self, profile: GameProfile) -> None:
        self.spec: CueSpec | None = profile.cues
        self._enemy = np.array([c.role == "enemy" for c in profile.classes], bool)

    def read(self, frame: np.ndarray, tracks: Tracks) -> np.ndarray:
        """frame (H, W, 3) RGB uint8, tracks of that frame -> (M, 3) float32."""
        cues = np.zeros((len(tracks), len(CUE_NAMES)), np.float32)
        if self.spec is None or not len(tracks):
            return cues
        rows = np.flatnonzero(self._enemy[tracks.cls])
        if not len(rows):
            return cues
        boxes = tracks.xyxy[rows].astype(np.float32)  # (E, 4) px
        cues[rows, 0] = [self._aggressive(frame, box) for box in boxes]
        cues[rows, 1:] = self._ring(frame, boxes)
        return cues

    def _aggressive(self, frame: np.ndarray, box: np.ndarray) -> float:
        """Share of the name band's text pixels that have the aggressive colour (0 when no text is found)."""
        s, (h, w) = self.spec, frame.shape[:2]
        reach = s.name_reach * (box[2] - box[0])
        x1, x2 = int(max(0, box[0] - reach)), int(min(w, box[2] + reach + 1))
        y1, y2 = int(max(0, box[3])), int(min(h, box[3] + s.name_band * h + 1))
        if x2 <= x1 or y2 <= y1:
            return 0.0
        band = frame[y1:y2, x1:x2]
        angry = int(colour_mask(band, s.aggressive, s.tolerance).sum())
        calm = int(colour_mask(band, s.neutral, s.tolerance).sum())
        return angry / (angry + calm) if angry + calm else 0.0

    def _ring(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(E, 2) shares of ring sample points in the selected / attacking colour, all boxes at once."""
        s, (h, w) = self.spec, frame.shape[:2]
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0  # (E, 2)
        half = (boxes[:, 2:] - boxes[:, :2]).mean(axis=1) / 2.0  # (E,)
        radius = s.ring_scale * half + s.ring_pad * h  # (E,)
        r = radius[:, None, None] * RING_SPAN[None, None, :]  # (E, 1, S)
        xs = np.rint(centre[:, 0, None, None] + r * np.cos(RING_ANGLES)[None, :, None]).astype(np.int64)
        ys = np.rint(centre[:, 1, None, None] + r * np.sin(RING_ANGLES)[None, :, None]).astype(np.int64)
        inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)  # (E, A, S)
        pixels = frame[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]  # (E, A, S, 3)
        out = np.zeros((len(boxes), 2), np.float32)
        for j, colour in enumerate((s.selected, s.attacking)):
            hit = (colour_mask(pixels, colour, s.tolerance) & inside).any(axis=-1)  # (E, A)
            out[:, j] = hit.mean(axis=-1)
        return out
